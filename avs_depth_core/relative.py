"""Adapters for relative and zero-shot depth models, so any of them (Lite-Mono, MonoViT, ZoeDepth, NeWCRFs, a user's network)
feeds scaling.recover_scale the same way.

A RelativeDepthModel takes rgb (B, 3, H, W) float in [0, 1] and returns (B, 1, H, W) depth in the model's units: relative
for "depth" and "disparity" models (disparity is converted with scaling.disparity_to_depth), metres for "metric_depth"
models. It resizes to the model's input size and back, applies the model's input normalisation if given, and checks the
output: a wrong shape, NaN, inf or negative values raise ValueError naming the model.

Built-in examples: `monodepth2(checkpoint)` (relative, sigmoid disparity) and `avsnet_rgb(checkpoint)` (AVS-Net with
RGB only, a zero-shot metric model). A torch.export program can be wrapped with from_module(torch.export.load(p).module(), ...).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from avs_depth_core.scaling import DISPARITY_KINDS, disparity_to_depth

OUTPUT_KINDS = ("depth", "disparity", "metric_depth")


class RelativeDepthModel:
    """A depth model behind one call: __call__(rgb (B, 3, H, W) in [0, 1]) -> (B, 1, H, W) depth.

    fn: the model, called on the (resized, normalised) batch; it may return a tensor (B, 1, h, w) or (B, h, w), or a dict
    from which output_key picks the tensor. output_kind: "depth", "disparity" or "metric_depth".
    input_size: (h, w) the model expects, or None to feed the input size. mean/std: per-channel input normalisation, or None
    when fn normalises itself. needs_echo: fn is fn(x, echo) and every call must pass the echo features (an echo-supervised
    Monodepth2 with model.echo_input); echo_features then says which (monodepth2.ECHO_FEATURE_KEYS, channels, size).
    disparity_kind: "inverse" (depth = 1 / disp) or "monodepth2" (sigmoid disparity mapped to
    [min_depth, max_depth]); see scaling.disparity_to_depth for the shift ambiguity of MiDaS-style inverse depth.
    """

    def __init__(self, fn: Callable[[torch.Tensor], object], output_kind: str, name: str = "depth model",
                 input_size: tuple[int, int] | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, output_key: str | None = None, disparity_kind: str = "inverse",
                 min_depth: float = 0.1, max_depth: float = 100.0, device: str | torch.device = "cpu",
                 needs_echo: bool = False, echo_features: dict | None = None) -> None:
        if output_kind not in OUTPUT_KINDS:
            raise ValueError(f"{name}: output_kind must be one of {list(OUTPUT_KINDS)}, got {output_kind!r}")
        if disparity_kind not in DISPARITY_KINDS:
            raise ValueError(f"{name}: disparity_kind must be one of {list(DISPARITY_KINDS)}, got {disparity_kind!r}")
        if input_size is not None and (len(input_size) != 2 or min(input_size) <= 0):
            raise ValueError(f"{name}: input_size must be (height, width), got {input_size}")
        if (mean is None) != (std is None):
            raise ValueError(f"{name}: give both mean and std for input normalisation, or neither")
        self.fn, self.output_kind, self.name = fn, output_kind, name
        self.input_size = tuple(input_size) if input_size is not None else None
        self.device = torch.device(device)
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.output_key, self.disparity_kind = output_key, disparity_kind
        self.min_depth, self.max_depth = min_depth, max_depth
        self.needs_echo, self.echo_features = needs_echo, echo_features
        # The wrapped nn.Module, when there is one (for .to(), parameters, state dicts).
        self.module: nn.Module | None = None

    @property
    def is_metric(self) -> bool:
        return self.output_kind == "metric_depth"

    def __repr__(self) -> str:
        return f"RelativeDepthModel({self.name!r}, output_kind={self.output_kind!r}, input_size={self.input_size})"

    def _check_input(self, rgb: torch.Tensor) -> None:
        if not isinstance(rgb, torch.Tensor) or rgb.dim() != 4 or rgb.shape[1] != 3 or not rgb.is_floating_point():
            shape = tuple(rgb.shape) if isinstance(rgb, torch.Tensor) else type(rgb).__name__
            raise ValueError(f"{self.name}: expects rgb as a float tensor (B, 3, H, W), got {shape}")
        low, high = rgb.min().item(), rgb.max().item()
        if low < -1e-3 or high > 1 + 1e-3:
            raise ValueError(f"{self.name}: expects rgb in [0, 1], got values in [{low:.4g}, {high:.4g}] "
                             f"(divide 8-bit images by 255)")

    def _select(self, raw: object) -> torch.Tensor:
        if isinstance(raw, dict):
            if self.output_key is None or self.output_key not in raw:
                raise ValueError(f"{self.name}: returned a dict with keys {sorted(map(str, raw))}; "
                                 f"set output_key to one of them (got {self.output_key!r})")
            raw = raw[self.output_key]
        if not isinstance(raw, torch.Tensor):
            raise ValueError(f"{self.name}: must return a tensor (or a dict of them), got {type(raw).__name__}")
        return raw

    def __call__(self, rgb: torch.Tensor, echo: torch.Tensor | None = None) -> torch.Tensor:
        """rgb (B, 3, H, W) in [0, 1] -> depth (B, 1, H, W); echo: (B, C, He, We) echo features, for (and only for) a
        model with needs_echo."""
        self._check_input(rgb)
        if self.needs_echo and echo is None:
            raise ValueError(f"{self.name}: takes the echo (an echo-input Monodepth2, model.echo_input); pass its echo "
                             f"features")
        if not self.needs_echo and echo is not None:
            raise ValueError(f"{self.name}: takes no echo")
        b, _, h, w = rgb.shape
        x = rgb.to(self.device, torch.float32)
        fed = self.input_size or (h, w)
        if fed != (h, w):
            x = F.interpolate(x, fed, mode="bilinear", align_corners=False, antialias=True)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        # no_grad rather than inference_mode: callers may go on to use the result in autograd-tracked code.
        with torch.no_grad():
            out = self._select(self.fn(x) if echo is None else self.fn(x, echo.to(self.device, torch.float32)))
        if out.dim() == 3:
            out = out[:, None]
        if out.dim() != 4 or tuple(out.shape) != (b, 1, *fed):
            raise ValueError(f"{self.name}: expected a {self.output_kind} map of shape ({b}, 1, {fed[0]}, {fed[1]}) "
                             f"or ({b}, {fed[0]}, {fed[1]}), got {tuple(out.shape)}")
        out = out.float()
        bad_nan, bad_inf, bad_neg = int(torch.isnan(out).sum()), int(torch.isinf(out).sum()), int((out < 0).sum())
        if bad_nan or bad_inf or bad_neg:
            raise ValueError(f"{self.name}: expected a finite, non-negative {self.output_kind} map, got {bad_nan} NaN, "
                             f"{bad_inf} inf and {bad_neg} negative values")
        if fed != (h, w):
            out = F.interpolate(out, (h, w), mode="bilinear", align_corners=False)
        if self.output_kind == "disparity":
            try:
                out = disparity_to_depth(out, self.disparity_kind, self.min_depth, self.max_depth)
            except ValueError as err:
                raise ValueError(f"{self.name}: {err}") from err
        return out.to(rgb.device)

    @classmethod
    def from_callable(cls, fn: Callable[[torch.Tensor], object], output_kind: str, **kwargs) -> RelativeDepthModel:
        """Any function of a (B, 3, h, w) tensor; keyword arguments as the constructor."""
        kwargs.setdefault("name", getattr(fn, "__name__", type(fn).__name__))
        return cls(fn, output_kind, **kwargs)

    @classmethod
    def from_module(cls, module: nn.Module, output_kind: str, **kwargs) -> RelativeDepthModel:
        """A torch module, moved to `device` and put in eval mode."""
        kwargs.setdefault("name", type(module).__name__)
        module = module.to(kwargs.get("device", "cpu")).eval()
        model = cls(module, output_kind, **kwargs)
        model.module = module
        return model

    @classmethod
    def from_torchscript(cls, path: str | Path, output_kind: str, **kwargs) -> RelativeDepthModel:
        """A TorchScript file (torch.jit.save); loading runs no Python from the file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: TorchScript model not found")
        try:
            with warnings.catch_warnings():
                # Deprecated in recent torch in favour of torch.export, but many released depth models ship as TorchScript.
                warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=DeprecationWarning)
                module = torch.jit.load(str(path), map_location=kwargs.get("device", "cpu"))
        except RuntimeError as err:
            raise ValueError(f"{path}: not a TorchScript file ({str(err).splitlines()[0]})") from err
        kwargs.setdefault("name", path.name)
        return cls.from_module(module, output_kind, **kwargs)

    @classmethod
    def monodepth2(cls, checkpoint: str | Path, device: str | torch.device = "cpu") -> RelativeDepthModel:
        """The project's Monodepth2 DepthNet: full-resolution sigmoid disparity, converted with disp_to_depth; relative, or
        a metric model (output_kind "metric_depth") when its checkpoint says depth_units "metres" (echo-supervised). One
        with model.echo_input takes the echo features too (needs_echo)."""
        from avs_depth_core.models.monodepth2 import load_monodepth2, output_depth

        loaded = load_monodepth2(checkpoint, device)
        depth_net, config = loaded.depth_net, loaded.config

        def predict_disparity(x: torch.Tensor) -> torch.Tensor:
            return depth_net(x)[("disp", 0)]

        def predict_metric_depth(x: torch.Tensor, echo: torch.Tensor | None = None) -> torch.Tensor:
            return output_depth(depth_net(x, echo), config.min_depth, config.max_depth)

        name = f"monodepth2 {Path(checkpoint).name}"
        if config.depth_units == "metres":
            needs_echo = config.echo_input != "none"
            model = cls(predict_metric_depth, "metric_depth", name=f"{name} (metres{', echo input' if needs_echo else ''})",
                        input_size=(config.height, config.width), device=device, needs_echo=needs_echo,
                        echo_features=config.echo_features if needs_echo else None)
        else:
            model = cls(predict_disparity, "disparity", name=name, input_size=(config.height, config.width),
                        disparity_kind="monodepth2", min_depth=config.min_depth, max_depth=config.max_depth, device=device)
        model.module = depth_net
        return model

    @classmethod
    def avsnet_rgb(cls, checkpoint: str | Path, device: str | torch.device = "cpu") -> RelativeDepthModel:
        """AVS-Net without echoes (Only-RGB, use_echo=False) as a zero-shot metric model: model(rgb, None)["metric_depth"]
        in metres, at the checkpoint's image_size (256x512 for AVS-Net, as in the paper)."""
        from avs_depth_core.models.avsnet import AVSNet

        avsnet = AVSNet.from_checkpoint(checkpoint, device).eval()
        if avsnet.cfg.use_echo:
            raise ValueError(f"{checkpoint}: an RGB-Echoes AVS-Net (use_echo=True); the zero-shot adapter needs an Only-RGB "
                             f"checkpoint (use_echo=False), since the echo gives the scale it would otherwise recover")

        def predict_metric_depth(x: torch.Tensor) -> torch.Tensor:
            return avsnet(x, None)["metric_depth"]

        model = cls(predict_metric_depth, "metric_depth", name=f"avsnet-rgb {Path(checkpoint).name}",
                    input_size=tuple(avsnet.cfg.image_size), device=device)
        model.module = avsnet
        return model
