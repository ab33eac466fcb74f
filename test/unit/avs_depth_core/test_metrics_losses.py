"""SILog loss and depth metrics against hand computations (numpy), including resizing, masks, skips and bad input."""

import numpy as np
import pytest
import torch

from avs_depth_core.losses.silog import SILogLoss
from avs_depth_core.metrics import METRIC_NAMES, MetricAccumulator, compute_depth_metrics, per_image_depth_metrics


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
            "log10": np.mean(np.abs(np.log10(g) - np.log10(p))), "mae": np.mean(np.abs(g - p))}


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
    for name in METRIC_NAMES:
        assert pooled[name] == pytest.approx(everything[name], rel=1e-9), name
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
