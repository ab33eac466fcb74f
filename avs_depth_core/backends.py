"""Inference backends for the live pipeline: the torch modules, or their ONNX export run by ONNX Runtime.

    backend: torch        AVSNet / RelativeDepthModel as trained (CPU or CUDA, fp16 autocast on CUDA)
    backend: onnxruntime  the same networks exported by avs_depth_core.export, on execution providers TensorRT / CUDA /
                          CPU as this onnxruntime build has them; a .safetensors checkpoint is exported once into a cache
                          (AVS_DEPTH_CACHE, default ~/.cache/avs_depth/onnx), a .onnx path is used as it is

Both backends take and give torch tensors and share the pre- and post-processing code: AVSNetInputs (image resize, echo
features, input checks) for AVS-Net and RelativeDepthModel (resize, output checks, disparity to depth) for the relative
model. ONNX Runtime uses torch's intra-op thread count (the depth node's torch_threads) unless told otherwise.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from avs_depth_core.models.avsnet import AVSNetConfig, AVSNetInputs
from avs_depth_core.ort_session import PROVIDERS, import_onnxruntime, onnx_session
from avs_depth_core.pipeline_settings import BACKENDS
from avs_depth_core.relative import RelativeDepthModel
from avs_depth_core.scaling import disparity_to_depth

log = logging.getLogger(__name__)

CACHE_ENV = "AVS_DEPTH_CACHE"


def resolve_providers(device: str, requested: str = "auto", available: Sequence[str] | None = None, half: bool = False,
                      warn: Callable[[str], None] = log.warning) -> list[str | tuple[str, dict[str, Any]]]:
    """ONNX Runtime execution providers, best first, CPU always last.

    requested "auto": TensorRT then CUDA (those this onnxruntime build has) for a cuda device, the CPU alone otherwise;
    or a comma list of tensorrt, cuda, cpu. A requested provider this build lacks is skipped with a warning. half turns
    on TensorRT's fp16 engines (CUDA and CPU run the fp32 graph).
    """
    if available is None:
        available = import_onnxruntime().get_available_providers()
    text = device.strip().lower()
    index = int(text.partition(":")[2] or 0) if text.startswith("cuda") and text.partition(":")[2].isdigit() else 0
    if requested.strip().lower() == "auto":
        names = ["tensorrt", "cuda"] if text.startswith("cuda") or text == "auto" else []
        wanted = [n for n in names if PROVIDERS[n] in available]
        if text.startswith("cuda") and not wanted:
            warn(f"device {device!r}: this onnxruntime has no CUDA or TensorRT provider (install onnxruntime-gpu); "
                 "running on the CPU")
    else:
        wanted = [n.strip().lower() for n in requested.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in PROVIDERS]
        if unknown:
            raise ValueError(f"onnx_providers {requested!r}: unknown {unknown}; expected auto or a comma list of "
                             f"{', '.join(PROVIDERS)}")
        for name in [n for n in wanted if PROVIDERS[n] not in available]:
            warn(f"onnx_providers: {PROVIDERS[name]} is not in this onnxruntime build ({', '.join(available)}); skipped")
        wanted = [n for n in wanted if PROVIDERS[n] in available]
    providers: list[str | tuple[str, dict[str, Any]]] = []
    for name in wanted:
        if name == "tensorrt":
            providers.append((PROVIDERS[name], {"device_id": index, "trt_fp16_enable": bool(half),
                                                "trt_engine_cache_enable": True,
                                                "trt_engine_cache_path": str(cache_dir() / "tensorrt")}))
        elif name == "cuda":
            providers.append((PROVIDERS[name], {"device_id": index}))
    providers.append(PROVIDERS["cpu"])
    return providers


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "avs_depth").expanduser()


def onnx_model_for(checkpoint: str | Path, warn: Callable[[str], None] = log.warning) -> Path:
    """`checkpoint` itself when it is a .onnx file, else its export in the cache (made now when missing)."""
    from avs_depth_core.checkpoint import read_checkpoint_json
    from avs_depth_core.export import FORMAT_VERSION, export_onnx

    checkpoint = Path(checkpoint)
    if checkpoint.suffix == ".onnx":
        if not checkpoint.is_file():
            raise FileNotFoundError(f"{checkpoint}: ONNX model not found")
        return checkpoint
    sha = read_checkpoint_json(checkpoint)["weights_sha256"]
    key = hashlib.sha256(f"{sha} {torch.__version__} {FORMAT_VERSION}".encode()).hexdigest()[:20]
    target = cache_dir() / "onnx" / f"{checkpoint.name.removesuffix('.safetensors')}-{key}.onnx"
    if not target.is_file():
        warn(f"exporting {checkpoint} to ONNX for backend onnxruntime (once): {target}")
        export_onnx(checkpoint, target)
    return target


class OnnxAVSNet(AVSNetInputs):
    """AVS-Net from an `avs-depth export` file: __call__(rgb, echo) -> {"metric_depth", "rel_depth"} like AVSNet's forward,
    with the same input checks and input preparation (AVSNetInputs); tensors come back on the input's device."""

    def __init__(self, path: str | Path, providers: Sequence[Any] | None = None, threads: int | None = None,
                 batch: int | None = None) -> None:
        from avs_depth_core.export import read_metadata

        self.path = Path(path)
        metadata = read_metadata(self.path)
        if metadata["kind"] not in ("avsnet", "avsnet_rgb"):
            raise ValueError(f"{path}: an exported {metadata['kind']!r} model, expected AVS-Net")
        self.cfg = AVSNetConfig.from_dict(metadata["config"], where=f"{path} avs_depth.config")
        self.session = onnx_session(self.path, providers, threads, batch)
        self.providers = self.session.get_providers()

    def __repr__(self) -> str:
        return f"OnnxAVSNet({self.path.name!r}, providers={self.providers})"

    def __call__(self, rgb: torch.Tensor, echo: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        self.check_inputs(rgb, echo)
        feeds = {"rgb": rgb.detach().float().cpu().numpy()}
        if echo is not None:
            feeds["echo"] = echo.detach().float().cpu().numpy()
        metric, rel = self.session.run(["metric_depth", "rel_depth"], feeds)
        return {"metric_depth": torch.from_numpy(metric).to(rgb.device), "rel_depth": torch.from_numpy(rel).to(rgb.device)}


def onnx_relative(path: str | Path, providers: Sequence[Any] | None = None, threads: int | None = None,
                  device: str | torch.device = "cpu", batch: int | None = None) -> RelativeDepthModel:
    """An exported Only-RGB AVS-Net (metric depth) or Monodepth2 (disparity) as a RelativeDepthModel; batch as
    onnx_session's."""
    from avs_depth_core.export import read_metadata

    path = Path(path)
    metadata = read_metadata(path)
    kind = metadata["kind"]
    if kind == "avsnet":
        raise ValueError(f"{path}: an RGB-Echoes AVS-Net; the relative model must be Only-RGB AVS-Net or Monodepth2")
    session = onnx_session(path, providers, threads, batch)
    output = "disparity" if kind == "monodepth2" else "metric_depth"

    def run_session(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run([output], {"rgb": x.detach().cpu().numpy()})[0]).to(x.device)

    name = f"{kind} {path.name} (onnxruntime)"
    if kind == "monodepth2":
        conversion = metadata["depth_conversion"]
        config = metadata["config"]
        if config.get("depth_units") == "metres":  # echo-supervised: its depth is metric (train/echo_supervision.py)
            def run_metric(x: torch.Tensor) -> torch.Tensor:
                return disparity_to_depth(run_session(x), conversion["disparity_kind"], conversion["min_depth"],
                                          conversion["max_depth"])

            return RelativeDepthModel(run_metric, "metric_depth", name=f"{name} (metres)",
                                      input_size=(config["height"], config["width"]), device=device)
        return RelativeDepthModel(run_session, "disparity", name=name, input_size=(config["height"], config["width"]),
                                  disparity_kind=conversion["disparity_kind"], min_depth=conversion["min_depth"],
                                  max_depth=conversion["max_depth"], device=device)
    return RelativeDepthModel(run_session, "metric_depth", name=name, input_size=tuple(metadata["config"]["image_size"]),
                              device=device)


def load_avsnet(checkpoint: str | Path, backend: str, device: torch.device, onnx_providers: str = "auto",
                half: bool = False, warn: Callable[[str], None] = log.warning) -> Any:
    """AVS-Net for the pipeline: AVSNet (torch) or OnnxAVSNet (onnxruntime)."""
    if backend == "torch":
        from avs_depth_core.models.avsnet import AVSNet

        return AVSNet.from_checkpoint(checkpoint, device)
    check_backend(backend)
    providers = resolve_providers(str(device) if device.type == "cuda" else "cpu", onnx_providers, half=half, warn=warn)
    return OnnxAVSNet(onnx_model_for(checkpoint, warn), providers, batch=1)  # the pipeline runs one frame at a time


def load_relative(kind: str, checkpoint: str | Path, backend: str, device: torch.device, onnx_providers: str = "auto",
                  half: bool = False, warn: Callable[[str], None] = log.warning) -> RelativeDepthModel:
    """The relative model for the pipeline: avsnet_rgb or monodepth2 on either backend, torchscript on torch only."""
    if backend == "torch":
        if kind == "torchscript":
            return RelativeDepthModel.from_torchscript(checkpoint, "depth", device=device)
        return getattr(RelativeDepthModel, kind)(checkpoint, device=device)
    check_backend(backend)
    if kind == "torchscript":
        raise ValueError("relative_model 'torchscript' runs on backend torch only; export the network to ONNX for "
                         "backend onnxruntime")
    providers = resolve_providers(str(device) if device.type == "cuda" else "cpu", onnx_providers, half=half, warn=warn)
    model = onnx_relative(onnx_model_for(checkpoint, warn), providers, device=device, batch=1)
    expected = "monodepth2" if kind == "monodepth2" else "avsnet_rgb"
    if not model.name.startswith(expected):
        raise ValueError(f"relative_checkpoint {checkpoint}: holds {model.name.split()[0]}, relative_model is {kind!r}")
    return model


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
