"""Echo statistics on synthetic recordings whose answers are known: a chirp at a known sample, an exponential decay of a
known reverberation time, known interaural delays and levels, a known spectral slope, counted reflections."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import butter, sosfiltfilt

from avs_depth_core.audio.chirp import BATVISION_CHIRP, synthesize_chirp
from avs_depth_core.audio.echo_stats import (
    TRUNCATION_AVERAGE_S,
    EchoStatsSettings,
    decay_time,
    echo_stats,
    schroeder_curve,
    stat_names,
)

FS = 44_100
CHIRP = synthesize_chirp(BATVISION_CHIRP).astype(np.float64)
N = 9000


def recording(onset: int = 300, noise: float = 1e-4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = noise * rng.standard_normal((2, N))
    x[:, onset:onset + len(CHIRP)] += 0.5 * CHIRP
    return x


def test_every_statistic_is_returned_in_table_order():
    stats = echo_stats(recording(), FS)
    assert list(stats) == stat_names()


def test_direct_delay_and_level():
    stats = echo_stats(recording(onset=300), FS)
    assert stats["direct_delay_ms"] == pytest.approx(300 / FS * 1000, abs=0.15)
    assert stats["direct_level_dbfs"] == pytest.approx(20 * math.log10(0.5 * np.abs(CHIRP).max()), abs=0.2)
    later = echo_stats(recording(onset=600), FS, emission_offset=100)
    assert later["direct_delay_ms"] == pytest.approx(500 / FS * 1000, abs=0.15)


def test_noise_before_the_direct_path():
    stats = echo_stats(recording(noise=1e-3), FS)
    assert stats["noise_pre_dbfs"] == pytest.approx(-60.0, abs=1.0)


@pytest.mark.parametrize("rt60", [0.1, 0.2])   # a 0.18 s window shows a 25 dB fall of these
def test_exponential_decay_gives_its_reverberation_time(rt60):
    rng = np.random.default_rng(1)
    x = recording(noise=1e-6)
    start = 300 + len(CHIRP) + 100
    t = np.arange(N - start) / FS
    x[:, start:] += 0.2 * rng.standard_normal((2, N - start)) * np.exp(-6.91 * t / rt60)
    stats = echo_stats(x, FS)
    assert stats["rt60_broadband_s"] == pytest.approx(rt60, rel=0.1)
    assert stats["rt60_4000hz_s"] == pytest.approx(rt60, rel=0.15)
    assert stats["edt_s"] == pytest.approx(rt60, rel=0.15)


def test_schroeder_curve_of_an_exponential_is_a_straight_line():
    t = np.arange(20_000) / FS
    x = (np.random.default_rng(2).standard_normal(len(t)) * np.exp(-6.91 * t / 0.3))[None]
    curve = schroeder_curve(x, noise_power=0.0)
    assert curve[0] == 0.0
    assert decay_time(curve, FS, -5, -25) == pytest.approx(0.3, rel=0.05)
    assert math.isnan(decay_time(curve[:200], FS, -5, -25))  # too short to fall 25 dB


def test_a_band_near_its_noise_is_not_cut_by_a_noise_dip():
    """An octave band (500 Hz) decaying at 0.2 s about 15 dB above its own band-limited noise, as the real BV2 sample's
    500 Hz band: its power beats slowly, so a 1.7 ms average (n / 100 of the 30 m window) falls to the noise at the first
    dip and the decay comes out short; the 10 ms average the statistics use finds it (median of 8 noises)."""
    sos = butter(3, (354, 707), "bandpass", fs=FS, output="sos")
    n = 7400
    t = np.arange(n) / FS
    found = {74: [], int(round(TRUNCATION_AVERAGE_S * FS)): []}
    for seed in range(8):
        rng = np.random.default_rng(seed)
        noise = 0.2 * sosfiltfilt(sos, rng.standard_normal((2, n + 2000)))
        x = sosfiltfilt(sos, rng.standard_normal((2, n))) * np.exp(-6.91 * t / 0.2) + noise[:, 2000:]
        power = float(np.square(noise[:, :2000]).sum(axis=0).mean())
        for frame, out in found.items():
            out.append(decay_time(schroeder_curve(x, power, frame=frame), FS, -5, -15))
    short, long = (float(np.nanmedian(v)) for v in found.values())
    assert long == pytest.approx(0.2, rel=0.3) and short < 0.15


def test_interaural_time_and_level_differences():
    x = recording(noise=1e-6)
    x[1] = 0.5 * np.roll(x[0], 10)
    stats = echo_stats(x, FS)
    assert stats["itd_direct_us"] == pytest.approx(10 / FS * 1e6, abs=1.0)
    assert stats["ild_direct_db"] == pytest.approx(20 * math.log10(2), abs=0.1)


def test_spectral_tilt_of_a_flat_and_a_differentiated_chain():
    assert abs(echo_stats(recording(noise=1e-6), FS)["spectral_tilt_db_per_octave"]) < 0.5
    x = recording(noise=1e-6)
    x = np.concatenate([np.zeros((2, 1)), np.diff(x, axis=1)], axis=1) * 3  # a differentiator: +6 dB per octave
    assert echo_stats(x, FS)["spectral_tilt_db_per_octave"] == pytest.approx(6.0, abs=1.0)


def test_reflections_are_counted():
    x = recording(noise=1e-6)
    onset = 300
    taps = onset + len(CHIRP) + np.arange(2, 42, 2) * FS // 1000   # 20 reflections, 2 ms apart, 12 dB down
    for tap in taps:
        x[:, tap:tap + len(CHIRP)] += 0.125 * CHIRP
    window_ms = 50 - (len(CHIRP) + FS // 1000) / FS * 1000
    assert echo_stats(x, FS)["early_reflection_density"] == pytest.approx(20 / window_ms, abs=1.5 / window_ms)


def test_clipping_is_measured_in_the_window():
    x = recording()
    x[:, 2000:2100] = 1.0
    stats = echo_stats(x, FS)
    window = int(2 * 30 / 340 * FS) + len(CHIRP)
    assert stats["clipped_fraction"] == pytest.approx(100 / window, rel=1e-6)
    assert stats["peak_dbfs"] == pytest.approx(0.0, abs=1e-9)


def test_a_short_window_setting_limits_the_analysis():
    x = recording()
    x[:, 3000:3100] = 1.0   # after a 10 m window, so not counted
    assert echo_stats(x, FS, settings=EchoStatsSettings(max_depth=10.0))["clipped_fraction"] == 0.0


@pytest.mark.parametrize(("samples", "rate", "offset", "message"), [
    (np.zeros((1, N)), FS, 0, "binaural"),
    (np.full((2, N), np.nan), FS, 0, "NaN"),
    (np.zeros((2, N)), 48_000, 0, "sample rate"),
    (np.zeros((2, N)), FS, N, "outside"),
])
def test_bad_recordings_are_refused(samples, rate, offset, message):
    with pytest.raises(ValueError, match=message):
        echo_stats(samples, rate, offset)
