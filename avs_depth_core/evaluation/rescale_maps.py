"""Scaling method "pixelwise" scored on a bag (`avs-depth evaluate-scaling --rescale-head CKPT`): a trained rescale head
against the global median scaling of the same relative model by the same RGB-Echoes AVS-Net.

Rows per head: `global_median` (R x median(Mp) / median(R), avs_depth_core.scaling "median") and `pixelwise` (the head's
maps), with the Table-2 metrics and scale_log_error, per-image averages over valid min_depth < gt < max_depth at the
networks' input size. The frozen networks are the ones stored in the head's checkpoint (model.frontend).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from avs_depth_core.evaluation import REPORT_METRICS
from avs_depth_core.metrics import MetricAccumulator
from avs_depth_core.models.rescale_head import EchoRescaleHead
from avs_depth_core.rescale import FrontendConfig, RescaleFrontend, frame_dataset, precompute, predict_set
from avs_depth_core.scaling import apply_scale, recover_scale_batch

ROWS = ("global_median", "pixelwise")


def score(pred: torch.Tensor, gt: torch.Tensor, min_depth: float, max_depth: float) -> tuple[dict[str, float], torch.Tensor]:
    """-> (REPORT_METRICS averaged per image, per-image metrics (B, 10))."""
    acc = MetricAccumulator(min_depth, max_depth)
    per_image = acc.update(pred, gt)
    metrics = acc.compute()
    return {m: metrics[m] for m in REPORT_METRICS}, per_image


def global_median(relative: torch.Tensor, pseudo_metric: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """R scaled per image by median(Mp) / median(R) (scaling "median", shared pixels; a frame without a scale keeps 1)."""
    results = recover_scale_batch(relative, pseudo_metric, "median", min_depth=min_depth, max_depth=max_depth,
                                  fallback="unit")
    return apply_scale(relative, results)


def evaluate_rescale_head(checkpoint: Path, bag: Path, split: str = "test", min_depth: float = 1e-3,
                          max_depth: float | None = None, cache_dir: str | None = None, skip_bad: bool = False,
                          device: str | torch.device = "cpu") -> dict[str, Any]:
    """{"checkpoint", "images", "global_median": metrics, "pixelwise": metrics} for one head on `bag`'s split."""
    head, stored = EchoRescaleHead.from_checkpoint(checkpoint, device)
    fcfg = FrontendConfig.from_dict(stored, where=f"{checkpoint} frontend")
    if fcfg.echo_checkpoint == "":
        raise ValueError(f"{checkpoint}: the head has no RGB-Echoes AVS-Net (frontend echo_checkpoint) to compare with")
    max_depth = fcfg.max_depth if max_depth is None else max_depth
    frontend = RescaleFrontend(fcfg, device)
    frames = frame_dataset(bag, split, frontend, max_depth, cache_dir=cache_dir, skip_bad=skip_bad)
    test = precompute(frames, frontend, min_depth, max_depth, flipped=False)
    t = test.tensors
    preds = {"global_median": global_median(t["relative"], t["pseudo_metric"], min_depth, max_depth),
             "pixelwise": predict_set(head, test)["metric_depth"]}
    out: dict[str, Any] = {"checkpoint": str(checkpoint), "bag": str(bag), "split": split, "images": len(test)}
    for name, pred in preds.items():
        out[name], _ = score(pred, t["depth"], min_depth, max_depth)
    return out
