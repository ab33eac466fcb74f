"""The frozen parts that feed an EchoRescaleHead (models/rescale_head.py), all run under no_grad:

- the relative model R (avs_depth_core.relative.RelativeDepthModel): an Only-RGB AVS-Net (`relative: avsnet_rgb`, the
  live demo's relative model) or a Monodepth2 DepthNet (`relative: monodepth2`); its map becomes the relative disparity
  r = 1/R normalised to median 1 per image;
- the image features (TR2M: DINOv2's last patch tokens): one decoder map (`feature_layer`, default r3 at 1/8) of the
  MiDaS part of an Only-RGB AVS-Net (`features_checkpoint`; the relative model's own checkpoint when R is that AVS-Net);
- the echo (TR2M: the CLIP text token): an RGB-Echoes AVS-Net (`echo_checkpoint`) gives its ResNet-18 STFT tokens, its
  range-profile tokens when it has a range encoder and `echo_range_tokens` is on, and its metric map Mp, whose median
  gives the per-image global scale k the head starts from (AVS-Net eq. 3 done in disparity: k = median(1/Mp) /
  median(r) over the pixels where Mp lies within the depth range).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from avs_depth_core.audio.features import unpack_range_profile
from avs_depth_core.config import check_fields, dataclass_from_dict
from avs_depth_core.models.avsnet import AVSNet
from avs_depth_core.models.rescale_head import normalised_disparity
from avs_depth_core.relative import RelativeDepthModel

RELATIVE_KINDS = ("avsnet_rgb", "monodepth2")
FEATURE_LAYERS = ("bottleneck", "r4", "r3", "r2")


@dataclass
class FrontendConfig:
    """The `frontend:` keys of the `model:` section (checkpoints of frozen networks)."""

    relative: str = "avsnet_rgb"  # RELATIVE_KINDS
    relative_checkpoint: str = ""
    features_checkpoint: str = ""  # Only-RGB AVS-Net for the image features ("" = relative_checkpoint, avsnet_rgb only)
    feature_layer: str = "r3"  # FEATURE_LAYERS: 1/32, 1/16, 1/8, 1/4 of the input
    echo_checkpoint: str = ""  # RGB-Echoes AVS-Net: echo tokens and the global scale ("" = no echo)
    echo_range_tokens: bool = True  # add the echo network's range-profile tokens (when it has a range encoder)
    min_depth: float = 1e-3  # Mp pixels used for the global scale: min_depth < Mp < max_depth
    max_depth: float = 30.0

    def __post_init__(self) -> None:
        check_fields(self)
        if self.relative not in RELATIVE_KINDS:
            raise ValueError(f"model.frontend.relative must be one of {list(RELATIVE_KINDS)}, got {self.relative!r}")
        if self.feature_layer not in FEATURE_LAYERS:
            raise ValueError(f"model.frontend.feature_layer must be one of {list(FEATURE_LAYERS)}, got {self.feature_layer!r}")
        if not 0 <= self.min_depth < self.max_depth:
            raise ValueError(f"model.frontend: need 0 <= min_depth < max_depth, got {self.min_depth}, {self.max_depth}")

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config model.frontend") -> FrontendConfig:
        return dataclass_from_dict(cls, values, where, prefix="model.frontend.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _require(path: str, key: str) -> Path:
    if not path:
        raise ValueError(f"config: model.frontend.{key} is required (a checkpoint path)")
    p = Path(path)
    if not (p.is_file() or p.with_suffix(".json").is_file() or Path(str(p) + ".json").is_file()):
        raise FileNotFoundError(f"model.frontend.{key}: {path}: checkpoint not found")
    return p


class RescaleFrontend:
    """The frozen networks; __call__(rgb (B,3,H,W) in [0,1], echo (B,C,He,We) or None) -> dict of tensors."""

    def __init__(self, cfg: FrontendConfig, device: str | torch.device = "cpu") -> None:
        self.cfg, self.device = cfg, torch.device(device)
        if cfg.relative == "avsnet_rgb":
            self.relative = RelativeDepthModel.avsnet_rgb(_require(cfg.relative_checkpoint, "relative_checkpoint"), device)
        else:
            self.relative = RelativeDepthModel.monodepth2(_require(cfg.relative_checkpoint, "relative_checkpoint"), device)
        features = cfg.features_checkpoint or (cfg.relative_checkpoint if cfg.relative == "avsnet_rgb" else "")
        if cfg.relative == "avsnet_rgb" and not cfg.features_checkpoint:
            self.features = self.relative.module
        else:
            self.features = AVSNet.from_checkpoint(_require(features, "features_checkpoint"), device)
        self.echo_net = AVSNet.from_checkpoint(_require(cfg.echo_checkpoint, "echo_checkpoint"), device) \
            if cfg.echo_checkpoint else None
        if self.echo_net is not None and not self.echo_net.cfg.use_echo:
            raise ValueError(f"model.frontend.echo_checkpoint: {cfg.echo_checkpoint} is an Only-RGB AVS-Net; "
                             "the echo tokens need an RGB-Echoes checkpoint (use_echo true)")
        for net in (self.features, self.echo_net):
            if net is not None:
                net.eval().requires_grad_(False)

    @classmethod
    def from_modules(cls, cfg: FrontendConfig, relative: RelativeDepthModel | None, features: AVSNet,
                     echo_net: AVSNet | None) -> RescaleFrontend:
        """From networks already loaded (the live pipeline's); `relative` may be None when only features and echo
        tokens are asked for."""
        frontend = cls.__new__(cls)
        frontend.cfg, frontend.device = cfg, next(features.parameters()).device
        frontend.relative, frontend.features, frontend.echo_net = relative, features, echo_net
        return frontend

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.features.cfg.image_size)

    @property
    def image_channels(self) -> int:
        return self.features.visual.channels[self.cfg.feature_layer]

    @property
    def uses_range_tokens(self) -> bool:
        return self.echo_net is not None and self.cfg.echo_range_tokens and self.echo_net.range_encoder is not None

    @torch.no_grad()
    def echo_tokens(self, echo: torch.Tensor) -> torch.Tensor:
        net = self.echo_net
        tokens = net.audio(echo[:, :2])
        if self.uses_range_tokens:
            tokens = torch.cat([tokens, net.range_encoder(unpack_range_profile(echo[:, 2:], net.cfg.range_bins))], dim=1)
        return tokens

    @torch.no_grad()
    def image_features(self, rgb: torch.Tensor) -> torch.Tensor:
        net = self.features
        return net.visual((rgb - net.norm_mean.to(rgb.dtype)) / net.norm_std.to(rgb.dtype))[self.cfg.feature_layer]

    @torch.no_grad()
    def __call__(self, rgb: torch.Tensor, echo: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """-> relative (R), rel_disparity (r, median 1), features, and with an echo network and echo: echo_tokens,
        pseudo_metric (Mp), global_scale (k, 1/m), pseudo_metric_log (log Mp k r); without: a fitted-anchor head's inputs."""
        rgb = rgb.to(self.device)
        relative = self.relative(rgb)
        r = normalised_disparity(relative, "depth")
        out = {"relative": relative, "rel_disparity": r, "features": self.image_features(rgb)}
        if self.echo_net is not None and echo is not None:
            echo = echo.to(self.device)
            mp = self.echo_net(rgb, echo)["metric_depth"]
            k = global_disparity_scale(r, mp, self.cfg.min_depth, self.cfg.max_depth)
            out.update(echo_tokens=self.echo_tokens(echo), pseudo_metric=mp, global_scale=k,
                       pseudo_metric_log=torch.log(mp.clamp_min(1e-6) * k.view(-1, 1, 1, 1) * r))
        return out


def global_disparity_scale(r: torch.Tensor, pseudo_metric: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """k (B,) = median(1 / Mp) / median(r) over the pixels where min_depth < Mp < max_depth (all pixels when none is):
    1 / (k r) is AVS-Net's median scaling of R to Mp, done in disparity."""
    ks = []
    for i in range(r.shape[0]):
        ok = (pseudo_metric[i] > min_depth) & (pseudo_metric[i] < max_depth) & torch.isfinite(r[i])
        if int(ok.sum()) == 0:
            ok = torch.isfinite(r[i]) & (pseudo_metric[i] > 0)
        ks.append((1.0 / pseudo_metric[i][ok]).median() / r[i][ok].median())
    return torch.stack(ks)
