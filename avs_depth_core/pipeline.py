"""Live metric depth for one frame: RGB (+ the echo paired with it) -> metric depth at the image's resolution. ROS-free;
the depth node, the benchmark and tests share it.

    AVS-Net(RGB, echo STFT) -> pseudo-metric depth Mp         (needs a fresh echo unless the model is Only-RGB)
    relative model(RGB)     -> R
    scale = median(Mp) / median(R)  (AVS-Net eq. 3; scaling.recover_scale), smoothed and held by scaling.ScaleTracker
    (scale_method "pixelwise": with a fresh echo, pixel-wise rescale maps from a trained head anchored at that scale,
    avs_depth_core.rescale; without one, the held scale as for "median")
    (scale_method "none": scale 1, for a relative model that predicts metres itself, such as an echo-supervised
    Monodepth2 (train/echo_supervision.py); the depth then needs no echo, though AVS-Net's Mp is still computed)
    metric = scale * R, resized to the input image, clipped to (or NaN outside) the model's depth range

Without a fresh echo the tracker holds the last scale for `hold_s` seconds and says so (held, held_for); after that the
metric map is all NaN ("no estimate", REP 117) until an echo arrives. The relative depth is computed either way.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from avs_depth_core.data.messages import echo_input_problem
from avs_depth_core.device import resolve_device
from avs_depth_core.models.avsnet import mirror_inputs
from avs_depth_core.pipeline_settings import OUT_OF_RANGE, RELATIVE_KINDS, PipelineSettings
from avs_depth_core.scaling import ScaleResult, ScalingConfig, apply_scale

log = logging.getLogger(__name__)

# Checkpoints shipped with the package: avs_depth_core/checkpoints/<kind>/<name>.safetensors + <name>.json.
BUNDLED_KINDS = {"avsnet": "avsnet", "avsnet_rgb": "avsnet_rgb", "monodepth2": "monodepth2", "rescale": "rescale"}


def bundled_checkpoint(kind: str) -> Path | None:
    """The checkpoint shipped for `kind` (avsnet, avsnet_rgb, monodepth2), or None if the package has none."""
    folder = resources.files("avs_depth_core") / "checkpoints" / BUNDLED_KINDS.get(kind, kind)
    if not folder.is_dir():
        return None
    # Model weights only: <stem>.extra.safetensors holds training state and sorts before <stem>.safetensors; hidden files
    # are checkpoint.save_checkpoint's temporaries.
    found = sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".safetensors")
                   and not p.name.endswith(".extra.safetensors") and not p.name.startswith("."))
    return found[0] if found else None


def find_checkpoint(path: str | Path | None, kind: str, parameter: str) -> Path:
    """`path` if given (it must exist), else the bundled default for `kind`; a clear FileNotFoundError otherwise."""
    if path:
        path = Path(path).expanduser()
        if not path.exists() and not path.with_suffix(".safetensors").exists():
            raise FileNotFoundError(f"{parameter}: checkpoint {path} not found")
        return path
    bundled = bundled_checkpoint(kind)
    if bundled is None:
        raise FileNotFoundError(f"{parameter} is empty and no bundled {kind} checkpoint is installed "
                                f"(avs_depth_core/checkpoints/{kind}/); train one with `avs-depth train` and pass its path")
    return bundled


@dataclass(frozen=True)
class EchoInput:
    """One recorded echo as the node received it: (channels, n) float samples and where the emission is in them."""

    samples: np.ndarray
    sample_rate: int
    emission_offset: int
    stamp_ns: int  # emission time (EchoStamped header.stamp)


@dataclass
class DepthResult:
    metric: np.ndarray  # (H, W) float32 metres at the input image's resolution, NaN = no estimate
    pseudo_metric: np.ndarray | None  # (H, W) AVS-Net's map (when asked for and computed)
    relative: np.ndarray | None  # (H, W) relative depth (when asked for)
    scale: ScaleResult  # the scale applied (fresh, held, or NaN), as ScaleTracker returned it
    echo_used: bool  # an echo entered the pseudo-metric depth of this frame
    echo_age_s: float  # image stamp - echo emission stamp, s; NaN without an echo
    forward_ms: float  # time spent in this call (networks, scaling, resizing, copy to host)


class DepthPipeline:
    """AVS-Net + a relative model + scale recovery on one device. Call it once per frame, in stamp order."""

    def __init__(self, avsnet: Any, relative: Callable[[torch.Tensor], torch.Tensor], scaling: ScalingConfig | None = None,
                 device: str | torch.device = "cpu", half: bool = False, out_of_range: str = "clip",
                 warn: Callable[[str], None] = log.warning, flip_tta: bool = False,
                 rescaler: Any | None = None) -> None:
        if out_of_range not in OUT_OF_RANGE:
            raise ValueError(f"out_of_range must be one of {OUT_OF_RANGE}, got {out_of_range!r}")
        self.avsnet = avsnet
        self.relative = relative
        self.cfg = avsnet.cfg
        if getattr(relative, "needs_echo", False):  # an echo-input Monodepth2 reads the echo features this AVS-Net computes
            from avs_depth_core.models.monodepth2 import check_echo_features

            check_echo_features(relative.echo_features, avsnet.cfg, f"relative model {getattr(relative, 'name', '')}")
        self.device = torch.device(device)
        if half and self.device.type != "cuda":
            warn(f"half precision needs CUDA; running in float32 on {self.device}")
            half = False
        self.half = half
        self.out_of_range = out_of_range
        self.flip_tta = flip_tta
        self.scaling = scaling or ScalingConfig(min_depth=self.cfg.min_depth, max_depth=self.cfg.max_depth, fallback="nan")
        self.tracker = self.scaling.tracker()
        self._warn = warn
        self.rescaler = rescaler  # rescale.PixelwiseRescaler for scale method "pixelwise"
        if (self.scaling.method == "pixelwise") != (rescaler is not None):
            raise ValueError("scale method 'pixelwise' needs a rescaler (a trained rescale head), and a rescaler needs it")

    # -- construction -----------------------------------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: PipelineSettings, warn: Callable[[str], None] = log.warning) -> DepthPipeline:
        """Load AVS-Net and the relative model (empty checkpoints = the bundled defaults) onto the resolved device, as
        torch modules or ONNX Runtime sessions (settings.backend; avs_depth_core.backends)."""
        from avs_depth_core.backends import check_backend, load_avsnet, load_relative

        s = settings
        if s.relative_model not in RELATIVE_KINDS:
            raise ValueError(f"relative_model must be one of {RELATIVE_KINDS}, got {s.relative_model!r}")
        check_backend(s.backend)
        if s.scale_method == "pixelwise" and s.backend != "torch":
            raise ValueError("scale_method 'pixelwise' runs the rescale head on the torch modules; use backend torch")
        torch_device = resolve_device(s.device, warn=warn)
        avsnet = load_avsnet(find_checkpoint(s.avsnet_checkpoint, "avsnet", "avsnet_checkpoint"), s.backend, torch_device,
                             s.onnx_providers, s.half, warn)
        if s.relative_model == "torchscript" and not s.relative_checkpoint:
            raise FileNotFoundError("relative_checkpoint: relative_model 'torchscript' needs the path of the model file")
        path = s.relative_checkpoint if s.relative_model == "torchscript" else \
            find_checkpoint(s.relative_checkpoint, s.relative_model, "relative_checkpoint")
        relative = load_relative(s.relative_model, path, s.backend, torch_device, s.onnx_providers, s.half, warn)
        if s.scale_method == "none" and not relative.is_metric:
            warn(f"scale_method 'none' uses the depth of {relative.name} as metres, but it is a relative model (not "
                 f"trained with echo supervision); its depth will have no metric scale")
        cfg = avsnet.cfg
        scaling = ScalingConfig(method=s.scale_method, min_depth=cfg.min_depth, max_depth=cfg.max_depth, fallback="nan",
                                smoothing_alpha=s.scale_smoothing_alpha, hold_s=s.max_scale_hold_s)
        rescaler = None
        if s.scale_method == "pixelwise":
            from avs_depth_core.rescale import PixelwiseRescaler

            rescaler = PixelwiseRescaler.from_checkpoint(find_checkpoint(s.rescale_checkpoint, "rescale", "rescale_checkpoint"),
                                                         avsnet, getattr(relative, "module", None), torch_device)
        # fp16 autocast is the torch backend's; ONNX Runtime runs the fp32 graph (TensorRT: fp16 engines with half)
        return cls(avsnet, relative, scaling, torch_device, s.half and s.backend == "torch", s.out_of_range, warn,
                   flip_tta=s.flip_tta, rescaler=rescaler)

    # -- per frame --------------------------------------------------------------------------------------------------
    @property
    def uses_echo(self) -> bool:
        return bool(self.cfg.use_echo)

    def check_echo(self, samples: np.ndarray, sample_rate: int, emission_offset: int) -> str | None:
        """Why this echo cannot feed the model (rate, channels, length, NaN, silence, clipping), or None."""
        return echo_input_problem(samples, sample_rate, emission_offset, expected_rate=self.cfg.sample_rate,
                                  window_samples=self.cfg.echo_samples)

    def _autocast(self) -> Any:
        return torch.autocast(device_type="cuda", dtype=torch.float16, enabled=self.half)

    def _networks(self, rgb: np.ndarray, echo: EchoInput | None) -> tuple[torch.Tensor | None, torch.Tensor, bool]:
        """-> (Mp or None, R, whether an echo was used); the network inputs stay in self._inputs for the rescale head."""
        # uint8 to the device first: the resize to the network input then runs there (a 720p frame on a GPU)
        x, _ = self.avsnet.image_input(torch.from_numpy(rgb).to(self.device))
        echo_t = None
        if self.uses_echo and echo is not None:
            echo_t = self.avsnet.echo_input(echo.samples, echo.sample_rate, echo.emission_offset).to(self.device)
        with self._autocast():
            pseudo = None
            if echo_t is not None or not self.uses_echo:
                pseudo = self.avsnet(x, echo_t)["metric_depth"].float()
                if self.flip_tta:
                    mirrored = self.avsnet(*mirror_inputs(x, echo_t))["metric_depth"].float().flip(-1)
                    pseudo = torch.sqrt(pseudo * mirrored)
            if getattr(self.relative, "needs_echo", False):
                if echo_t is None:
                    raise ValueError(f"{getattr(self.relative, 'name', 'the relative model')} takes the echo (an "
                                     f"echo-input Monodepth2, model.echo_input) and this frame has no echo paired with it")
                relative = self.relative(x, echo_t).float()
            else:
                relative = self.relative(x).float()
        if tuple(relative.shape[-2:]) != tuple(x.shape[-2:]):
            relative = F.interpolate(relative, size=x.shape[-2:], mode="bilinear", align_corners=False)
        self._inputs = (x, echo_t)
        return pseudo, relative, echo_t is not None

    def warmup(self, iterations: int = 2) -> float:
        """Run the networks on a blank frame (and a silent echo) `iterations` times; mean ms per pass. The scale state is
        not touched."""
        h, w = self.cfg.image_size
        rgb = np.zeros((h, w, 3), np.uint8)
        n = self.cfg.echo_samples + 1
        echo = EchoInput(np.zeros((2, n), np.float32), self.cfg.sample_rate, 0, 0) if self.uses_echo else None
        start = time.perf_counter()
        with torch.inference_mode():
            for _ in range(iterations):
                _, relative, _ = self._networks(rgb, echo)
                relative.cpu()
        return (time.perf_counter() - start) * 1000.0 / max(iterations, 1)

    def __call__(self, rgb: np.ndarray, echo: EchoInput | None, image_stamp_ns: int, want_pseudo: bool = False,
                 want_relative: bool = False) -> DepthResult:
        """Metric depth for one (H, W, 3) uint8 RGB frame and the echo paired with it (or None)."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"rgb: expected an (H, W, 3) uint8 image, got {rgb.dtype} {rgb.shape}")
        start = time.perf_counter()
        if not rgb.flags.writeable:  # a view of a message buffer; torch.from_numpy wants memory it may write
            rgb = rgb.copy()
        size = rgb.shape[:2]
        with torch.inference_mode():
            pseudo, relative, echo_used = self._networks(rgb, echo)
            # scale_method "none": the relative model's depth is metres (an echo-supervised DepthNet), with or without an echo
            metric_model = self.scaling.method == "none"
            fresh = self.scaling.recover(relative, pseudo) if pseudo is not None or metric_model else None
            scale = self._track(fresh, image_stamp_ns / 1e9)
            if self.rescaler is not None:
                metric = self.rescaler.apply(*self._inputs, relative, pseudo, scale, min_output=self.cfg.min_depth)
            else:
                metric = apply_scale(relative, scale, min_output=self.cfg.min_depth)
            metric = _resize(metric, size)
            if self.out_of_range == "clip":
                metric = metric.clamp(self.cfg.min_depth, self.cfg.max_depth)
            else:
                metric = metric.masked_fill((metric < self.cfg.min_depth) | (metric > self.cfg.max_depth), math.nan)
            metric_np = _host(metric)
            pseudo_np = _host(_resize(pseudo, size)) if want_pseudo and pseudo is not None else None
            relative_np = _host(_resize(relative, size)) if want_relative else None
        age = (image_stamp_ns - echo.stamp_ns) / 1e9 if echo_used else math.nan
        return DepthResult(metric_np, pseudo_np, relative_np, scale, echo_used, age,
                           (time.perf_counter() - start) * 1000.0)

    def _track(self, fresh: ScaleResult | None, stamp_s: float) -> ScaleResult:
        try:
            return self.tracker.update(fresh, stamp_s)
        except ValueError as err:  # stamps went backwards: a replayed bag or a clock reset
            self._warn(f"{err}; scale tracking restarts")
            self.tracker.reset()
            return self.tracker.update(fresh, stamp_s)


def _resize(depth: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(depth.shape[-2:]) == tuple(size):
        return depth
    return F.interpolate(depth, size=tuple(size), mode="bilinear", align_corners=False)


def _host(depth: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(depth[0, 0].float().cpu().numpy(), dtype=np.float32)
