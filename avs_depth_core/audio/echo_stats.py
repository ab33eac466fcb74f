"""Statistics of one binaural chirp recording, to compare recorded echoes with simulated ones (`avs-depth echo-stats`).

Every statistic is measured in the window the models see: from the emission (sample `emission_offset`) to the round
trip to `max_depth` plus one chirp; the noise before the direct path is measured on the samples before it.

- direct_delay_ms: from the emission to the direct path's onset (the first sample whose magnitude reaches 10 % of the
  direct path's peak), i.e. the system latency plus the speaker-to-microphone flight time.
- direct_level_dbfs: peak of the direct path (mean of the ears), dB re full scale.
- early_reflection_density: reflections per millisecond between the end of the direct chirp and 50 ms after the onset:
  local maxima of the matched-filter envelope (the recording correlated with the chirp) at least 0.3 ms apart and
  within 30 dB of the direct path's matched peak.
- edt_s, rt60_<f>hz_s, rt60_broadband_s: energy decay from Schroeder's backward integration (ISO 3382-1) of the squared
  signal after the direct chirp, less the noise power (decay_noise). EDT: the 0 to -10 dB slope; RT60: the
  -5 to -25 dB slope (T20), or -5 to -15 dB (T10) where the window does not reach -25 dB, as 60 dB of decay; NaN where
  neither is reached (a long reverberation in a short window).
- spectral_tilt_db_per_octave: the slope of the direct path's octave-band levels over log2 frequency, after dividing
  out the emitted chirp's own band levels: the speaker-microphone chain's tilt.
- noise_pre_dbfs: RMS before the direct path (NaN with fewer than 64 samples there); floor_dbfs: the 10th percentile of
  5 ms frame RMS in the window after the direct path.
- ild_direct_db, ild_echo_db: left over right RMS level in the direct path, and in the early echoes (from the end of
  the direct chirp to 50 ms after its onset, above 500 Hz, so low-frequency noise both ears share does not count).
- itd_direct_us, itd_echo_us: lag of the right ear behind the left at the cross-correlation peak within +-1 ms, in the
  same two segments.
- clipped_fraction: the largest share of samples at or above 0.999 of full scale over the channels; peak_dbfs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, fftconvolve, find_peaks, hilbert, sosfiltfilt

from avs_depth_core.audio.chirp import BATVISION_CHIRP, ChirpSpec, synthesize_chirp
from avs_depth_core.audio.window import echo_window_samples

OCTAVE_BANDS_HZ = (500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0)
TILT_BANDS_HZ = (500.0, 1000.0, 2000.0, 4000.0, 8000.0)
ONSET_FRACTION = 0.1
REFLECTION_RANGE_DB = 30.0
REFLECTION_SPACING_S = 3e-4
REFLECTION_SMOOTH_S = 2.5e-4
EARLY_WINDOW_S = 0.05
MAX_ITD_S = 1e-3
CLIP_LEVEL = 0.999
# The power is averaged over 10 ms before it is compared with the noise for the truncation (Lundeby et al., Acta
# Acustica 1995: 10-50 ms intervals). n / 100 of the 30 m window (1.7 ms) let one noise dip cut a band's curve within a
# few ms: the real BV2 sample's 500 Hz band gave 0.008 s, 0.21-0.23 s with 5-20 ms.
TRUNCATION_AVERAGE_S = 0.01
MIN_DECAY_SNR = 10.0   # 10 dB between a band's early echo power and its noise, else no decay time


@dataclass(frozen=True)
class EchoStatsSettings:
    """max_depth, speed_of_sound: the analysis window (BatVision's cut, as the models see it); direct_search_s: how long
    after the emission the direct path is sought (the real BV2 sample's arrives 6.5 ms after its emission mark)."""

    max_depth: float = 30.0
    speed_of_sound: float = 340.0
    direct_search_s: float = 0.02
    chirp: ChirpSpec = BATVISION_CHIRP
    decay_bands_hz: tuple[float, ...] = OCTAVE_BANDS_HZ
    tilt_bands_hz: tuple[float, ...] = TILT_BANDS_HZ


def stat_names(settings: EchoStatsSettings = EchoStatsSettings()) -> list[str]:
    """The statistics echo_stats returns, in table order."""
    bands = [f"rt60_{int(f)}hz_s" for f in settings.decay_bands_hz]
    return ["direct_delay_ms", "direct_level_dbfs", "early_reflection_density", "edt_s", "rt60_broadband_s", *bands,
            "spectral_tilt_db_per_octave", "noise_pre_dbfs", "floor_dbfs", "ild_direct_db", "ild_echo_db",
            "itd_direct_us", "itd_echo_us", "clipped_fraction", "peak_dbfs"]


def db(x: float | np.ndarray) -> float | np.ndarray:
    return 20 * np.log10(np.maximum(x, 1e-12))


def envelope(x: np.ndarray, fs: int, smooth_s: float = 2.5e-4) -> np.ndarray:
    """Hilbert magnitude, moving-average smoothed; (channels, n) -> (channels, n)."""
    env = np.abs(hilbert(x, axis=-1))
    width = max(1, int(round(smooth_s * fs)))
    kernel = np.ones(width) / width
    return np.apply_along_axis(lambda row: np.convolve(row, kernel, mode="same"), -1, env)


@dataclass(frozen=True)
class DirectPath:
    onset: int   # sample index in the recording
    end: int     # onset + chirp + 2 ms
    peak: float  # mean over ears of |x| peak


def find_direct_path(x: np.ndarray, fs: int, emission_offset: int, settings: EchoStatsSettings) -> DirectPath:
    """The direct path: the strongest envelope peak within direct_search_s after the emission, its onset the first
    sample whose magnitude (either ear) reaches ONSET_FRACTION of the direct path's peak magnitude."""
    search_end = min(x.shape[1], emission_offset + int(settings.direct_search_s * fs))
    if search_end - emission_offset < 8:
        raise ValueError(f"recording of {x.shape[1]} samples has no room for a direct path after emission sample "
                         f"{emission_offset}")
    env = envelope(x, fs).mean(axis=0)[emission_offset:search_end]
    peak_at = int(np.argmax(env))
    # The onset on the raw samples: a Hilbert envelope leaks ahead of a sweep's start.
    magnitude = np.abs(x[:, emission_offset:search_end]).max(axis=0)
    top = magnitude[: peak_at + settings.chirp.num_samples].max()
    onset = emission_offset + int(np.argmax(magnitude >= ONSET_FRACTION * top))
    end = min(x.shape[1], onset + settings.chirp.num_samples + int(0.002 * fs))
    peak = float(np.abs(x[:, onset:end]).max(axis=1).mean())
    return DirectPath(onset, end, peak)


def matched_envelope(x: np.ndarray, chirp: np.ndarray, fs: int) -> np.ndarray:
    """Envelope of the recording correlated with the chirp, aligned so a copy of the chirp starting at sample k peaks at k,
    smoothed over REFLECTION_SMOOTH_S so the compressed chirp's sidelobes (spaced 1 / bandwidth) make no peaks of their
    own."""
    corr = fftconvolve(x, chirp[::-1][None], axes=1)[:, len(chirp) - 1:]
    return envelope(corr, fs, REFLECTION_SMOOTH_S)


def reflection_density(x: np.ndarray, fs: int, direct: DirectPath, chirp: np.ndarray, stop: int) -> float:
    """Reflections per ms after the direct chirp (see the module docstring); mean of the ears."""
    env = matched_envelope(x, chirp, fs)
    start = direct.onset + len(chirp) + int(0.001 * fs)
    stop = min(stop, direct.onset + int(EARLY_WINDOW_S * fs))
    if stop - start < int(0.005 * fs):
        return math.nan
    ref = env[:, direct.onset:direct.onset + len(chirp)].max(axis=1)
    counts = []
    for ch in range(env.shape[0]):
        height = ref[ch] * 10 ** (-REFLECTION_RANGE_DB / 20)
        peaks, _ = find_peaks(env[ch, start:stop], height=height, distance=max(1, int(REFLECTION_SPACING_S * fs)))
        counts.append(len(peaks))
    return float(np.mean(counts) / ((stop - start) / fs * 1000))


def _highpass(x: np.ndarray, fs: int, corner_hz: float = 500.0) -> np.ndarray:
    return sosfiltfilt(butter(3, corner_hz, "highpass", fs=fs, output="sos"), x, axis=-1)


def _band(x: np.ndarray, fs: int, centre: float | None) -> np.ndarray:
    if centre is None:
        return x
    lo, hi = centre / math.sqrt(2), min(centre * math.sqrt(2), 0.45 * fs)
    if lo >= hi:
        return np.zeros_like(x)
    return sosfiltfilt(butter(3, (lo, hi), "bandpass", fs=fs, output="sos"), x, axis=-1)


def schroeder_curve(x: np.ndarray, noise_power: float | None = None, frame: int | None = None) -> np.ndarray:
    """Energy decay curve in dB (0 at the start) of (channels, n) samples, summed over channels: backward integration of
    the squared signal less the noise power (per sample, summed over channels; default the mean of the last tenth),
    truncated where the power, averaged over `frame` samples (default n / 100), first falls to that noise level (Chu's
    subtraction with a plain truncation); all NaN where the early power is less than MIN_DECAY_SNR times the noise."""
    energy = np.square(x).sum(axis=0)
    n = len(energy)
    noise = float(energy[int(n * 0.9):].mean()) if noise_power is None else float(noise_power)
    frame = max(1, n // 100) if frame is None else max(1, int(frame))
    smooth = np.convolve(energy, np.ones(frame) / frame, mode="same")
    below = np.nonzero(smooth <= noise)[0]
    cut = int(below[0]) if len(below) and below[0] > 0 else n
    if smooth[: max(frame, n // 10)].max() < MIN_DECAY_SNR * max(noise, 1e-30):
        return np.full(n, np.nan)  # the band holds too little of the chirp to show a decay above its noise
    edc = np.cumsum((energy[:cut] - noise)[::-1])[::-1]
    edc = np.maximum(edc, edc[0] * 1e-12 if edc[0] > 0 else 1e-30)
    curve = np.full(n, np.nan)
    curve[:cut] = 10 * np.log10(edc / edc[0]) if edc[0] > 0 else np.nan
    return curve


def decay_time(curve: np.ndarray, fs: int, top_db: float, bottom_db: float) -> float:
    """60 dB over the least-squares slope of the decay curve between top_db and bottom_db (negative numbers), in s;
    NaN where the curve does not reach bottom_db."""
    valid = np.isfinite(curve)
    if not valid.any() or np.nanmin(curve) > bottom_db:
        return math.nan
    start = int(np.argmax(valid & (curve <= top_db)))
    stop = int(np.argmax(valid & (curve <= bottom_db)))
    if stop - start < 3:
        return math.nan
    t = np.arange(start, stop + 1) / fs
    slope = np.polyfit(t, curve[start:stop + 1], 1)[0]
    return float(-60.0 / slope) if slope < 0 else math.nan


def reverberation_times(x: np.ndarray, fs: int, direct: DirectPath, stop: int,
                        settings: EchoStatsSettings) -> dict[str, float]:
    """EDT and RT60 (T20, else T10) broadband and per octave band, from the end of the direct chirp to `stop` (the direct
    path would otherwise dominate the energy and its own short ringing the slope)."""
    out: dict[str, float] = {}
    for centre in (None, *settings.decay_bands_hz):
        band = _band(x, fs, centre)
        curve = schroeder_curve(band[:, direct.end:stop], decay_noise(band, fs, direct, stop),
                                frame=int(round(TRUNCATION_AVERAGE_S * fs)))
        rt = decay_time(curve, fs, -5.0, -25.0)
        if math.isnan(rt):
            rt = decay_time(curve, fs, -5.0, -15.0)
        if centre is None:
            out["edt_s"] = decay_time(curve, fs, 0.0, -10.0)
            out["rt60_broadband_s"] = rt
        else:
            out[f"rt60_{int(centre)}hz_s"] = rt
    return out


def decay_noise(band: np.ndarray, fs: int, direct: DirectPath, stop: int) -> float:
    """Noise power per sample (summed over channels) under a decay: the lower of the power before the direct path (where
    64 samples or more lie before it) and of the window's last tenth. The last tenth alone would take a reverberation
    longer than the window for noise."""
    energy = np.square(band).sum(axis=0)
    tail = float(energy[stop - max(1, (stop - direct.end) // 10):stop].mean())
    pre = energy[: max(0, direct.onset - int(0.001 * fs))]
    return min(tail, float(pre.mean())) if len(pre) >= 64 else tail


def band_levels(x: np.ndarray, fs: int, bands_hz: tuple[float, ...]) -> np.ndarray:
    """Power in each octave band of an (n,) or (channels, n) segment, dB, summed over channels. No taper: the segment holds
    the whole chirp, and a taper would weight the sweep's frequencies by where they fall in the segment."""
    x = np.atleast_2d(x)
    spectrum = np.square(np.abs(np.fft.rfft(x, n=max(4096, x.shape[1]), axis=1))).sum(axis=0)
    freqs = np.fft.rfftfreq(max(4096, x.shape[1]), 1 / fs)
    out = []
    for centre in bands_hz:
        sel = (freqs >= centre / math.sqrt(2)) & (freqs < centre * math.sqrt(2))
        out.append(10 * math.log10(max(float(spectrum[sel].sum()), 1e-30)))
    return np.array(out)


def spectral_tilt(x: np.ndarray, fs: int, direct: DirectPath, chirp: np.ndarray, bands_hz: tuple[float, ...]) -> float:
    """dB per octave of the direct path's band levels relative to the chirp's (least squares over log2 frequency)."""
    start = max(0, direct.onset - int(0.0005 * fs))
    segment = x[:, start:direct.end]
    reference = np.pad(chirp, (int(0.0005 * fs), max(0, segment.shape[1] - len(chirp) - int(0.0005 * fs))))
    relative = band_levels(segment, fs, bands_hz) - band_levels(reference[: segment.shape[1]], fs, bands_hz)
    return float(np.polyfit(np.log2(np.asarray(bands_hz)), relative, 1)[0])


def interaural(segment: np.ndarray, fs: int) -> tuple[float, float]:
    """(level difference left/right dB, time difference us: right's lag behind left at the correlation peak)."""
    left, right = segment[0], segment[1]
    ild = float(db(np.sqrt(np.mean(left ** 2))) - db(np.sqrt(np.mean(right ** 2))))
    max_lag = int(MAX_ITD_S * fs)
    corr = fftconvolve(right, left[::-1])            # index len(left) - 1 is lag 0
    zero = len(left) - 1
    window = corr[zero - max_lag: zero + max_lag + 1]
    lag = int(np.argmax(window)) - max_lag
    return ild, float(lag / fs * 1e6)


def noise_and_floor(x: np.ndarray, fs: int, direct: DirectPath, stop: int) -> tuple[float, float]:
    pre = x[:, : max(0, direct.onset - int(0.001 * fs))]
    noise_pre = float(db(np.sqrt(np.mean(pre ** 2)))) if pre.shape[1] >= 64 else math.nan
    frame = int(0.005 * fs)
    after = x[:, direct.end:stop]
    frames = after[:, : after.shape[1] // frame * frame].reshape(x.shape[0], -1, frame)
    if frames.shape[1] == 0:
        return noise_pre, math.nan
    rms = np.sqrt(np.mean(frames ** 2, axis=(0, 2)))
    return noise_pre, float(db(np.percentile(rms, 10)))


def echo_stats(samples: np.ndarray, sample_rate: int, emission_offset: int = 0,
               settings: EchoStatsSettings = EchoStatsSettings()) -> dict[str, float]:
    """The statistics of the module docstring for one binaural (2, n) recording in [-1, 1]; NaN where one cannot be
    measured. Raises ValueError for a recording that is not binaural or holds no window after the emission."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != 2:
        raise ValueError(f"echo statistics need a binaural (2, n) recording, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("echo holds NaN or inf samples")
    if sample_rate != settings.chirp.sample_rate:
        raise ValueError(f"sample rate {sample_rate} Hz differs from the chirp's {settings.chirp.sample_rate} Hz")
    if not 0 <= emission_offset < x.shape[1]:
        raise ValueError(f"emission offset {emission_offset} lies outside the {x.shape[1]}-sample recording")
    fs = int(sample_rate)
    chirp = synthesize_chirp(settings.chirp).astype(np.float64)
    stop = min(x.shape[1], emission_offset + echo_window_samples(settings.max_depth, fs, settings.speed_of_sound)
               + len(chirp))
    direct = find_direct_path(x, fs, emission_offset, settings)
    stats: dict[str, float] = {
        "direct_delay_ms": (direct.onset - emission_offset) / fs * 1000,
        "direct_level_dbfs": float(db(direct.peak)),
        "early_reflection_density": reflection_density(x, fs, direct, chirp, stop),
    }
    stats.update(reverberation_times(x, fs, direct, stop, settings))
    stats["spectral_tilt_db_per_octave"] = spectral_tilt(x, fs, direct, chirp, settings.tilt_bands_hz)
    stats["noise_pre_dbfs"], stats["floor_dbfs"] = noise_and_floor(x, fs, direct, stop)
    stats["ild_direct_db"], stats["itd_direct_us"] = interaural(x[:, direct.onset:direct.end], fs)
    early_stop = min(stop, direct.onset + int(EARLY_WINDOW_S * fs))
    early = _highpass(x, fs)[:, direct.end:early_stop]
    stats["ild_echo_db"], stats["itd_echo_us"] = interaural(early, fs) if early.shape[1] > 64 else (math.nan, math.nan)
    window = x[:, emission_offset:stop]
    stats["clipped_fraction"] = float((np.abs(window) >= CLIP_LEVEL).mean(axis=1).max())
    stats["peak_dbfs"] = float(db(np.abs(window).max()))
    return {name: float(stats[name]) for name in stat_names(settings)}
