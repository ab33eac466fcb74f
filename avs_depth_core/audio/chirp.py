"""The emitted chirp. BatVision (AmandineBtto/Batvision-Dataset): a 3 ms sweep from 20 Hz to 20 kHz at 44.1 kHz (the BITD
repository's dataset/source_audio/3ms_sweep.wav is such a sweep, 132 samples)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import chirp as scipy_chirp


@dataclass(frozen=True)
class ChirpSpec:
    start_hz: float = 20.0
    end_hz: float = 20_000.0
    duration_s: float = 0.003
    sample_rate: int = 44_100
    method: str = "linear"

    def __post_init__(self) -> None:
        nyquist = self.sample_rate / 2
        if not (0 < self.start_hz < nyquist and 0 < self.end_hz <= nyquist):
            raise ValueError(f"chirp band {self.start_hz}-{self.end_hz} Hz must lie within (0, {nyquist}] Hz")
        if self.duration_s <= 0:
            raise ValueError(f"chirp duration must be positive, got {self.duration_s} s")

    @property
    def num_samples(self) -> int:
        return int(round(self.duration_s * self.sample_rate))


BATVISION_CHIRP = ChirpSpec()


def synthesize_chirp(spec: ChirpSpec = BATVISION_CHIRP, fade_samples: int = 8) -> np.ndarray:
    """The sweep as float32 in [-1, 1], with short raised-cosine fades so the speaker does not click."""
    t = np.arange(spec.num_samples) / spec.sample_rate
    wave = scipy_chirp(t, f0=spec.start_hz, t1=spec.duration_s, f1=spec.end_hz, method=spec.method, phi=-90)
    fade = min(fade_samples, spec.num_samples // 4)
    if fade:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fade))
        wave[:fade] *= ramp
        wave[-fade:] *= ramp[::-1]
    return wave.astype(np.float32)
