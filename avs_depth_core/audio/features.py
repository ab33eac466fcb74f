"""Magnitude STFT of the echo, per channel, with BatVision's settings, and its resize to the network input.

BatVision (official UNetSoundOnly loader, "parameters from the original batvision paper"): torchaudio Spectrogram with
n_fft 512, win_length 64, hop_length 16, power 1: torch.stft, centred with reflect padding, periodic Hann window of 64
zero-padded to 512, onesided, magnitude, no dB (BatVision's dataloader). A (2, 7782) BV2 window gives (2, 257, 487).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from avs_depth_core.audio.range_profile import RangeProfileSettings, range_profile
from avs_depth_core.audio.window import echo_window


@dataclass(frozen=True)
class StftSettings:
    """The echo features: the magnitude STFT, and optionally (a deviation option, time of flight) the matched-filter
    range profile of each ear as further channels (see echo_features)."""

    n_fft: int = 512
    win_length: int = 64
    hop_length: int = 16
    power: float = 1.0
    log: bool = False  # deviation option: log1p magnitude (not in BatVision); off by default
    range_profile: RangeProfileSettings | None = None  # deviation option: the range profile channels; None = STFT only

    def frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.hop_length

    def channels(self, ears: int = 2) -> int:
        """Channels of the echo features for `ears` microphones."""
        return 2 * ears if self.range_profile is not None else ears


def pack_range_profile(profile: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, bins) -> (C, H, W): the bins laid out row-major from the top-left corner of an H x W plane, the rest zero, so
    the range profile travels in the same tensor as the STFT (one echo input for every runtime)."""
    profile = torch.as_tensor(profile, dtype=torch.float32)
    h, w = size
    if profile.shape[-1] > h * w:
        raise ValueError(f"range profile of {profile.shape[-1]} bins does not fit a {h}x{w} echo plane")
    plane = torch.zeros(profile.shape[0], h * w, dtype=torch.float32)
    plane[:, :profile.shape[-1]] = profile
    return plane.view(profile.shape[0], h, w)


def unpack_range_profile(planes: torch.Tensor, bins: int) -> torch.Tensor:
    """(..., C, H, W) planes from pack_range_profile -> (..., C, bins)."""
    return planes.flatten(-2)[..., :bins]


def echo_spectrogram(samples: np.ndarray | torch.Tensor, settings: StftSettings = StftSettings()) -> torch.Tensor:
    """(C, n) or (B, C, n) samples -> (C, n_fft // 2 + 1, frames) or (B, C, F, T) float32 magnitude."""
    if isinstance(samples, np.ndarray) and not samples.flags.writeable:
        samples = samples.copy()  # decoded bag messages are read-only; torch warns on sharing them
    x = torch.as_tensor(samples, dtype=torch.float32)
    if x.ndim not in (2, 3):
        raise ValueError(f"echo samples must be (channels, n) or (batch, channels, n), got shape {tuple(x.shape)}")
    if x.shape[-1] < settings.n_fft // 2 + 1:
        raise ValueError(f"echo of {x.shape[-1]} samples is too short for an STFT with n_fft {settings.n_fft}")
    lead = x.shape[:-1]
    window = torch.hann_window(settings.win_length, periodic=True, dtype=torch.float32, device=x.device)
    spec = torch.stft(x.reshape(-1, x.shape[-1]), n_fft=settings.n_fft, hop_length=settings.hop_length,
                      win_length=settings.win_length, window=window, center=True, pad_mode="reflect",
                      onesided=True, return_complex=True).abs()
    if settings.power != 1.0:
        spec = spec.pow(settings.power)
    if settings.log:
        spec = torch.log1p(spec)
    return spec.reshape(*lead, spec.shape[-2], spec.shape[-1])


def resize_spectrogram(spec: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (C, F, T) or (B, C, F, T) to size (H, W), antialiased like torchvision's Resize on tensors."""
    squeeze = spec.ndim == 3
    x = spec[None] if squeeze else spec
    out = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out[0] if squeeze else out


def echo_features(samples: np.ndarray, sample_rate: int, *, expected_rate: int, max_depth: float, size: tuple[int, int],
                  emission_offset: int = 0, speed_of_sound: float = 340.0, settings: StftSettings = StftSettings(),
                  where: str = "echo") -> torch.Tensor:
    """The network's echo input, the one path shared by datasets and the live node: window after emission to max_depth,
    magnitude STFT per channel, resize to `size`. (channels, n) float samples -> (channels, *size) float32; with
    settings.range_profile, (2 * channels, *size): then the matched-filter range profile of every channel follows
    (audio.range_profile.range_profile over [0, max_depth), packed by pack_range_profile).

    speed_of_sound 340 m/s matches BatVision's loader cut (its dataloader).
    """
    if int(sample_rate) != int(expected_rate):
        raise ValueError(f"{where}: sample rate {sample_rate} Hz, expected {expected_rate} Hz")
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 2:
        raise ValueError(f"{where}: expected (channels, n) samples, got shape {samples.shape}")
    if not np.all(np.isfinite(samples)):
        raise ValueError(f"{where}: echo holds NaN or inf samples")
    window = echo_window(samples, sample_rate, max_depth, emission_offset, speed_of_sound)
    features = resize_spectrogram(echo_spectrogram(window, settings), size)
    spec = settings.range_profile
    if spec is None:
        return features
    if spec.chirp.sample_rate != int(sample_rate):
        raise ValueError(f"{where}: the range profile's chirp is at {spec.chirp.sample_rate} Hz, the echo at {sample_rate} Hz")
    profile = range_profile(window, spec.chirp, max_depth, speed_of_sound, spec)
    return torch.cat([features, pack_range_profile(profile, size)])
