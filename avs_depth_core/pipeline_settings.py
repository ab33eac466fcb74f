"""What a DepthPipeline (avs_depth_core.pipeline) is built from, without torch: avs_depth_ros.params takes the depth
node's defaults from here, and audio drivers (echo_node, the room loop) import the parameter tables without loading
torch (5 s of echo_node's start at CPU load 10 on 2 cores)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

RELATIVE_KINDS = ("avsnet_rgb", "monodepth2", "torchscript")
OUT_OF_RANGE = ("clip", "nan")
BACKENDS = ("torch", "onnxruntime")  # avs_depth_core.backends


@dataclass(frozen=True)
class PipelineSettings:
    """What a DepthPipeline is built from. The depth node's parameters of the same names set them (avs_depth_ros.params
    takes its defaults from here); checkpoints "" = the bundled defaults."""

    avsnet_checkpoint: str = ""  # AVS-Net checkpoint (safetensors + JSON)
    relative_model: str = "avsnet_rgb"  # one of RELATIVE_KINDS
    relative_checkpoint: str = ""  # checkpoint of the relative model ("" = the bundled one for relative_model)
    device: str = "auto"  # avs_depth_core.device policy
    half: bool = False  # fp16 autocast on CUDA
    scale_method: str = "median"  # scaling.ScalingConfig.method (pixelwise: the rescale head below)
    rescale_checkpoint: str = ""  # scale_method pixelwise: EchoRescaleHead checkpoint ("" = the bundled one)
    scale_smoothing_alpha: float = 1.0  # weight of a new scale in log-space smoothing; 1 = none (the paper)
    max_scale_hold_s: float = 1.0  # without a fresh echo, keep the last scale this long, then NaN depth
    out_of_range: str = "clip"  # one of OUT_OF_RANGE
    flip_tta: bool = False  # AVS-Net also on the mirrored scene (image flipped, ears swapped); geometric mean of the two
    backend: str = "torch"  # one of BACKENDS
    onnx_providers: str = "auto"  # onnxruntime execution providers (avs_depth_core.backends.resolve_providers)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PipelineSettings:
        """The settings named in `params` (e.g. a node's parameter values); others keep their defaults."""
        return cls(**{f.name: params[f.name] for f in fields(cls) if f.name in params})
