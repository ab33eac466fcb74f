"""Training augmentation that keeps the geometry between image, depth and echo (options of the `train:` section).

- flip: the image and depth mirrored left-right together with the ears swapped (left <-> right, STFT and range
  profile), as if the scene were mirrored;
- scale: the scene scaled by s (log-uniform in [1/scale, scale]): depth times s, every echo arrival delayed by s (the
  STFT's time axis and the range profile stretched by s about emission; beyond the window, the last column repeats),
  the image unchanged (a scaled scene looks the same through the same camera); a range profile in log-spaced bins
  (model.range_spacing log) is shifted by log(s) instead, the nearest bin repeated below. The rig does not scale: its
  direct path and ear spacing are stretched too, a small inconsistency;
- gain: the echo's level times a gain uniform in dB within +-gain_db (the STFT channels; a range profile with log1p
  over the noise floor does not change with the gain, a linear one is scaled too);
- noise: Gaussian noise on the STFT channels with noise x each sample's STFT standard deviation (on the features, not
  the samples: the cache holds features).
Each sample draws its own; everything comes from torch's global generator (seeded by train.seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from avs_depth_core.audio.features import unpack_range_profile


@dataclass(frozen=True)
class EchoAugment:
    flip: float = 0.0  # probability of a mirrored sample
    scale: float = 1.0  # largest scale factor (1: off)
    gain_db: float = 0.0
    noise: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.flip <= 1 or self.scale < 1 or self.gain_db < 0 or self.noise < 0:
            raise ValueError(f"config: need 0 <= train.aug_flip <= 1, train.aug_scale >= 1, train.aug_echo_gain_db >= 0 and "
                             f"train.aug_echo_noise >= 0, got {self.flip}, {self.scale}, {self.gain_db}, {self.noise}")

    @property
    def active(self) -> bool:
        return self.flip > 0 or self.scale > 1 or self.gain_db > 0 or self.noise > 0


def stretch_time(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) with time along W from emission at the left edge -> out[..., u] = x[..., u / s] (per sample s, (B,)),
    bilinear, the last column repeated beyond the window."""
    u = (torch.arange(x.shape[-1], device=x.device, dtype=x.dtype) + 0.5) / x.shape[-1]
    return _resample_w(x, u[None] / s[:, None].to(x.dtype))


def shift_log_range(x: torch.Tensor, s: torch.Tensor, log_span: float) -> torch.Tensor:
    """(B, C, H, W) with log range along W (W bins over a span of log_span nepers) -> the scene scaled by s (B,): out at
    range r = x at r / s, i.e. shifted by log(s) / log_span of the width; bilinear, the edge columns repeated."""
    u = (torch.arange(x.shape[-1], device=x.device, dtype=x.dtype) + 0.5) / x.shape[-1]
    return _resample_w(x, u[None] - torch.log(s)[:, None].to(x.dtype) / log_span)


def _resample_w(x: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """out[b, ..., j] = x[b, ..., src[b, j] * W] (src (B, W) in [0, 1] units of the width), bilinear, border padded."""
    b, _, h, w = x.shape
    src = src * 2 - 1  # grid_sample's [-1, 1]
    v = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) / h * 2 - 1
    grid = torch.stack([src[:, None, :].expand(b, h, w), v[None, :, None].expand(b, h, w)], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _scale(batch: dict[str, Any], s: torch.Tensor, cfg: Any) -> None:
    batch["depth"] = batch["depth"] * s.view(-1, 1, 1, 1).to(batch["depth"].dtype)
    if not cfg.use_echo:
        return
    echo = batch["echo"]
    parts = [stretch_time(echo[:, :2], s)]
    if cfg.echo_range_profile:
        planes = echo[:, 2:]
        profile = unpack_range_profile(planes, cfg.range_bins).unsqueeze(2)  # (B, 2, 1, bins): range along W
        if cfg.range_spacing == "log":
            stretched = shift_log_range(profile, s, math.log(cfg.max_depth / cfg.range_min)).squeeze(2)
        else:
            stretched = stretch_time(profile, s).squeeze(2)
        packed = torch.zeros_like(planes).flatten(2)
        packed[..., :cfg.range_bins] = stretched
        parts.append(packed.view_as(planes))
    batch["echo"] = torch.cat(parts, dim=1)


def _level(batch: dict[str, Any], aug: EchoAugment, cfg: Any) -> None:
    echo = batch["echo"]
    stft = echo[:, :2]
    b = echo.shape[0]
    if aug.gain_db > 0:
        gain = 10 ** ((torch.rand(b, device=echo.device) * 2 - 1) * aug.gain_db / 20)
        g = gain.view(-1, 1, 1, 1).to(echo.dtype)
        stft = torch.log1p(g * torch.expm1(stft)) if cfg.stft_log else stft * g
        if cfg.echo_range_profile and not cfg.range_log:
            echo = torch.cat([echo[:, :2], echo[:, 2:] * g], dim=1)
    if aug.noise > 0:
        std = stft.flatten(1).std(dim=1).view(-1, 1, 1, 1)
        stft = (stft + aug.noise * std * torch.randn_like(stft)).clamp_min(0)
    batch["echo"] = torch.cat([stft, echo[:, 2:]], dim=1)


def augment_batch(batch: dict[str, Any], aug: EchoAugment, cfg: Any) -> dict[str, Any]:
    """A training batch (rgb, depth, echo on one device) augmented per sample; `cfg` is the model's AVSNetConfig."""
    if not aug.active:
        return batch
    batch = dict(batch)
    b, device = batch["rgb"].shape[0], batch["rgb"].device
    if aug.flip > 0:
        flip = torch.rand(b, device=device) < aug.flip
        m = flip.view(-1, 1, 1, 1)
        batch["rgb"] = torch.where(m, batch["rgb"].flip(-1), batch["rgb"])
        batch["depth"] = torch.where(m, batch["depth"].flip(-1), batch["depth"])
        if cfg.use_echo:
            echo = batch["echo"]
            swap = [1, 0, 3, 2][:echo.shape[1]]
            batch["echo"] = torch.where(m, echo[:, swap], echo)
    if aug.scale > 1:
        log_s = (torch.rand(b, device=device) * 2 - 1) * torch.log(torch.tensor(aug.scale))
        _scale(batch, log_s.exp(), cfg)
    if cfg.use_echo and (aug.gain_db > 0 or aug.noise > 0):
        _level(batch, aug, cfg)
    return batch
