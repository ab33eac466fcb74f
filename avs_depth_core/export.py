"""AVS-Net (RGB-Echoes, Only-RGB) and Monodepth2 checkpoints to ONNX, for ONNX Runtime (the depth node's
`backend: onnxruntime`), TensorRT and other runtimes (command line: avs_depth_core.cli.export).

    avs-depth export --checkpoint runs/avs_bv2/checkpoints/best --format onnx --out avsnet_bv2.onnx
    avs-depth export --checkpoint runs/md2_bv1/checkpoints/best --format onnx --out monodepth2_bv1.onnx

Graph inputs and outputs, batch dimension dynamic ("batch"):
  AVS-Net     rgb (B,3,H,W) float32 in [0,1] [+ echo (B,2,He,We) float32 magnitude STFT, RGB-Echoes only]
              -> metric_depth (B,1,H,W) metres, rel_depth (B,1,H,W) MiDaS relative inverse depth
  Monodepth2  rgb (B,3,H,W) float32 in [0,1] -> disparity (B,1,H,W) sigmoid disparity of scale 0 (depth = disp_to_depth
              with the stored min/max depth, as avs_depth_core.relative does)
The input normalisation is inside the graph. The echo feature step is not (an STFT with reflect padding and an antialiased
resize do not map onto ONNX operators that every runtime has): it runs on the host, with
avs_depth_core.audio.features.echo_features and the settings stored in the metadata key avs_depth.echo_features, the
same code the torch path and training use.

Metadata (ModelProto.metadata_props, JSON values): avs_depth.kind, avs_depth.config (the checkpoint's config),
avs_depth.inputs / avs_depth.outputs (names, shapes, meaning), avs_depth.normalisation, avs_depth.echo_features,
avs_depth.depth_conversion (Monodepth2), avs_depth.source (checkpoint file and weights sha256), avs_depth.exporter.
`read_metadata(path)` returns them decoded.

The export is checked before it is written: ONNX Runtime runs the graph on a fixed input and its outputs must equal
torch's within --tolerance (metres for AVS-Net, disparity for Monodepth2).
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from avs_depth_core import files
from avs_depth_core.checkpoint import checkpoint_paths, read_checkpoint_json

FORMATS = ("onnx",)
EXPORTERS = ("torchscript", "dynamo")
METADATA_PREFIX = "avs_depth."
FORMAT_VERSION = 1
DEFAULT_OPSET = 18


class AVSNetGraph(nn.Module):
    """AVS-Net's network as exported: (rgb[, echo]) -> (metric_depth, rel_depth), without the Python-side input checks."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, rgb: torch.Tensor, echo: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model.forward_unchecked(rgb, echo)
        return out["metric_depth"], out["rel_depth"]


class Monodepth2Graph(nn.Module):
    """Monodepth2's DepthNet as exported: rgb -> scale-0 sigmoid disparity."""

    def __init__(self, depth_net: nn.Module) -> None:
        super().__init__()
        self.depth_net = depth_net

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.depth_net(rgb)[("disp", 0)]


@dataclass
class ExportPlan:
    """What to trace and what to write beside it."""

    graph: nn.Module
    inputs: dict[str, torch.Tensor]  # name -> example (batch 2, so a batch of 1 is never baked in)
    outputs: list[str]
    metadata: dict[str, Any]


@dataclass
class ExportReport:
    path: Path
    kind: str
    max_abs_diff: dict[str, float]  # per output, ONNX Runtime vs torch on the check input
    seconds: float
    size_bytes: int


def avsnet_plan(model: nn.Module) -> ExportPlan:
    """Export plan of an AVSNet (on the CPU, in eval mode)."""
    cfg = model.cfg
    h, w = cfg.image_size
    generator = torch.Generator().manual_seed(0)
    inputs = {"rgb": torch.rand(2, 3, h, w, generator=generator)}
    shapes = [{"name": "rgb", "shape": ["batch", 3, h, w], "dtype": "float32",
               "meaning": "RGB image in [0, 1], resized to the network size (normalisation is inside the graph)"}]
    metadata: dict[str, Any] = {"kind": "avsnet" if cfg.use_echo else "avsnet_rgb", "use_echo": cfg.use_echo}
    if cfg.use_echo:
        eh, ew = cfg.echo_size
        ch = cfg.echo_channels
        inputs["echo"] = torch.rand(2, ch, eh, ew, generator=generator)
        meaning = "magnitude STFT of the binaural echo (left, right)" + (
            ", then the range profile of each ear packed row-major (range_bins bins)" if cfg.echo_range_profile else "")
        shapes.append({"name": "echo", "shape": ["batch", ch, eh, ew], "dtype": "float32",
                       "meaning": f"{meaning}, see avs_depth.echo_features"})
        metadata["echo_features"] = {
            "function": "avs_depth_core.audio.features.echo_features", "sample_rate": cfg.sample_rate,
            "window": "emission_offset .. emission_offset + echo_samples (the round trip to max_depth)",
            "echo_samples": cfg.echo_samples, "max_depth": cfg.max_depth, "speed_of_sound": cfg.speed_of_sound,
            "n_fft": cfg.n_fft, "win_length": cfg.win_length, "hop_length": cfg.hop_length, "window_fn": "hann (periodic)",
            "center": True, "pad_mode": "reflect", "magnitude_power": 1.0, "log1p": cfg.stft_log,
            "resize": {"size": [eh, ew], "mode": "bilinear", "align_corners": False, "antialias": True}}
        if cfg.echo_range_profile:
            metadata["echo_features"]["range_profile"] = {
                "function": "avs_depth_core.audio.range_profile.range_profile", "bins": cfg.range_bins,
                "spacing": cfg.range_spacing, "min_range": cfg.range_min,
                "log1p_over_noise_floor": cfg.range_log, "chirp": dataclasses.asdict(cfg.chirp),
                "packing": "avs_depth_core.audio.features.pack_range_profile"}
    metadata.update(
        config=cfg.to_dict(), inputs=shapes,
        outputs=[{"name": "metric_depth", "shape": ["batch", 1, h, w], "meaning": "metric depth, metres"},
                 {"name": "rel_depth", "shape": ["batch", 1, h, w], "meaning": "MiDaS relative inverse depth"}],
        normalisation={"mean": list(cfg.norm_mean), "std": list(cfg.norm_std), "applied": "inside the graph"},
        depth_range=[cfg.min_depth, cfg.max_depth])
    return ExportPlan(AVSNetGraph(model).eval(), inputs, ["metric_depth", "rel_depth"], metadata)


def monodepth2_plan(depth_net: nn.Module, cfg: Any) -> ExportPlan:
    """Export plan of a Monodepth2 DepthNet with its Monodepth2Config."""
    from avs_depth_core.models.monodepth2 import INPUT_MEAN, INPUT_STD

    if cfg.echo_input != "none":
        raise ValueError(f"model.echo_input {cfg.echo_input!r}: exporting a Monodepth2 DepthNet that takes the echo is not "
                         f"supported (the exported graph has the rgb input only); run it with backend torch")
    h, w = cfg.height, cfg.width
    inputs = {"rgb": torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0))}
    metadata = {
        "kind": "monodepth2", "config": cfg.to_dict(),
        "inputs": [{"name": "rgb", "shape": ["batch", 3, h, w], "dtype": "float32",
                    "meaning": "RGB image in [0, 1], resized to the network size (normalisation is inside the graph)"}],
        "outputs": [{"name": "disparity", "shape": ["batch", 1, h, w], "meaning": "sigmoid disparity, scale 0"}],
        "normalisation": {"mean": [INPUT_MEAN] * 3, "std": [INPUT_STD] * 3, "applied": "inside the graph"},
        "depth_conversion": {"output_kind": "disparity", "disparity_kind": "monodepth2", "min_depth": cfg.min_depth,
                             "max_depth": cfg.max_depth,
                             "formula": "depth = 1 / (1/max_depth + (1/min_depth - 1/max_depth) * disparity)"},
        "depth_range": [cfg.min_depth, cfg.max_depth]}
    return ExportPlan(Monodepth2Graph(depth_net).eval(), inputs, ["disparity"], metadata)


def export_plan(checkpoint: str | Path) -> ExportPlan:
    """The graph, example inputs and metadata for a checkpoint, by the kind its JSON records."""
    checkpoint = Path(checkpoint)
    data = read_checkpoint_json(checkpoint)
    kind = data.get("kind")
    if kind == "avsnet":
        from avs_depth_core.models.avsnet import AVSNet

        plan = avsnet_plan(AVSNet.from_checkpoint(checkpoint, "cpu"))
    elif kind == "monodepth2":
        from avs_depth_core.models.monodepth2 import load_monodepth2

        loaded = load_monodepth2(checkpoint, "cpu")
        plan = monodepth2_plan(loaded.depth_net, loaded.config)
    else:
        raise ValueError(f"{checkpoint}: checkpoint kind {kind!r}; export knows 'avsnet' (RGB-Echoes or Only-RGB) and "
                         "'monodepth2'")
    plan.metadata["source"] = {"checkpoint": checkpoint.name, "weights_sha256": data.get("weights_sha256")}
    return plan


def onnx_bytes(plan: ExportPlan, opset: int = DEFAULT_OPSET, exporter: str = "torchscript") -> bytes:
    """The plan's graph as a serialised ONNX model with its metadata."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter: expected one of {EXPORTERS}, got {exporter!r}")
    plan.metadata["exporter"] = {"torch": torch.__version__, "exporter": exporter, "opset": opset,
                                 "format_version": FORMAT_VERSION}
    return _with_metadata(_trace(plan, opset, exporter), plan.metadata)


def _trace(plan: ExportPlan, opset: int, exporter: str) -> bytes:
    """The ONNX ModelProto bytes of the plan's graph, batch dimension dynamic."""
    names = list(plan.inputs)
    args = tuple(plan.inputs.values())
    buffer = io.BytesIO()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # the EfficientNet 'same' padding converts traced sizes to Python ints: static for a fixed input size, as intended
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*Constant folding.*")
        # the TorchScript exporter is deprecated in favour of dynamo, which also works here (--exporter dynamo) but takes
        # twice as long and gives the same graph speed; both are checked against torch before anything is written
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*feature will be removed.*")
        if exporter == "torchscript":
            dynamic = {name: {0: "batch"} for name in names + plan.outputs}
            torch.onnx.export(plan.graph, args, buffer, input_names=names, output_names=plan.outputs,
                              dynamic_axes=dynamic, opset_version=opset, dynamo=False)
            return buffer.getvalue()
        batch = torch.export.Dim("batch", min=1, max=1024)
        program = torch.onnx.export(plan.graph, args, input_names=names, output_names=plan.outputs,
                                    dynamic_shapes={name: {0: batch} for name in names}, opset_version=opset,
                                    dynamo=True, optimize=True, verbose=False)
        return program.model_proto.SerializeToString()


def _with_metadata(model_bytes: bytes, metadata: dict[str, Any]) -> bytes:
    import onnx

    model = onnx.load_from_string(model_bytes)
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_PREFIX + key, json.dumps(value)
    model.producer_name = "avs_depth"
    source = metadata.get("source", {}).get("checkpoint", "a model in memory")
    model.doc_string = f"avs_depth {metadata['kind']} exported from {source}; see the avs_depth.* metadata"
    onnx.checker.check_model(model)
    return model.SerializeToString()


def check_against_torch(model_bytes: bytes, plan: ExportPlan) -> dict[str, float]:
    """Max |ONNX Runtime - torch| per output on the plan's example inputs (CPU, all graph optimisations)."""
    from avs_depth_core.ort_session import onnx_session

    session = onnx_session(model_bytes, providers=["CPUExecutionProvider"])
    got = session.run(None, {name: t.numpy() for name, t in plan.inputs.items()})
    with torch.inference_mode():
        expected = plan.graph(*plan.inputs.values())
    expected = expected if isinstance(expected, tuple) else (expected,)
    return {name: float(np.abs(g - e.numpy()).max()) for name, g, e in zip(plan.outputs, got, expected, strict=True)}


def export_onnx(checkpoint: str | Path, out: str | Path, opset: int = DEFAULT_OPSET, exporter: str = "torchscript",
                tolerance: float | None = 1e-3) -> ExportReport:
    """Export a checkpoint to `out` (.onnx) with its metadata; with a tolerance, check ONNX Runtime against torch first
    and raise ValueError (nothing written) when an output differs by more."""
    out = Path(out)
    if out.suffix != ".onnx":
        raise ValueError(f"--out {out}: expected a file name ending in .onnx")
    weights = checkpoint_paths(checkpoint)[0]
    files.check_output(out, weights.stat().st_size if weights.is_file() else 0, "--out", kind="file")
    start = time.perf_counter()
    plan = export_plan(checkpoint)
    model_bytes = onnx_bytes(plan, opset, exporter)
    diffs: dict[str, float] = {}
    if tolerance is not None:
        diffs = check_against_torch(model_bytes, plan)
        bad = {name: d for name, d in diffs.items() if not d <= tolerance}
        if bad:
            raise ValueError(f"{checkpoint}: the ONNX graph differs from torch by {bad} (tolerance {tolerance}); "
                             f"nothing written to {out}")
    with files.atomic_output(out, "--out") as tmp:
        tmp.write_bytes(model_bytes)
    return ExportReport(out, plan.metadata["kind"], diffs, time.perf_counter() - start, len(model_bytes))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The avs_depth.* metadata of an exported model, decoded (keys without the prefix)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ONNX model not found")
    model = onnx.load(str(path), load_external_data=False)
    metadata = {p.key.removeprefix(METADATA_PREFIX): json.loads(p.value) for p in model.metadata_props
                if p.key.startswith(METADATA_PREFIX)}
    if "kind" not in metadata:
        raise ValueError(f"{path}: no avs_depth metadata; export the model with `avs-depth export`")
    return metadata
