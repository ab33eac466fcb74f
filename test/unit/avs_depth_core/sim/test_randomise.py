"""Acoustic domain randomisation: off by default (the plain world's echoes unchanged), draws within their ranges and
from their own stream, each option doing what it says, and the YAML of ranges read with errors naming file and key."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest

from avs_depth_core.audio.echo_stats import echo_stats
from avs_depth_core.cli import main
from avs_depth_core.data.bag import bag_sequences
from avs_depth_core.sim.randomise import AcousticRanges, load_acoustic_ranges, minimum_phase_fir
from avs_depth_core.sim.world import SimWorld

ROOT = Path(__file__).resolve().parents[4]
NEUTRAL = AcousticRanges(level=(0.68, 0.68), ear_gain_db=(0, 0), limiter_threshold=(0.8, 0.8), latency_ms=(0, 0),
                         jitter_ms=(0, 0), clock_ppm=(0, 0), direct_gain=(0.07, 0.07), ear_spacing_m=(0.18, 0.18),
                         chain_tilt_db_per_octave=(0, 0), chain_highpass_hz=(20, 20), chain_lowpass_hz=(22000, 22000),
                         resonances=(0, 0), wall_low_shelf_db=(0, 0), wall_high_shelf_db=(0, 0), t60_factor=(1, 1),
                         tail_gain_db=(0, 0), ambient_noise_dbfs=(-58.4, -58.4), mic_noise_dbfs=(-70.5, -70.5),
                         hum_dbfs=(-200, -200))


def test_without_randomisation_the_echoes_are_those_recorded_before_it_existed():
    # sum |x|, sum x^2 and six samples of SimWorld(seed 3).sequence(1).echo(2), written down from the code before
    # the randomisation was added.
    golden = {"bv2": (331.3125, 33.33341979980469, [-0.03267091512680054, -0.0001696150138741359, -0.016765901818871498,
                                                    -0.033482473343610764, 0.006260471418499947, 0.007912758737802505]),
              "bv1": (284.95391845703125, 38.856666564941406, [-0.03439214453101158, 0.01798296719789505,
                                                               -0.03078410215675831, -0.03384288772940636,
                                                               0.07351356744766235, -0.04127517342567444])}
    for preset, (abs_sum, sq_sum, samples) in golden.items():
        echo = SimWorld(preset, seed=3, height=16, width=32).sequence(1).echo(2)
        assert float(np.abs(echo).sum()) == pytest.approx(abs_sum, rel=1e-5)
        assert float(np.square(echo).sum()) == pytest.approx(sq_sum, rel=1e-5)
        np.testing.assert_allclose(echo[:, [300, 1000, 2500]].ravel(), samples, rtol=1e-4, atol=1e-7)


def test_randomised_sequences_keep_their_images_and_draw_within_the_ranges():
    plain = SimWorld("bv1", seed=5, height=16, width=32).sequence(2)
    ranges = AcousticRanges()
    varied = SimWorld("bv1", seed=5, height=16, width=32, acoustic_ranges=ranges).sequence(2)
    rgb_a, depth_a = plain.render(1)
    rgb_b, depth_b = varied.render(1)
    assert np.array_equal(rgb_a, rgb_b) and np.array_equal(depth_a, depth_b, equal_nan=True)
    assert not np.allclose(plain.echo(1), varied.echo(1))
    v = varied.variation
    for name in ("level", "limiter_threshold", "latency_ms", "direct_gain", "ear_spacing_m", "t60_factor"):
        lo, hi = getattr(ranges, name)
        assert lo <= getattr(v, name) <= hi, name
    again = SimWorld("bv1", seed=5, height=16, width=32, acoustic_ranges=ranges).sequence(2)
    assert again.variation == v and np.array_equal(again.echo(1), varied.echo(1))


def measured(ranges: AcousticRanges, seq: int = 0) -> dict[str, float]:
    world = SimWorld("bv1", seed=2, height=16, width=32, acoustic_ranges=ranges)
    return echo_stats(world.sequence(seq).echo(0), 44_100, world.acoustics.pre_roll)


def test_latency_delays_the_direct_path():
    plain = measured(NEUTRAL)["direct_delay_ms"]
    late = measured(replace(NEUTRAL, latency_ms=(5.0, 5.0)))["direct_delay_ms"]
    assert late - plain == pytest.approx(5.0, abs=0.1)


def test_chain_tilt_and_noise_show_in_the_statistics():
    base = measured(NEUTRAL)
    tilted = measured(replace(NEUTRAL, chain_tilt_db_per_octave=(-6.0, -6.0)))
    assert tilted["spectral_tilt_db_per_octave"] - base["spectral_tilt_db_per_octave"] < -3.0
    noisy = measured(replace(NEUTRAL, ambient_noise_dbfs=(-45.0, -45.0)))
    assert noisy["noise_pre_dbfs"] - base["noise_pre_dbfs"] > 8.0


def test_minimum_phase_fir_follows_its_magnitude_and_starts_at_once():
    taps = 256
    freqs = np.fft.rfftfreq(2 * taps, 1 / 44_100)
    target = -6.0 * np.log2(np.maximum(freqs, 20) / 2000)
    h = minimum_phase_fir(target, taps)
    got = 20 * np.log10(np.abs(np.fft.rfft(h, 2 * taps)))
    band = (freqs > 300) & (freqs < 15_000)
    error = got[band] - target[band]
    assert abs(np.median(error)) < 3.0                       # the truncated tail of a tilt takes some of its gain
    assert np.max(np.abs(error - np.median(error))) < 1.0    # the shape, which is what colours a recording
    bump = 6.0 * np.exp(-0.5 * (np.log2(np.maximum(freqs, 20) / 2000) * 4) ** 2)   # a resonance: +6 dB at 2 kHz
    h = minimum_phase_fir(bump, taps)
    got = 20 * np.log10(np.abs(np.fft.rfft(h, 2 * taps)))
    assert np.max(np.abs(got[band] - bump[band])) < 1.0
    assert np.sum(h[:64] ** 2) > 0.9 * np.sum(h ** 2)    # within 1.5 ms: it colours without delaying


def test_the_shipped_yaml_holds_the_documented_defaults():
    assert load_acoustic_ranges(ROOT / "config" / "sim_acoustics.yaml") == AcousticRanges()
    assert {f.name for f in fields(AcousticRanges)} <= set(
        (ROOT / "config" / "sim_acoustics.yaml").read_text().replace(":", " ").split())


@pytest.mark.parametrize(("text", "message"), [
    ("latency: [0, 8]\nloudness: [1, 2]\n", "unknown key"),
    ("latency_ms: [8, 0]\n", "latency_ms: expected \\[low, high\\]"),
    ("latency_ms: 3\n", "latency_ms: expected \\[low, high\\]"),
    ("level: [0.5, 1.5]\n", "level must stay <= 1"),
    ("- 1\n", "expected a mapping"),
])
def test_bad_ranges_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "ranges.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        load_acoustic_ranges(path)
    assert str(path) in str(err.value)


def test_simulate_records_each_sequences_draw(tmp_path):
    args = ["simulate", "--preset", "bv1", "--sequences", "2", "--frames", "1", "--height", "16", "--width", "32"]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    assert main([*args, "--randomise-acoustics", "--out", str(tmp_path / "varied")]) == 0
    assert all("acoustics" not in s for s in bag_sequences(tmp_path / "plain"))
    draws = [s["acoustics"] for s in bag_sequences(tmp_path / "varied")]
    assert len(draws) == 2 and draws[0] != draws[1] and 0 <= draws[0]["latency_ms"] <= 8
    assert main([*args, "--randomise-acoustics", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "x")]) == 2
