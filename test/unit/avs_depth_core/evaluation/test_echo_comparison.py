"""Recorded statistics against a simulated distribution: the 5-95 % verdicts, the distance selection and the report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from avs_depth_core.audio.chirp import BATVISION_CHIRP, synthesize_chirp
from avs_depth_core.audio.echo_stats import EchoStatsSettings
from avs_depth_core.data.echo_sources import EchoRecord
from avs_depth_core.evaluation.echo_comparison import build_report, compare, format_table, write_report


def test_compare_marks_values_inside_and_outside_the_simulated_range():
    simulated = [{"a": float(v), "b": float(v), "c": math.nan} for v in range(101)]   # 5 % = 5, 95 % = 95
    rows = compare([{"a": 50.0, "b": 99.0, "c": 1.0}], simulated, ["a", "b", "c"])
    assert [(r.name, r.inside) for r in rows] == [("a", True), ("b", False), ("c", None)]
    assert rows[0].sim_p5 == pytest.approx(5.0) and rows[0].sim_p95 == pytest.approx(95.0) and rows[0].sim_count == 101
    assert rows[2].sim_count == 0
    assert "1 of 2 statistics inside" in format_table(rows)


def echo(delay: int, depth: float, seed: int) -> EchoRecord:
    rng = np.random.default_rng(seed)
    x = 1e-3 * rng.standard_normal((2, 9000))
    chirp = synthesize_chirp(BATVISION_CHIRP)
    x[:, delay:delay + len(chirp)] += 0.6 * chirp
    x[:, delay + 600:delay + 600 + len(chirp)] += 0.1 * chirp
    return EchoRecord(f"echo{seed}", x.astype(np.float32), 44_100, 0, depth)


def test_report_selects_simulated_echoes_by_distance_and_writes_its_files(tmp_path):
    recorded = [echo(300, 1.0, 0)]
    simulated = [echo(20, 1.0 + 0.1 * k, k + 1) for k in range(10)] + [echo(300, 9.0, 99)]
    report = build_report(recorded, simulated, EchoStatsSettings(), distance_range=(0.5, 2.5))
    assert len(report.simulated) == 10
    delay = next(r for r in report.rows if r.name == "direct_delay_ms")
    assert delay.inside is False and delay.recorded == pytest.approx(300 / 44.1, abs=0.1)
    written = write_report(tmp_path / "out", report)
    assert sorted(p.name for p in written) == ["echo_stats.json", "echoes_0.png", "stats_vs_sim.png", "table.txt"]
    data = json.loads((tmp_path / "out" / "echo_stats.json").read_text())
    assert data["simulated_count"] == 10 and data["recorded"][0]["depth_median_m"] == 1.0


def test_no_simulated_echo_at_the_distance_is_an_error():
    with pytest.raises(ValueError, match="no simulated echo within --distance-range"):
        build_report([echo(300, 1.0, 0)], [echo(20, 9.0, 1)], EchoStatsSettings(), distance_range=(0.5, 2.0))


def test_recordings_shorter_than_the_window_are_refused_with_the_depth_that_fits():
    short = EchoRecord("short", echo(300, 1.0, 0).samples[:, :3000], 44_100, 0, 1.0)
    with pytest.raises(ValueError, match="short: 3000 samples after the emission.*--max-depth 11 or less"):
        build_report([echo(300, 1.0, 0)], [short], EchoStatsSettings())
    assert build_report([echo(300, 1.0, 0)], [short], EchoStatsSettings(max_depth=11.0)).rows
