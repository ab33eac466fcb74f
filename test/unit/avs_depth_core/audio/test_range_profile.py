"""Matched filter, envelope and range profile of an echo: arrivals at known ranges are found where they are."""

from __future__ import annotations

import numpy as np
import pytest

from avs_depth_core.audio.chirp import BATVISION_CHIRP, synthesize_chirp
from avs_depth_core.audio.range_profile import (
    RangeProfileSettings,
    chirp_template,
    echo_envelope,
    first_arrival,
    lag_to_range,
    matched_filter,
    range_profile,
    range_statistics,
    strong_arrival_median,
)

FS, C = 44_100, 340.0


def echo_with_arrivals(ranges_gains: list[tuple[float, float]], n: int = 4000, direct: float = 0.5) -> np.ndarray:
    """Two ears: the chirp at lag 0 (the direct path) plus one copy per (range m, gain), delayed by 2 r / c."""
    chirp = synthesize_chirp(BATVISION_CHIRP)
    x = np.random.default_rng(0).normal(0, 1e-4, (2, n))
    x[:, :chirp.size] += direct * chirp
    for r, g in ranges_gains:
        lag = int(round(2 * r / C * FS))
        x[:, lag:lag + chirp.size] += g * chirp[:n - lag]
    return x.astype(np.float32)


def test_matched_filter_peaks_at_the_delay():
    template = chirp_template(BATVISION_CHIRP)
    assert np.sum(template ** 2) == pytest.approx(1.0)
    x = np.zeros((1, 1000))
    x[0, 300:300 + template.size] = template
    out = matched_filter(x, template)
    assert out.shape == (1, 1000) and int(np.argmax(out[0])) == 300 and out[0, 300] == pytest.approx(1.0)


def test_first_arrival_and_statistics_find_the_reflectors():
    window = echo_with_arrivals([(1.2, 0.2), (3.0, 0.1)])
    env = echo_envelope(window, BATVISION_CHIRP)
    assert lag_to_range(2 * FS / C, FS, C) == pytest.approx(1.0)
    # the direct path at lag 0 is the strongest, but lies within min_range
    assert first_arrival(env, FS, C, 0.15) == pytest.approx(1.2, abs=0.01)
    assert 1.15 < strong_arrival_median(env, FS, C, 0.15, threshold=0.3) < 3.05
    stats = range_statistics(window, BATVISION_CHIRP, C)
    assert stats.shape == (2,) and stats[0] == pytest.approx(1.2, abs=0.01)
    far = range_statistics(echo_with_arrivals([(2.4, 0.2), (6.0, 0.1)], n=8000), BATVISION_CHIRP, C)
    assert far[0] == pytest.approx(2.4, abs=0.01)  # twice the scene, twice the range
    with pytest.raises(ValueError, match="beyond"):
        first_arrival(env, FS, C, 100.0)


def test_range_profile_bins_in_metres():
    window = echo_with_arrivals([(2.0, 0.2)])
    profile = range_profile(window, BATVISION_CHIRP, max_depth=8.0, speed_of_sound=C,
                            settings=RangeProfileSettings(bins=160, log=False))
    assert profile.shape == (2, 160) and profile.dtype == np.float32
    beyond = profile[:, 4:]  # 5 cm bins; the first 0.2 m hold the direct path
    peak_m = (4 + np.argmax(beyond, axis=1) + 0.5) * 8.0 / 160
    assert peak_m == pytest.approx([2.0, 2.0], abs=0.05)
    logged = range_profile(window, BATVISION_CHIRP, 8.0, C, RangeProfileSettings(bins=160))
    assert np.all(logged >= 0) and int(np.argmax(logged[0, 4:])) == int(np.argmax(beyond[0]))
    with pytest.raises(ValueError, match="bins"):
        RangeProfileSettings(bins=2)
    with pytest.raises(ValueError, match="shorter than"):
        echo_envelope(np.zeros((2, 50)), BATVISION_CHIRP)


def test_log_spaced_bins_resolve_near_ranges_and_shift_with_the_scene():
    """spacing log: bins equal in log range over [min_range, max_depth); an arrival lands in the bin holding its range,
    and the scene twice as large moves it by log(2) / (log span / bins) bins."""
    settings = RangeProfileSettings(bins=128, log=False, spacing="log", min_range=0.25)
    edges = settings.edges(8.0)
    assert edges[0] == pytest.approx(0.25) and edges[-1] == pytest.approx(8.0)
    assert np.allclose(edges[1:] / edges[:-1], (8.0 / 0.25) ** (1 / 128))
    near = range_profile(echo_with_arrivals([(1.0, 0.2)]), BATVISION_CHIRP, 8.0, C, settings)
    far = range_profile(echo_with_arrivals([(2.0, 0.2)]), BATVISION_CHIRP, 8.0, C, settings)
    assert near.shape == (2, 128)
    k_near, k_far = int(np.argmax(near[0])), int(np.argmax(far[0]))
    assert edges[k_near] <= 1.0 < edges[k_near + 1] + 0.01 and edges[k_far] <= 2.0 < edges[k_far + 1] + 0.01
    assert abs((k_far - k_near) - np.log(2.0) / (np.log(8.0 / 0.25) / 128)) <= 1
    with pytest.raises(ValueError, match="spacing"):
        RangeProfileSettings(spacing="cubic")
    with pytest.raises(ValueError, match="min_range"):
        RangeProfileSettings(spacing="log", min_range=10.0).edges(8.0)


def test_direct_path_does_not_ring_at_the_window_end():
    """The analytic signal is taken zero-padded: a strong lag-0 arrival leaves the far end of the window quiet."""
    env = echo_envelope(echo_with_arrivals([], n=3000, direct=0.9), BATVISION_CHIRP)
    assert env[:, -300:].max() < 0.01 * env.max()


def test_pack_and_unpack_range_profile():
    from avs_depth_core.audio.features import pack_range_profile, unpack_range_profile

    profile = np.arange(2 * 40, dtype=np.float32).reshape(2, 40)
    planes = pack_range_profile(profile, (4, 16))
    assert planes.shape == (2, 4, 16) and planes[0, 2, 8:].abs().max() == 0 and planes[0, 3].abs().max() == 0
    assert planes[1, 0, 3] == 43 and planes[1, 2, 7] == 79
    assert np.array_equal(unpack_range_profile(planes[None], 40)[0].numpy(), profile)
    with pytest.raises(ValueError, match="does not fit"):
        pack_range_profile(profile, (2, 16))
