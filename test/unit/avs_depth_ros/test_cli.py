"""bringup's live summary: each published depth image scored against the simulator's ground truth (no rclpy needed)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from avs_depth_ros.cli import score_depth, summarise
from avs_depth_ros.stats import Summary


def test_score_depth_gives_abs_rel_and_scale_log_error():
    truth = np.random.default_rng(0).uniform(1.0, 6.0, (12, 16)).astype(np.float32)
    scored = score_depth(2.0 * truth, truth)
    assert scored["abs_rel"] == pytest.approx(1.0, rel=1e-5)
    assert scored["scale_log_error"] == pytest.approx(math.log(2.0), rel=1e-5)
    assert score_depth(truth, np.zeros_like(truth)) is None  # no valid ground truth


def test_summary_prints_the_scale_error():
    abs_rel, scale = Summary(), Summary()
    for a, s in ((0.1, 0.05), (0.3, 0.15)):
        abs_rel.add(a)
        scale.add(s)
    monitor = SimpleNamespace(depth_frames=4, headers_matched=4, headers_checked=4, total_latency_ms=Summary(),
                              finite_fraction=Summary(), abs_rel=abs_rel, scale_log_error=scale)
    monitor.total_latency_ms.add(20.0)
    monitor.finite_fraction.add(1.0)
    text = summarise(monitor, None, 2.0)
    assert "AbsRel against the simulator's ground truth: 0.200" in text
    assert "scale log error |log(median(depth) / median(truth))| 0.100, over 2 frames" in text
