"""The non-learned echo range baseline: metric scale from plain signal processing of the echo, to compare the learned
echo branch with.

Per frame: matched filter of each ear with the emitted chirp, envelope, and two range statistics beyond the rig's own
direct path (audio.range_profile.range_statistics): the first strong arrival (the nearest reflector) and the median range
of the strong arrivals. A log-linear calibration, fitted by least squares on the training split,

    log(median GT depth) = w0 + w1 * log(first arrival) + w2 * log(strong-arrival median)

turns them into the frame's median depth (three numbers fitted: the scene's depth is not the distance of its nearest
reflector, but scales with it). A depth map gets that median by scaling an Only-RGB prediction per image:
pred * estimate / median(pred), so the row keeps the RGB network's shape and takes its scale from the echo alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from avs_depth_core.audio.chirp import ChirpSpec
from avs_depth_core.audio.range_profile import MIN_ECHO_RANGE, range_statistics
from avs_depth_core.evaluation import EvalResult, check_batch
from avs_depth_core.metrics import MetricAccumulator

STATISTICS = ("first_arrival_m", "strong_arrival_median_m")


@dataclass(frozen=True)
class EchoRangeCalibration:
    """log(median depth) = weights[0] + sum_i weights[i + 1] * log(statistic_i) (STATISTICS order)."""

    weights: tuple[float, ...]

    @classmethod
    def fit(cls, statistics: np.ndarray, gt_medians: np.ndarray) -> EchoRangeCalibration:
        """Least squares in log space over frames: statistics (N, k) metres, gt_medians (N,) metres; N > k + 1."""
        statistics, gt_medians = np.asarray(statistics, dtype=np.float64), np.asarray(gt_medians, dtype=np.float64)
        if statistics.ndim != 2 or len(statistics) != len(gt_medians) or len(statistics) <= statistics.shape[1] + 1:
            raise ValueError(f"echo range calibration: need (N, k) statistics and N medians with N > k + 1, got "
                             f"{statistics.shape} and {gt_medians.shape}")
        if not (np.all(statistics > 0) and np.all(gt_medians > 0)):
            raise ValueError("echo range calibration: statistics and medians must be positive metres")
        design = np.c_[np.ones(len(statistics)), np.log(statistics)]
        weights, *_ = np.linalg.lstsq(design, np.log(gt_medians), rcond=None)
        return cls(tuple(float(w) for w in weights))

    def median_depth(self, statistics: np.ndarray) -> np.ndarray:
        """(N, k) statistics -> (N,) estimated median depth in metres."""
        statistics = np.atleast_2d(np.asarray(statistics, dtype=np.float64))
        if statistics.shape[1] + 1 != len(self.weights):
            raise ValueError(f"echo range calibration: {statistics.shape[1]} statistics for {len(self.weights) - 1} weights")
        return np.exp(np.c_[np.ones(len(statistics)), np.log(statistics)] @ np.asarray(self.weights))


def bag_chirp(bag: Path) -> ChirpSpec:
    """The chirp of the bag's first echo message (EchoStamped carries it); a bag whose echoes announce different chirps
    in their first 50 messages is an error, since one matched filter serves the whole bag."""
    from avs_depth_core.data import topics
    from avs_depth_core.data.bag import open_bag, read_topic
    from avs_depth_core.data.messages import echo_chirp

    chirps = set()
    with open_bag(bag, verify=False) as reader:
        for n, item in enumerate(read_topic(reader, topics.ECHO, bag)):
            chirps.add(echo_chirp(item.msg, where=f"{bag} echo at stamp_ns {item.stamp_ns}"))
            if n >= 49:
                break
    if len(chirps) != 1:
        raise ValueError(f"{bag}: {'no echo message' if not chirps else f'{len(chirps)} different chirps'} on {topics.ECHO}; "
                         "the echo range baseline needs one emitted chirp")
    return chirps.pop()


def dataset_statistics(dataset: Any, chirp: ChirpSpec, speed_of_sound: float, min_range: float = MIN_ECHO_RANGE,
                       ) -> tuple[dict[int, np.ndarray], dict[int, float]]:
    """For every item of a window-caching SupervisedBagDataset: {stamp_ns: range statistics} and {stamp_ns: median of the
    valid ground truth (0 < gt < the dataset's max_depth), NaN if none}."""
    statistics, medians = {}, {}
    max_depth = dataset.settings.max_depth
    for i in range(len(dataset)):
        window, stamp = dataset.echo_window(i)
        statistics[stamp] = range_statistics(window, chirp, speed_of_sound, min_range)
        depth = np.asarray(dataset.cache.array("depth")[int(dataset.slots[i])])
        valid = depth[(depth > 0) & (depth < max_depth)]
        medians[stamp] = float(np.median(valid)) if valid.size else math.nan
    return statistics, medians


def calibrate(statistics: dict[int, np.ndarray], medians: dict[int, float]) -> EchoRangeCalibration:
    """EchoRangeCalibration.fit over the frames with a finite ground-truth median."""
    stamps = [s for s in statistics if math.isfinite(medians.get(s, math.nan))]
    return EchoRangeCalibration.fit(np.stack([statistics[s] for s in stamps]), np.array([medians[s] for s in stamps]))


def scale_to_median(pred: torch.Tensor, target_median: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """pred (B,1,H,W) scaled per image so that the median of its in-range pixels (all pixels clamped to the range if none
    is in range) becomes target_median (B,)."""
    flat = pred.flatten(1)
    inside = (flat > min_depth) & (flat < max_depth)
    masked = torch.where(inside, flat, torch.full_like(flat, float("nan")))
    median = torch.nanquantile(masked, 0.5, dim=1)
    median = torch.where(torch.isfinite(median), median, flat.clamp(min_depth, max_depth).median(dim=1).values)
    return pred * (target_median.to(pred) / median).view(-1, 1, 1, 1)


@torch.inference_mode()
def evaluate_echo_range(rgb_model: nn.Module, loader: DataLoader, estimates: dict[int, float], device: torch.device,
                        min_depth: float, max_depth: float,
                        predict: Callable[[nn.Module, dict[str, Any]], torch.Tensor] | None = None) -> EvalResult:
    """The metrics of the Only-RGB model's depth scaled per image to the echo range estimate {stamp_ns: median depth}.
    predict(model, batch) -> (B,1,H,W) metres (default: model(rgb, None)["metric_depth"])."""
    was_training = rgb_model.training
    rgb_model.eval()
    acc = MetricAccumulator(min_depth, max_depth)
    start = time.perf_counter()
    try:
        for batch in loader:
            check_batch(batch)
            stamps = [int(s) for s in batch["stamp_ns"]]
            missing = [s for s in stamps if s not in estimates]
            if missing:
                raise ValueError(f"echo range baseline: no estimate for the frames with stamp_ns {missing[:5]}")
            rgb = batch["rgb"].to(device)
            pred = predict(rgb_model, batch) if predict else rgb_model(rgb, None)["metric_depth"].float()
            target = torch.tensor([estimates[s] for s in stamps], dtype=torch.float64)
            acc.update(scale_to_median(pred.double().cpu(), target, min_depth, max_depth), batch["depth"])
    finally:
        rgb_model.train(was_training)
    return EvalResult(acc.compute(), acc.count, acc.skipped, time.perf_counter() - start, acc.by_gt_median())
