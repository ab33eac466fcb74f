"""Time of flight from the echo: matched filter with the emitted chirp, its envelope, and that envelope as a range profile.

The STFT of the paper smears a round trip over a 64-sample window (1.5 ms, 25 cm of range); correlating each ear with
the emitted chirp compresses the 3 ms sweep to about one sample per arrival (3.9 mm of range at 44.1 kHz), so arrival
times, and with them distances, can be read off directly:

    window (C, n), starting at emission --xcorr with the Hann-tapered chirp--> (C, n) --|analytic signal|--> envelope
    lag k samples <-> range r = k * c / (2 * fs) metres (the round trip halved)

The taper lowers the range sidelobes of a sweep with hard edges. The direct speaker -> microphone path arrives within a
few centimetres of "range" (the rig is ~0.1 m across) and is cut by min_range where statistics are taken.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve, hilbert

from avs_depth_core.audio.chirp import BATVISION_CHIRP, ChirpSpec, synthesize_chirp


def chirp_template(chirp: ChirpSpec) -> np.ndarray:
    """The matched filter's template: the synthesised chirp under a Hann taper, unit energy, float64."""
    template = synthesize_chirp(chirp).astype(np.float64) * np.hanning(chirp.num_samples)
    return template / np.sqrt(np.sum(template ** 2))


def matched_filter(window: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Cross-correlation of every channel with the template at lags 0..n-1: out[c, k] = sum_j window[c, k + j] template[j]
    (samples past the window's end count as 0). (C, n) -> (C, n) float64."""
    window = np.atleast_2d(np.asarray(window, dtype=np.float64))
    m = len(template)
    full = fftconvolve(window, template[::-1][None], mode="full", axes=1)
    return full[:, m - 1:m - 1 + window.shape[1]]


def echo_envelope(window: np.ndarray, chirp: ChirpSpec) -> np.ndarray:
    """The matched filter's envelope (magnitude of its analytic signal) per channel: (C, n) samples from emission on."""
    if window.shape[-1] < chirp.num_samples:
        raise ValueError(f"echo window of {window.shape[-1]} samples is shorter than the {chirp.num_samples}-sample chirp")
    filtered = matched_filter(window, chirp_template(chirp))
    n = filtered.shape[-1]
    # zero-padded to twice the length: the FFT's analytic signal is circular, and the strong direct path at lag 0 would
    # otherwise ring at the window's end, where the farthest echoes lie
    return np.abs(hilbert(filtered, N=2 * n, axis=-1)[..., :n])


def lag_to_range(lag: np.ndarray | float, sample_rate: int, speed_of_sound: float) -> np.ndarray | float:
    """Round-trip lag in samples -> one-way range in metres (t * c / 2)."""
    return np.asarray(lag) * speed_of_sound / (2.0 * sample_rate)


# Nearer than this is the rig itself: the direct speaker -> microphone path and its matched-filter sidelobes.
MIN_ECHO_RANGE = 0.15


RANGE_SPACINGS = ("linear", "log")


@dataclass(frozen=True)
class RangeProfileSettings:
    """How an echo window becomes a range profile: `bins` range bins, each the mean of the matched-filter envelope (with
    `chirp` as the template) over the lags that fall into it (linear interpolation where bins are finer than samples),
    then log1p(envelope / noise floor) when log is true, so that near and far returns, 1/r^2 apart, share one scale and
    the recording's gain drops out.

    spacing "linear": equal bins over [0, max_depth). spacing "log" (a deviation option): bins equal in log range over
    [min_range, max_depth), so every bin spans the same fraction of its range (256 bins over 0.15-30 m: 2.1 % each) and
    a near room is resolved as finely, relative to its size, as a far one; equal linear bins give a 2 m scene 12 cm
    bins of a 30 m window (6 %), a 16 m scene 0.7 %. Scaling the scene then shifts the profile instead of stretching it.
    min_range defaults to MIN_ECHO_RANGE (the rig's direct path lies nearer)."""

    bins: int = 256
    log: bool = True
    chirp: ChirpSpec = BATVISION_CHIRP
    spacing: str = "linear"
    min_range: float = MIN_ECHO_RANGE

    def __post_init__(self) -> None:
        if self.bins < 8:
            raise ValueError(f"range profile: bins must be >= 8, got {self.bins}")
        if self.spacing not in RANGE_SPACINGS:
            raise ValueError(f"range profile: spacing must be one of {RANGE_SPACINGS}, got {self.spacing!r}")
        if self.min_range <= 0:
            raise ValueError(f"range profile: min_range must be positive, got {self.min_range}")

    def edges(self, max_depth: float) -> np.ndarray:
        """The bins + 1 bin edges in metres."""
        if self.spacing == "linear":
            return np.linspace(0.0, max_depth, self.bins + 1)
        if not self.min_range < max_depth:
            raise ValueError(f"range profile: min_range {self.min_range} m must lie below max_depth {max_depth} m")
        return np.geomspace(self.min_range, max_depth, self.bins + 1)


def range_profile(window: np.ndarray, chirp: ChirpSpec, max_depth: float, speed_of_sound: float,
                  settings: RangeProfileSettings = RangeProfileSettings()) -> np.ndarray:
    """(C, n) echo window starting at emission -> (C, bins) float32 envelope per range bin (settings.edges(max_depth))."""
    envelope = echo_envelope(window, chirp)
    n = envelope.shape[1]
    lags_per_metre = 2.0 * chirp.sample_rate / speed_of_sound
    edges = settings.edges(max_depth) * lags_per_metre
    # mean over each bin = difference of the cumulative integral (trapezoids) at the bin edges, divided by the width
    cumulative = np.concatenate([np.zeros((envelope.shape[0], 1)), np.cumsum(0.5 * (envelope[:, 1:] + envelope[:, :-1]),
                                                                             axis=1)], axis=1)
    lag = np.arange(n, dtype=np.float64)
    at_edges = np.stack([np.interp(edges, lag, row, right=row[-1]) for row in cumulative])
    profile = np.diff(at_edges, axis=1) / np.diff(edges)
    if settings.log:
        # the noise floor: a low percentile of the envelope (most lags hold no strong arrival)
        floor = np.maximum(np.percentile(envelope, 10, axis=1, keepdims=True), 1e-9)
        profile = np.log1p(profile / floor)
    return profile.astype(np.float32)


def first_arrival(envelope: np.ndarray, sample_rate: int, speed_of_sound: float, min_range: float,
                  threshold: float = 0.5) -> float:
    """Range (m) of the first lag beyond min_range where the envelope (summed over the ears) reaches `threshold` of its
    maximum beyond min_range: the nearest strong reflector."""
    total = np.atleast_2d(envelope).sum(0)
    start = int(np.ceil(min_range * 2.0 * sample_rate / speed_of_sound))
    if start >= len(total):
        raise ValueError(f"min_range {min_range} m lies beyond the {len(total)}-sample envelope")
    tail = total[start:]
    k = int(np.argmax(tail >= threshold * tail.max()))
    return float(lag_to_range(start + k, sample_rate, speed_of_sound))


def energy_median_range(envelope: np.ndarray, sample_rate: int, speed_of_sound: float, min_range: float) -> float:
    """Range (m) below which half of the echo energy beyond min_range arrives (envelope squared, summed over the ears)."""
    energy = (np.atleast_2d(envelope) ** 2).sum(0)
    start = int(np.ceil(min_range * 2.0 * sample_rate / speed_of_sound))
    if start >= len(energy):
        raise ValueError(f"min_range {min_range} m lies beyond the {len(energy)}-sample envelope")
    cumulative = np.cumsum(energy[start:])
    k = int(np.searchsorted(cumulative, 0.5 * cumulative[-1]))
    return float(lag_to_range(start + k, sample_rate, speed_of_sound))


def strong_arrival_median(envelope: np.ndarray, sample_rate: int, speed_of_sound: float, min_range: float,
                          threshold: float = 0.05) -> float:
    """Median range (m) of the lags beyond min_range where the envelope (summed over the ears) reaches `threshold` of its
    maximum beyond min_range: where the bulk of the distinct reflectors lie, late reverberation mostly left out."""
    total = np.atleast_2d(envelope).sum(0)
    start = int(np.ceil(min_range * 2.0 * sample_rate / speed_of_sound))
    if start >= len(total):
        raise ValueError(f"min_range {min_range} m lies beyond the {len(total)}-sample envelope")
    tail = total[start:]
    lags = start + np.flatnonzero(tail >= threshold * tail.max())
    return float(lag_to_range(np.median(lags), sample_rate, speed_of_sound))


def range_statistics(window: np.ndarray, chirp: ChirpSpec, speed_of_sound: float,
                     min_range: float = MIN_ECHO_RANGE) -> np.ndarray:
    """The echo range baseline's statistics of one (C, n) window from emission on: [first strong arrival (m), median range
    of the strong arrivals (m)], both beyond min_range."""
    envelope = echo_envelope(window, chirp)
    fs = chirp.sample_rate
    return np.array([first_arrival(envelope, fs, speed_of_sound, min_range),
                     strong_arrival_median(envelope, fs, speed_of_sound, min_range)])
