"""SILog loss and depth metrics against hand computations (numpy), including resizing, masks, skips and bad input."""

import numpy as np
import pytest
import torch

from avs_depth_core.losses.silog import SILogLoss
from avs_depth_core.metrics import (
    METRIC_NAMES,
    SUM_METRICS,
    MetricAccumulator,
    compute_depth_metrics,
    per_image_depth_metrics,
)


def hand_silog(pred, gt, mask, alpha=10.0, lam=0.85):
    g = np.log(pred[mask] + 1e-7) - np.log(gt[mask] + 1e-7)
    return alpha * np.sqrt(np.var(g, ddof=1) + (1 - lam) * np.mean(g) ** 2)


def test_silog_matches_hand_computation_pooled_over_the_batch():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0.5, 5, (2, 1, 4, 6))
    gt = rng.uniform(0.5, 5, (2, 1, 4, 6))
    gt[0, 0, :2] = 0  # invalid pixels
    mask = gt > 0
    loss = SILogLoss()(torch.tensor(pred, dtype=torch.float32), torch.tensor(gt, dtype=torch.float32))
    assert loss.item() == pytest.approx(hand_silog(pred, gt, mask), rel=1e-5)
    explicit = np.zeros_like(mask)
    explicit[1] = True
    loss = SILogLoss()({"metric_depth": torch.tensor(pred)}, torch.tensor(gt[:, 0]), torch.tensor(explicit[:, 0]))
    assert loss.item() == pytest.approx(hand_silog(pred, gt, explicit), rel=1e-5)
    assert loss.dtype == torch.float32


def test_silog_is_scale_invariant_up_to_the_lambda_term_and_resizes():
    gt = torch.rand(1, 1, 8, 8) + 0.5
    # a constant factor only enters through (1 - lambda) * mean(g)^2: loss = 10 * sqrt(0.15) * |log 2|
    assert SILogLoss()(2 * gt, gt).item() == pytest.approx(10 * np.sqrt(0.15) * np.log(2), rel=1e-4)
    small = torch.rand(1, 1, 4, 4) + 0.5
    resized = torch.nn.functional.interpolate(small, size=(8, 8), mode="bilinear", align_corners=True)
    assert SILogLoss()(small, gt).item() == pytest.approx(SILogLoss()(resized, gt).item(), rel=1e-6)


def test_silog_errors():
    with pytest.raises(ValueError, match="empty valid mask"):
        SILogLoss()(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="pred must be"):
        SILogLoss()(torch.ones(2, 2, 2), torch.ones(2, 1, 2, 2))
    with pytest.raises(ValueError, match="mask must be a bool"):
        SILogLoss()(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2))


def hand_metrics(pred, gt, lo, hi):
    valid = (gt > lo) & (gt < hi)
    p, g = np.clip(pred, lo, hi)[valid], gt[valid]
    ratio = np.maximum(g / p, p / g)
    return {"abs_rel": np.mean(np.abs(g - p) / g), "sq_rel": np.mean((g - p) ** 2 / g), "rmse": np.sqrt(np.mean((g - p) ** 2)),
            "rmse_log": np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2)), "delta1": np.mean(ratio < 1.25),
            "delta2": np.mean(ratio < 1.25 ** 2), "delta3": np.mean(ratio < 1.25 ** 3),
            "log10": np.mean(np.abs(np.log10(g) - np.log10(p))), "mae": np.mean(np.abs(g - p)),
            "scale_log_error": abs(np.log(np.median(p) / np.median(g)))}


def test_metrics_per_image_and_pooled_by_hand():
    rng = np.random.default_rng(1)
    gt = rng.uniform(0.2, 14, (3, 1, 5, 7))
    pred = gt * rng.uniform(0.6, 1.6, gt.shape)
    pred[0, 0, 0, 0] = 40.0  # clamped to max_depth
    gt[1, 0, :3] = 0.0  # fewer valid pixels in image 1 (per-image and pooled averages differ)
    gt[2, 0, 0, 0] = np.nan
    metrics, skipped = compute_depth_metrics(torch.tensor(pred), torch.tensor(gt), 1e-3, 12.0)
    assert skipped == 0 and tuple(metrics) == METRIC_NAMES
    per_image = [hand_metrics(pred[i], gt[i], 1e-3, 12.0) for i in range(3)]
    for name in METRIC_NAMES:
        assert metrics[name] == pytest.approx(np.mean([m[name] for m in per_image]), rel=1e-9), name
    pooled, _ = compute_depth_metrics(torch.tensor(pred), torch.tensor(gt), 1e-3, 12.0, pooled=True)
    everything = hand_metrics(pred, gt, 1e-3, 12.0)
    for name in SUM_METRICS:
        assert pooled[name] == pytest.approx(everything[name], rel=1e-9), name
    assert pooled["scale_log_error"] == metrics["scale_log_error"]  # a median has no pooled form: per image
    assert pooled["abs_rel"] != pytest.approx(metrics["abs_rel"], rel=1e-6)


def test_metrics_skip_and_count_empty_images_and_resize():
    gt = torch.full((3, 8, 8), 5.0)
    gt[1] = 0.0  # no valid pixel
    gt[2] = 20.0  # beyond max_depth
    pred = torch.full((3, 1, 4, 4), 4.5)  # resized to 8x8 (a constant stays constant)
    metrics, skipped = compute_depth_metrics(pred, gt, 1e-3, 12.0)
    assert skipped == 2 and metrics["abs_rel"] == pytest.approx(0.1) and metrics["delta1"] == 1.0
    per_image, has_valid = per_image_depth_metrics(pred, gt, 1e-3, 12.0)
    assert has_valid.tolist() == [True, False, False] and torch.isnan(per_image[1]).all()
    with pytest.raises(ValueError, match="no image had valid ground truth"):
        compute_depth_metrics(pred[1:], gt[1:], 1e-3, 12.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        compute_depth_metrics(torch.full((1, 1, 2, 2), float("nan")), torch.ones(1, 2, 2), 1e-3, 12.0)
    with pytest.raises(ValueError, match="same batch"):
        compute_depth_metrics(torch.ones(2, 1, 2, 2), torch.ones(1, 2, 2), 1e-3, 12.0)


def test_accumulator_over_batches_equals_one_batch():
    rng = np.random.default_rng(2)
    gt = torch.tensor(rng.uniform(0.5, 10, (5, 1, 6, 6)))
    pred = gt * torch.tensor(rng.uniform(0.7, 1.3, gt.shape))
    gt[3] = 0.0
    acc = MetricAccumulator(1e-3, 12.0)
    rows = torch.cat([acc.update(pred[:2], gt[:2]), acc.update(pred[2:], gt[2:])])
    assert rows.shape == (5, len(METRIC_NAMES)) and acc.count == 4 and acc.skipped == 1
    whole, skipped = compute_depth_metrics(pred, gt, 1e-3, 12.0)
    assert skipped == 1
    for name, value in acc.compute().items():
        assert value == pytest.approx(whole[name], rel=1e-12)
    acc.reset()
    with pytest.raises(ValueError):
        acc.compute()


def test_scale_log_error_is_the_log_of_the_median_ratio():
    gt = torch.tensor(np.random.default_rng(3).uniform(0.5, 5.0, (2, 1, 8, 8)))
    pred = gt.clone()
    pred[0] *= 2.0  # twice too far: log 2, whatever the shape
    pred[1] = float(np.median(gt[1].numpy())) / 2  # a flat map at half the median: log 2 as well, though no pixel is right
    rows, _ = per_image_depth_metrics(pred, gt, 1e-3, 12.0)
    col = METRIC_NAMES.index("scale_log_error")
    assert rows[:, col].tolist() == pytest.approx([np.log(2.0)] * 2, rel=1e-6)
    metrics, _ = compute_depth_metrics(gt * 0.8, gt, 1e-3, 12.0)
    assert metrics["scale_log_error"] == pytest.approx(abs(np.log(0.8)), rel=1e-9)
    # the median is taken over valid pixels only: a huge error outside the valid range changes nothing
    pred2, gt2 = gt.clone() * 1.5, gt.clone()
    gt2[:, :, 0] = 0.0
    pred2[:, :, 0] = 100.0
    metrics, _ = compute_depth_metrics(pred2, gt2, 1e-3, 12.0)
    assert metrics["scale_log_error"] == pytest.approx(np.log(1.5), rel=1e-9)


def test_breakdown_by_ground_truth_median():
    near = torch.full((1, 1, 4, 4), 1.5)  # median 1.5 m: bucket 1-2 m, predicted twice too far
    far = torch.full((2, 1, 4, 4), 10.0)  # median 10 m: bucket 8-16 m, predicted exactly
    acc = MetricAccumulator(1e-3, 30.0)
    acc.update(near * 2, near)
    acc.update(far, far)
    buckets = acc.by_gt_median()
    assert [b["gt_median_m"] for b in buckets] == [[1.0, 2.0], [8.0, 16.0]]
    assert [b["images"] for b in buckets] == [1, 2]
    assert buckets[0]["scale_log_error"] == pytest.approx(np.log(2.0)) and buckets[0]["delta1"] == 0.0
    assert buckets[1]["scale_log_error"] == pytest.approx(0.0) and buckets[1]["delta1"] == 1.0
    assert acc.by_gt_median((5.0,))[1]["gt_median_m"] == [5.0, None]
    with pytest.raises(ValueError, match="increasing"):
        acc.by_gt_median((4.0, 2.0))
