"""Evaluation of metric depth networks on bag datasets: the loop shared by `avs-depth evaluate` and training's validation.

Metrics are avs_depth_core.metrics (ZoeDepth compute_errors): valid = min_depth < gt < max_depth, the prediction resized
bilinearly to the ground truth's resolution and clamped to the depth range, each metric averaged per image over the images
with valid pixels (images without any are skipped and counted). The ground truth is whatever the loader's "depth" holds:
`avs-depth evaluate` reads it at its recorded resolution (datasets' depth_size="native"); training's validation at the
network's input size, as the training dataset delivers it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from avs_depth_core.guards import check_batch_finite
from avs_depth_core.metrics import METRIC_NAMES, MetricAccumulator
from avs_depth_core.models.avsnet import mirror_inputs

# The seven columns of the AVS-Net paper's Table 1, in its order, and their headers; REPORT_METRICS adds the scale error
# (metrics.py: mean |log(median(pred) / median(gt))|), which every table of this package prints next to them.
TABLE_METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3")
REPORT_METRICS = (*TABLE_METRICS, "scale_log_error")
HEADERS = {"abs_rel": "Abs Rel ↓", "sq_rel": "Sq Rel ↓", "rmse": "RMSE ↓", "rmse_log": "RMSE log ↓",
           "delta1": "δ<1.25 ↑", "delta2": "δ<1.25² ↑", "delta3": "δ<1.25³ ↑", "scale_log_error": "Scale log err ↓"}


def checkpoint_label(path: Path) -> str:
    """runs/NAME/checkpoints/best(.safetensors) -> NAME/best; anything else -> its stem."""
    stem = path.name.removesuffix(".safetensors").removesuffix(".json")
    parent = path.parent
    return f"{parent.parent.name}/{stem}" if parent.name == "checkpoints" and parent.parent.name else stem


@dataclass
class EvalResult:
    metrics: dict[str, float]  # METRIC_NAMES, averaged per image
    images: int  # images with valid ground truth
    skipped: int  # images without any valid ground-truth pixel
    seconds: float
    by_gt_median: list[dict[str, Any]] = field(default_factory=list)  # metrics by the images' GT median (MetricAccumulator)


def check_batch(batch: dict[str, Any], keys: tuple[str, ...] = ("rgb", "echo", "depth")) -> None:
    """NaN/inf in an input is an error naming the samples' stamps, never a silently wrong metric."""
    check_batch_finite(batch, None, keys)


def predict_depth(model: nn.Module, batch: dict[str, Any], device: torch.device, amp: bool = False,
                  flip_tta: bool = False) -> torch.Tensor:
    """AVS-Net's metric depth (B,1,H,W) float32 for a dataset batch; the echo is passed only to models that fuse it.
    flip_tta: the geometric mean with the prediction for the mirrored scene (image flipped, ears swapped), flipped back."""
    rgb = batch["rgb"].to(device, non_blocking=True)
    echo = batch["echo"].to(device, non_blocking=True) if model.cfg.use_echo else None
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
        pred = model(rgb, echo)["metric_depth"].float()
        if not flip_tta:
            return pred
        rgb_m, echo_m = mirror_inputs(rgb, echo)
        mirrored = model(rgb_m, echo_m)["metric_depth"].float().flip(-1)
    return torch.sqrt(pred * mirrored)


@torch.inference_mode()
def evaluate_model(model: nn.Module, loader: DataLoader, device: torch.device, min_depth: float, max_depth: float, *,
                   amp: bool = False, flip_tta: bool = False, desc: str = "evaluate", progress: bool = True,
                   on_batch: Callable[[dict[str, Any], torch.Tensor, torch.Tensor], None] | None = None) -> EvalResult:
    """Run `model` (eval mode) over `loader`; on_batch(batch, pred, per_image_metrics) sees every batch (figures)."""
    was_training = model.training
    model.eval()
    acc = MetricAccumulator(min_depth, max_depth)
    start = time.perf_counter()
    try:
        for batch in tqdm(loader, desc=desc, dynamic_ncols=True, leave=False, disable=not progress):
            check_batch(batch)
            pred = predict_depth(model, batch, device, amp, flip_tta)
            per_image = acc.update(pred, batch["depth"].to(device))
            if on_batch is not None:
                on_batch(batch, pred, per_image)
    finally:
        model.train(was_training)
    return EvalResult(acc.compute(), acc.count, acc.skipped, time.perf_counter() - start, acc.by_gt_median())


__all__ = ["HEADERS", "METRIC_NAMES", "REPORT_METRICS", "TABLE_METRICS",
           "EvalResult", "check_batch", "checkpoint_label", "evaluate_model",
           "predict_depth"]
