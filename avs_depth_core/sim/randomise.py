"""Acoustic domain randomisation: per-sequence draws of what the simulator otherwise fixes about the recording chain and
the room (`avs-depth simulate --randomise-acoustics [RANGES.yaml]`, ranges in config/sim_acoustics.yaml).

Each key of AcousticRanges is a [low, high] pair; a sequence draws one value of each uniformly (log-uniformly for the
frequencies), from its own random stream, so the scene, path, images and depth are those of the plain world with the
same seed. Drawn per sequence: the speaker-microphone chain (a minimum-phase filter: tilt, high- and low-pass corners,
up to three resonances), recording level, per-ear gains and the limiter's threshold; the system latency (the sound
leaves the speaker that long after the emission mark) and the clock mismatch (echo delays stretched by it); the direct
path's strength against the echoes; absorption per band of the reflections (low and high shelves), the reverberation
time and the diffuse tail's energy; background noise, microphone noise and mains hum; the ear spacing. Drawn per
frame: a small jitter of the emission against the recording clock.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from avs_depth_core.config import read_yaml_file

Range = tuple[float, float]


@dataclass(frozen=True)
class AcousticRanges:
    """[low, high] of every randomised quantity; the defaults are config/sim_acoustics.yaml's (its comments say why)."""

    level: Range = (0.3, 0.9)                     # direct-path peak, fraction of full scale
    ear_gain_db: Range = (-2.5, 2.5)              # each ear's sensitivity
    limiter_threshold: Range = (0.75, 0.95)       # fraction of full scale (the ceiling stays 0.98)
    latency_ms: Range = (0.0, 8.0)                # emission mark to sound leaving the speaker
    jitter_ms: Range = (0.0, 0.3)                 # per frame, +- this much around the latency
    clock_ppm: Range = (-500.0, 500.0)            # recording clock against the playback clock
    direct_gain: Range = (0.04, 0.2)              # direct path relative to 1/r spreading (BinauralRig.direct_gain)
    ear_spacing_m: Range = (0.12, 0.3)
    chain_tilt_db_per_octave: Range = (-7.0, 1.0)  # around 2 kHz
    chain_highpass_hz: Range = (80.0, 600.0)
    chain_lowpass_hz: Range = (9000.0, 20000.0)
    resonances: Range = (0.0, 3.99)               # how many (rounded down)
    resonance_hz: Range = (300.0, 8000.0)
    resonance_gain_db: Range = (-6.0, 9.0)
    resonance_q: Range = (0.7, 4.0)
    wall_low_shelf_db: Range = (-4.0, 2.0)        # reflections below 500 Hz
    wall_high_shelf_db: Range = (-10.0, 0.0)      # reflections above 4 kHz
    t60_factor: Range = (0.25, 2.0)               # times the scene's Sabine reverberation time
    tail_gain_db: Range = (-10.0, 4.0)            # diffuse tail energy
    ambient_noise_dbfs: Range = (-66.0, -44.0)    # low-frequency background, RMS
    mic_noise_dbfs: Range = (-84.0, -66.0)        # white self-noise, RMS
    hum_dbfs: Range = (-90.0, -55.0)              # mains hum fundamental, RMS
    hum_hz: Range = (50.0, 60.0)                  # drawn as one of the two ends

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if (not isinstance(value, tuple) or len(value) != 2
                    or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value) or value[0] > value[1]):
                raise ValueError(f"{f.name}: expected [low, high] with low <= high, got {value!r}")
        positive = ("level", "limiter_threshold", "direct_gain", "ear_spacing_m", "chain_highpass_hz", "chain_lowpass_hz",
                    "resonance_hz", "resonance_q", "t60_factor", "hum_hz")
        for name in positive:
            if getattr(self, name)[0] <= 0:
                raise ValueError(f"{name}: must be positive, got {list(getattr(self, name))}")
        for name in ("latency_ms", "jitter_ms", "resonances"):
            if getattr(self, name)[0] < 0:
                raise ValueError(f"{name}: must be >= 0, got {list(getattr(self, name))}")
        if self.level[1] > 1 or self.limiter_threshold[1] >= 0.98:
            raise ValueError("level must stay <= 1 and limiter_threshold < 0.98 (the limiter's ceiling)")


def load_acoustic_ranges(path: str | Path) -> AcousticRanges:
    """AcousticRanges from a YAML mapping of key: [low, high]; keys left out keep their defaults. Errors name the file
    and the key."""
    raw = read_yaml_file(path, "acoustic ranges") or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of key: [low, high], got {type(raw).__name__}")
    known = {f.name for f in fields(AcousticRanges)}
    unknown = sorted(set(raw) - known, key=str)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    values = {}
    for key, value in raw.items():
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError(f"{path}: {key}: expected [low, high], got {value!r}")
        values[key] = tuple(value)
    try:
        return AcousticRanges(**values)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


@dataclass(frozen=True)
class AcousticVariation:
    """One sequence's draw (see AcousticRanges for the meaning of each)."""

    level: float
    ear_gain: tuple[float, float]
    limiter_threshold: float
    latency_ms: float
    jitter_ms: float
    clock_ppm: float
    direct_gain: float
    ear_spacing_m: float
    chain_tilt_db_per_octave: float
    chain_highpass_hz: float
    chain_lowpass_hz: float
    resonances: tuple[tuple[float, float, float], ...]   # (Hz, dB, Q)
    wall_low_shelf_db: float
    wall_high_shelf_db: float
    t60_factor: float
    tail_gain_db: float
    ambient_noise: float     # RMS, full scale = 1
    mic_noise: float
    hum: float
    hum_hz: float

    def describe(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _uniform(rng: np.random.Generator, r: Range) -> float:
    return float(rng.uniform(r[0], r[1])) if r[1] > r[0] else float(r[0])


def _log_uniform(rng: np.random.Generator, r: Range) -> float:
    return float(math.exp(_uniform(rng, (math.log(r[0]), math.log(r[1])))))


def draw_variation(ranges: AcousticRanges, rng: np.random.Generator) -> AcousticVariation:
    u = lambda r: _uniform(rng, r)  # noqa: E731
    count = min(int(u(ranges.resonances)), 3)
    resonances = tuple((_log_uniform(rng, ranges.resonance_hz), u(ranges.resonance_gain_db), u(ranges.resonance_q))
                       for _ in range(count))
    return AcousticVariation(
        level=u(ranges.level), ear_gain=(10 ** (u(ranges.ear_gain_db) / 20), 10 ** (u(ranges.ear_gain_db) / 20)),
        limiter_threshold=u(ranges.limiter_threshold), latency_ms=u(ranges.latency_ms), jitter_ms=u(ranges.jitter_ms),
        clock_ppm=u(ranges.clock_ppm), direct_gain=_log_uniform(rng, ranges.direct_gain),
        ear_spacing_m=u(ranges.ear_spacing_m), chain_tilt_db_per_octave=u(ranges.chain_tilt_db_per_octave),
        chain_highpass_hz=_log_uniform(rng, ranges.chain_highpass_hz),
        chain_lowpass_hz=_log_uniform(rng, ranges.chain_lowpass_hz), resonances=resonances,
        wall_low_shelf_db=u(ranges.wall_low_shelf_db), wall_high_shelf_db=u(ranges.wall_high_shelf_db),
        t60_factor=_log_uniform(rng, ranges.t60_factor), tail_gain_db=u(ranges.tail_gain_db),
        ambient_noise=10 ** (u(ranges.ambient_noise_dbfs) / 20), mic_noise=10 ** (u(ranges.mic_noise_dbfs) / 20),
        hum=10 ** (u(ranges.hum_dbfs) / 20), hum_hz=ranges.hum_hz[int(rng.integers(0, 2))])


def minimum_phase_fir(gain_db: np.ndarray, taps: int) -> np.ndarray:
    """A minimum-phase FIR (taps long) whose magnitude follows gain_db on np.fft.rfftfreq(2 * taps) (homomorphic
    method: fold the real cepstrum of the log magnitude onto positive quefrencies). Minimum phase keeps the filter's
    energy at its start, so it colours a recording without delaying it."""
    n = 2 * taps
    log_mag = np.log(10 ** (np.asarray(gain_db, dtype=np.float64) / 20))
    cepstrum = np.fft.irfft(log_mag, n)
    fold = np.zeros(n)
    fold[0], fold[n // 2] = cepstrum[0], cepstrum[n // 2]
    fold[1:n // 2] = 2 * cepstrum[1:n // 2]
    h = np.fft.irfft(np.exp(np.fft.rfft(fold)), n)[:taps]
    return h * np.hanning(2 * taps)[taps:]  # fade the last taps: the truncation must not ring


def chain_gain_db(v: AcousticVariation, freqs: np.ndarray) -> np.ndarray:
    """The speaker-microphone chain's magnitude in dB: tilt about 2 kHz, 2nd-order high- and low-pass corners,
    resonances as log-frequency Gaussian bumps of width 1/Q octaves."""
    f = np.maximum(freqs, 1.0)
    octaves = np.log2(f / 2000.0)
    gain = v.chain_tilt_db_per_octave * octaves
    gain += -10 * np.log10(1 + (v.chain_highpass_hz / f) ** 4) - 10 * np.log10(1 + (f / v.chain_lowpass_hz) ** 4)
    for hz, db, q in v.resonances:
        gain += db * np.exp(-0.5 * (np.log2(f / hz) * q * 2) ** 2)
    return gain


def wall_gain_db(v: AcousticVariation, freqs: np.ndarray) -> np.ndarray:
    """Absorption per band of the reflections: a low shelf (below 500 Hz) and a high shelf (above 4 kHz), smooth over an
    octave."""
    f = np.maximum(freqs, 1.0)
    low = 1 / (1 + (f / 500.0) ** 2)
    high = 1 / (1 + (4000.0 / f) ** 2)
    return v.wall_low_shelf_db * low + v.wall_high_shelf_db * high


def hum(v: AcousticVariation, samples: int, fs: int, rng: np.random.Generator) -> np.ndarray:
    """(2, samples) mains hum: the fundamental at v.hum RMS with its 2nd and 3rd harmonics 6 and 10 dB down, the same in
    both ears (it comes through the shared power supply), random phases."""
    t = np.arange(samples) / fs
    wave = np.zeros(samples)
    for k, rel_db in ((1, 0.0), (2, -6.0), (3, -10.0)):
        wave += math.sqrt(2) * v.hum * 10 ** (rel_db / 20) * np.sin(2 * np.pi * k * v.hum_hz * t + rng.uniform(0, 2 * np.pi))
    return np.stack([wave, wave])
