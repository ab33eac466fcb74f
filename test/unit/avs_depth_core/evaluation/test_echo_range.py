"""The non-learned echo range baseline: calibration, per-image scaling and the whole row on a bag with known walls."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from avs_depth_core.audio.chirp import BATVISION_CHIRP
from avs_depth_core.data.datasets import SupervisedBagDataset
from avs_depth_core.evaluation.echo_range import (
    EchoRangeCalibration,
    bag_chirp,
    calibrate,
    dataset_statistics,
    evaluate_echo_range,
    scale_to_median,
)


def test_calibration_recovers_a_log_linear_law():
    rng = np.random.default_rng(0)
    stats = rng.uniform(0.3, 5.0, (40, 2))
    medians = np.exp(0.4) * stats[:, 0] ** 0.7 * stats[:, 1] ** 0.2
    cal = EchoRangeCalibration.fit(stats, medians)
    assert cal.weights == pytest.approx((0.4, 0.7, 0.2), abs=1e-9)
    assert cal.median_depth(stats[:3]) == pytest.approx(medians[:3])
    with pytest.raises(ValueError, match="N > k"):
        EchoRangeCalibration.fit(stats[:3], medians[:3])
    with pytest.raises(ValueError, match="positive"):
        EchoRangeCalibration.fit(-stats, medians)
    with pytest.raises(ValueError, match="weights"):
        cal.median_depth(np.ones((2, 3)))


def test_scale_to_median_sets_each_image_median():
    pred = torch.stack([torch.linspace(1, 3, 20), torch.linspace(2, 10, 20)]).view(2, 1, 4, 5)
    out = scale_to_median(pred, torch.tensor([4.0, 1.0]), 1e-3, 12.0)
    assert out.flatten(1).quantile(0.5, dim=1).tolist() == pytest.approx([4.0, 1.0])
    assert torch.allclose(out[0] / pred[0], out[0, 0, 0, 0] / pred[0, 0, 0, 0])  # shape kept: one factor per image


class FlatRGB(torch.nn.Module):
    """An 'Only-RGB network' that predicts 1 m everywhere: any metric scale must come from the echo."""

    cfg = SimpleNamespace(use_echo=False)

    def forward(self, rgb: torch.Tensor, echo: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return {"metric_depth": torch.ones_like(rgb[:, :1])}


def test_echo_range_row_on_walls_at_known_distances(tmp_path, tiny_bag):
    """TinyBag: frame i is a wall at d_i with its echo 2 d_i / c after emission; the baseline must find d_i."""
    bag = tiny_bag.write(tmp_path / "bag", {"train": 8, "test": 4}, seed=3)
    assert bag_chirp(bag) == BATVISION_CHIRP

    def windows(split: str) -> SupervisedBagDataset:
        return SupervisedBagDataset(bag, split, image_size=(tiny_bag.H, tiny_bag.W), max_depth=tiny_bag.MAX_DEPTH,
                                    cache_dir=tmp_path / "cache", cache_features=False, verbose=False, progress=False)

    train_stats, train_medians = dataset_statistics(windows("train"), BATVISION_CHIRP, 340.0)
    for stamp, stats in train_stats.items():
        assert stats[0] == pytest.approx(train_medians[stamp], abs=0.02)  # the first arrival is the wall
    calibration = calibrate(train_stats, train_medians)
    test_stats, test_medians = dataset_statistics(windows("test"), BATVISION_CHIRP, 340.0)
    stamps = list(test_stats)
    estimates = dict(zip(stamps, calibration.median_depth(np.stack([test_stats[s] for s in stamps])), strict=True))
    features = SupervisedBagDataset(bag, "test", image_size=(tiny_bag.H, tiny_bag.W), max_depth=tiny_bag.MAX_DEPTH,
                                    cache_dir=tmp_path / "cache", verbose=False, progress=False)
    result = evaluate_echo_range(FlatRGB(), DataLoader(features, batch_size=3), estimates, torch.device("cpu"), 1e-3,
                                 tiny_bag.MAX_DEPTH)
    assert result.images == 4 and result.metrics["scale_log_error"] < 0.02 and result.metrics["delta1"] == 1.0
    # a wrong estimate is seen: everything twice too far gives log 2
    doubled = {s: 2 * test_medians[s] for s in stamps}
    result = evaluate_echo_range(FlatRGB(), DataLoader(features, batch_size=3), doubled, torch.device("cpu"), 1e-3,
                                 tiny_bag.MAX_DEPTH)
    assert result.metrics["scale_log_error"] == pytest.approx(math.log(2.0), rel=1e-4)
    with pytest.raises(ValueError, match="no estimate"):
        evaluate_echo_range(FlatRGB(), DataLoader(features, batch_size=3), {}, torch.device("cpu"), 1e-3, 8.0)
    with pytest.raises(ValueError, match="cache_features=False"):
        features.echo_window(0)
