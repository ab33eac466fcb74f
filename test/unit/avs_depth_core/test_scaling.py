import math

import numpy as np
import pytest
import torch

from avs_depth_core.models.monodepth2 import disp_to_depth
from avs_depth_core.scaling import (
    ScaleError,
    ScaleResult,
    ScaleTracker,
    ScalingConfig,
    apply_scale,
    disparity_to_depth,
    recover_scale,
    recover_scale_batch,
)

rng = np.random.default_rng(0)
RELATIVE = rng.uniform(0.5, 3.0, (24, 32)).astype(np.float32)


def test_median_scaling_recovers_a_known_factor_exactly():
    for relative in (RELATIVE, torch.from_numpy(RELATIVE), torch.from_numpy(RELATIVE)[None, None]):
        result = recover_scale(relative, 3.5 * relative, min_pixels=10)
        assert result.method == "median" and result.fallback is None and result.ok
        assert result.scale == pytest.approx(3.5, rel=1e-6)
        assert result.pixels == RELATIVE.size
        assert result.relative_median == pytest.approx(float(np.median(RELATIVE)), rel=1e-6)
        metric = apply_scale(relative, result)
        assert type(metric) is type(relative) and metric.shape == relative.shape
        np.testing.assert_allclose(np.asarray(metric), 3.5 * np.asarray(relative), rtol=1e-5)


def test_median_follows_paper_equation_3():
    pseudo = rng.uniform(1, 10, RELATIVE.shape).astype(np.float32)
    result = recover_scale(RELATIVE, pseudo, min_pixels=10)
    assert result.scale == pytest.approx(np.median(pseudo) / np.median(RELATIVE), rel=1e-6)
    assert result.pseudo_metric_median == pytest.approx(float(np.median(pseudo)), rel=1e-6)


def test_mask_and_depth_range_are_honoured():
    pseudo = 2.0 * RELATIVE
    pseudo[:, 16:] = 30.0  # saturated at AVS-Net's BV2 max depth
    mask = np.zeros(RELATIVE.shape, bool)
    mask[:, :16] = True
    assert recover_scale(RELATIVE, pseudo, mask=mask, min_pixels=10).scale == pytest.approx(2.0)
    assert recover_scale(RELATIVE, pseudo, mask=mask, min_pixels=10).pixels == mask.sum()
    on_right = recover_scale(RELATIVE, pseudo, mask=~mask, min_pixels=10).scale
    assert on_right == pytest.approx(30.0 / np.median(RELATIVE[:, 16:]))
    # Pixels at or beyond max_depth are left out.
    assert recover_scale(RELATIVE, pseudo, max_depth=30.0, min_pixels=10).scale == pytest.approx(2.0)
    assert recover_scale(RELATIVE, pseudo, max_depth=30.0, min_pixels=10).pixels == mask.sum()
    with pytest.raises(ValueError, match="mask"):
        recover_scale(RELATIVE, pseudo, mask=mask[:, :8])


def test_median_over_shared_or_each_pixel_set():
    pseudo = 2.0 * RELATIVE
    pseudo[:12] = np.nan  # no echo estimate in the top half
    relative = RELATIVE.copy()
    relative[12:] *= 4  # the bottom half is 4x further in relative units
    shared = recover_scale(relative, pseudo, min_pixels=10)
    each = recover_scale(relative, pseudo, min_pixels=10, median_over="each")
    assert shared.scale == pytest.approx(0.5)  # 2R / 4R over the bottom half only
    assert each.scale == pytest.approx(np.median(pseudo[12:]) / np.median(relative))
    assert each.pixels == 12 * 32


def test_mean_std_and_none():
    result = recover_scale(RELATIVE, 2.0 * RELATIVE + 1.5, method="mean-std", min_pixels=10)
    assert result.scale == pytest.approx(2.0, rel=1e-6) and result.shift == pytest.approx(1.5, rel=1e-5)
    np.testing.assert_allclose(apply_scale(RELATIVE, result), 2.0 * RELATIVE + 1.5, rtol=1e-5)
    none = recover_scale(RELATIVE, None, method="none")
    assert none.scale == 1.0 and none.ok
    np.testing.assert_allclose(apply_scale(RELATIVE, none), RELATIVE)
    with pytest.raises(ScaleError, match="constant"):
        recover_scale(np.ones((24, 32)), RELATIVE, method="mean-std", min_pixels=10)


def test_zero_nan_or_too_few_pixels_raise_or_fall_back():
    assert issubclass(ScaleError, ValueError)
    with pytest.raises(ScaleError, match="pseudo-metric depth map has no finite values"):
        recover_scale(RELATIVE, np.full(RELATIVE.shape, np.nan))
    with pytest.raises(ScaleError, match=r"pseudo-metric depth map is <= 0 wherever finite \(median 0"):
        recover_scale(RELATIVE, np.zeros(RELATIVE.shape))
    with pytest.raises(ScaleError, match="relative depth map has no finite values"):
        recover_scale(np.full(RELATIVE.shape, np.nan), RELATIVE)
    few = np.full(RELATIVE.shape, np.nan, np.float32)
    few[0, :5] = 1.0
    with pytest.raises(ScaleError, match="5 usable pixels, need at least 100"):
        recover_scale(RELATIVE, few)
    with pytest.raises(ScaleError, match="no pseudo-metric map"):
        recover_scale(RELATIVE, None)
    unit = recover_scale(RELATIVE, few, fallback="unit")
    assert unit.scale == 1.0 and "5 usable pixels" in unit.fallback
    nan = recover_scale(RELATIVE, few, fallback="nan")
    assert math.isnan(nan.scale) and not nan.ok and nan.fallback
    assert np.isnan(apply_scale(RELATIVE, nan)).all()
    with pytest.raises(ValueError, match="differ in size"):
        recover_scale(RELATIVE, RELATIVE[:12])
    with pytest.raises(ValueError, match="recover_scale_batch"):
        recover_scale(np.stack([RELATIVE, RELATIVE]), np.stack([RELATIVE, RELATIVE]))


def test_batches_get_one_scale_per_image():
    relative = torch.from_numpy(np.stack([RELATIVE, RELATIVE * 2]))[:, None]
    pseudo = relative * torch.tensor([3.0, 0.5]).view(2, 1, 1, 1)
    results = recover_scale_batch(relative, pseudo, min_pixels=10)
    assert [r.scale for r in results] == pytest.approx([3.0, 0.5])
    torch.testing.assert_close(apply_scale(relative, results), pseudo)
    with pytest.raises(ValueError, match="2 scale results for a batch of 3"):
        apply_scale(torch.ones(3, 1, 4, 4), results)


def test_disparity_to_depth_kinds():
    disp = torch.tensor([0.0, 0.25, 1.0])
    torch.testing.assert_close(disparity_to_depth(disp, "monodepth2"), disp_to_depth(disp, 0.1, 100.0)[1])
    inverse = disparity_to_depth(np.array([0.5, 2.0, 0.0], np.float32))
    assert isinstance(inverse, np.ndarray)
    np.testing.assert_allclose(inverse[:2], [2.0, 0.5])
    assert inverse[2] == pytest.approx(1e6)  # zero disparity (sky) -> very far, not inf
    with pytest.raises(ValueError, match="negative"):
        disparity_to_depth(torch.tensor([-0.1, 1.0]))
    with pytest.raises(ValueError, match="NaN"):
        disparity_to_depth(torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        disparity_to_depth(torch.tensor([2.0]), "monodepth2")


def _fresh(scale: float) -> ScaleResult:
    return ScaleResult(scale, scale, 1.0, 1000, "median")


def test_tracker_smooths_in_log_space():
    tracker = ScaleTracker(alpha=0.5, hold_s=1.0)
    assert tracker.update(_fresh(2.0), 0.0).scale == pytest.approx(2.0)
    assert tracker.update(_fresh(8.0), 0.1).scale == pytest.approx(4.0)  # geometric mean with alpha 0.5
    unsmoothed = ScaleTracker(alpha=1.0)
    unsmoothed.update(_fresh(2.0), 0.0)
    assert unsmoothed.update(_fresh(8.0), 0.1).scale == 8.0


def test_tracker_holds_for_at_most_hold_s_then_reports_no_scale():
    tracker = ScaleTracker(alpha=1.0, hold_s=1.0)
    first = tracker.update(None, 0.0)
    assert not first.ok and "no fresh scale yet" in first.fallback
    tracker.update(_fresh(3.0), 1.0)
    held = tracker.update(None, 1.6)
    assert held.ok and held.held and held.held_for == pytest.approx(0.6) and held.scale == 3.0 and held.fallback == "no estimate"
    failed = recover_scale(RELATIVE, np.zeros(RELATIVE.shape), fallback="nan")
    held = tracker.update(failed, 2.0)
    assert held.held and held.scale == 3.0 and "usable pixels" in held.fallback
    expired = tracker.update(None, 2.5)
    assert not expired.ok and not expired.held and "beyond hold_s=1.0" in expired.fallback
    assert np.isnan(apply_scale(RELATIVE, expired)).all()
    # After expiry the smoothing restarts from the next fresh estimate.
    smoothing = ScaleTracker(alpha=0.5, hold_s=0.1)
    smoothing.update(_fresh(100.0), 0.0)
    smoothing.update(None, 1.0)
    assert smoothing.update(_fresh(2.0), 1.1).scale == pytest.approx(2.0)
    assert tracker.counts == {"fresh": 1, "held": 2, "none": 2}
    with pytest.raises(ValueError, match="backwards"):
        tracker.update(None, 0.5)


def test_scaling_config_validates_keys():
    config = ScalingConfig.from_dict({"method": "mean-std", "min_pixels": 10, "max_depth": 30.0})
    assert config.recover(RELATIVE, 2 * RELATIVE).scale == pytest.approx(2.0)
    assert config.tracker().hold_s == 1.0
    with pytest.raises(ValueError, match="unknown key.*'metod'"):
        ScalingConfig.from_dict({"metod": "median"})
    with pytest.raises(ValueError, match="method must be one of"):
        ScalingConfig.from_dict({"method": "mean"})
    with pytest.raises(ValueError, match="smoothing_alpha"):
        ScalingConfig(smoothing_alpha=0)
