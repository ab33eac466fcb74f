"""Depth errors by region (all / static / dynamic) and per object, for bags with instance maps (`simulate --dynamic`).

The protocol of Nguyen et al. ("Mining Supervision for Dynamic Regions", CVPR 2024; their utils/validation_utils.py):
dynamic = the union of the moving instances whose mask covers at least 0.5 % of the image, static = every other valid
pixel, all = every valid pixel (min_depth < gt < max_depth). Two protocols side by side:
  relative  the prediction median-scaled per image with ONE ratio median(gt) / median(pred) over all valid pixels, the
            same for both regions (a dynamic region cannot pick its own scale), then clamped to the range;
  metric    the prediction as it is (AVS-Net's metres, or a relative model scaled by the echo), clamped.
Each region's seven metrics and scale_log_error are computed per image over the region's valid pixels and averaged over
the images where the region has any. Per object (each moving or static instance of at least the size threshold in a
frame): Abs Rel under both protocols, Abs Rel with the object median-scaled on its own (the object-level metric of their
stage 2) and |log(median(pred) / median(gt))| over the object under the metric protocol (how far its scale is off);
averaged over the frames it is seen in, and over objects by motion case.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from avs_depth_core.data.instances import DYNAMIC_MIN_FRACTION, dynamic_mask, resize_labels
from avs_depth_core.metrics import resize_prediction

REGIONS = ("all", "static", "dynamic")
PROTOCOLS = ("relative", "metric")
REGION_METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3", "scale_log_error")
OBJECT_KEYS = ("abs_rel_relative", "abs_rel_metric", "abs_rel_own_median", "scale_log_error_metric")


def region_masks(instances: torch.Tensor, moving_ids: set[int], min_fraction: float = DYNAMIC_MIN_FRACTION
                 ) -> dict[str, torch.Tensor]:
    """{"all", "static", "dynamic"} -> (H, W) bool: dynamic = moving instances of at least min_fraction of the image."""
    dynamic = dynamic_mask(instances, moving_ids, min_fraction)
    return {"all": torch.ones_like(dynamic), "static": ~dynamic, "dynamic": dynamic}


def _median(x: np.ndarray) -> float:
    return float(np.median(x)) if x.size else math.nan


def pixel_metrics(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """REGION_METRICS over paired 1-D pixels (pred already clamped), as metrics.py computes them per image."""
    diff = pred - gt
    ratio = np.maximum(gt / pred, pred / gt)
    dlog = np.log(gt) - np.log(pred)
    return np.array([np.mean(np.abs(diff) / gt), np.mean(diff ** 2 / gt), math.sqrt(np.mean(diff ** 2)),
                     math.sqrt(np.mean(dlog ** 2)), np.mean(ratio < 1.25), np.mean(ratio < 1.25 ** 2),
                     np.mean(ratio < 1.25 ** 3), abs(math.log(_median(pred) / _median(gt)))])


class RegionAccumulator:
    """update(pred, gt, instances, frame) per image; summary() at the end (see the module docstring)."""

    def __init__(self, min_depth: float, max_depth: float, min_fraction: float = DYNAMIC_MIN_FRACTION) -> None:
        self.min_depth, self.max_depth, self.min_fraction = min_depth, max_depth, min_fraction
        self._sums = {p: {r: np.zeros(len(REGION_METRICS)) for r in REGIONS} for p in PROTOCOLS}
        self._counts = {p: dict.fromkeys(REGIONS, 0) for p in PROTOCOLS}
        self._objects: dict[tuple[str, int], dict[str, Any]] = {}
        self.images = 0
        self.dynamic_fraction: list[float] = []

    def update(self, pred: torch.Tensor, gt: torch.Tensor, instances: np.ndarray | torch.Tensor, moving_ids: set[int],
               describe: dict[int, dict[str, Any]] | None = None, sequence: str = "") -> None:
        """pred, gt: (1, h, w) / (1, H, W) (or (h, w)); instances: (H', W') ids (resized to gt nearest); moving_ids:
        the instances that move in this frame; describe: {id: {"kind", "motion"}} for the per-object table; sequence:
        a key that, with the id, names one physical object across frames."""
        gt_t = gt.detach().double().reshape(1, 1, *gt.shape[-2:]).cpu()
        pred_t = resize_prediction(pred.detach().double().reshape(1, 1, *pred.shape[-2:]).cpu(), gt_t.shape[-2:])
        g_all, p_all = gt_t[0, 0].numpy(), pred_t[0, 0].numpy()
        labels = resize_labels(instances, g_all.shape).numpy()
        valid = (g_all > self.min_depth) & (g_all < self.max_depth)
        if not valid.any():
            return
        self.images += 1
        ratio = _median(g_all[valid]) / max(_median(p_all[valid]), 1e-12)
        preds = {"relative": np.clip(p_all * ratio, self.min_depth, self.max_depth),
                 "metric": np.clip(p_all, self.min_depth, self.max_depth)}
        masks = {k: v.numpy() for k, v in region_masks(torch.from_numpy(labels), moving_ids, self.min_fraction).items()}
        self.dynamic_fraction.append(float((masks["dynamic"] & valid).sum()) / labels.size)
        for protocol, p in preds.items():
            for region, mask in masks.items():
                keep = mask & valid
                if keep.any():
                    self._sums[protocol][region] += pixel_metrics(p[keep], g_all[keep])
                    self._counts[protocol][region] += 1
        for k in [int(v) for v in np.unique(labels) if v != 0]:
            keep = (labels == k) & valid
            if keep.sum() < self.min_fraction * labels.size:
                continue
            g, m, r = g_all[keep], preds["metric"][keep], preds["relative"][keep]
            own = np.clip(m * (_median(g) / max(_median(m), 1e-12)), self.min_depth, self.max_depth)
            values = {"abs_rel_relative": float(np.mean(np.abs(r - g) / g)),
                      "abs_rel_metric": float(np.mean(np.abs(m - g) / g)),
                      "abs_rel_own_median": float(np.mean(np.abs(own - g) / g)),
                      "scale_log_error_metric": abs(math.log(_median(m) / _median(g)))}
            entry = self._objects.setdefault((sequence, k), {"sequence": sequence, "id": k, **(describe or {}).get(k, {}),
                                                             "frames": 0, "moving_frames": 0,
                                                             **dict.fromkeys(OBJECT_KEYS, 0.0)})
            entry["frames"] += 1
            entry["moving_frames"] += int(k in moving_ids)
            for key, value in values.items():
                entry[key] += value

    def summary(self) -> dict[str, Any]:
        """{"relative"|"metric": {region: {metric: mean, "images": n}}, "objects": [...], "by_motion": {...},
        "images": n, "dynamic_fraction": mean share of the image in the dynamic region}."""
        out: dict[str, Any] = {}
        for protocol in PROTOCOLS:
            out[protocol] = {}
            for region in REGIONS:
                n = self._counts[protocol][region]
                means = self._sums[protocol][region] / n if n else np.full(len(REGION_METRICS), math.nan)
                out[protocol][region] = {**dict(zip(REGION_METRICS, means.tolist(), strict=True)), "images": n}
        objects = []
        for entry in self._objects.values():
            row = dict(entry)
            for key in OBJECT_KEYS:
                row[key] = row[key] / row["frames"]
            objects.append(row)
        by_motion: dict[str, dict[str, Any]] = {}
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in objects:
            groups[str(row.get("motion", "unknown"))].append(row)
        for motion, rows in sorted(groups.items()):
            by_motion[motion] = {"objects": len(rows), "frames": sum(r["frames"] for r in rows),
                                 **{k: float(np.mean([r[k] for r in rows])) for k in OBJECT_KEYS}}
        out.update({"images": self.images, "min_fraction": self.min_fraction,
                    "dynamic_fraction": float(np.mean(self.dynamic_fraction)) if self.dynamic_fraction else math.nan,
                    "objects": objects, "by_motion": by_motion})
        return out


def markdown_regions(label: str, summary: dict[str, Any]) -> list[str]:
    """Rows `| label | protocol | region | metrics... | images |` of a region table (header: region_table_header)."""
    lines = []
    for protocol in PROTOCOLS:
        for region in REGIONS:
            r = summary[protocol][region]
            lines.append(f"| {label} | {protocol} | {region} | " + " | ".join(f"{r[k]:.3f}" for k in REGION_METRICS)
                         + f" | {r['images']} |")
    return lines


def region_table_header() -> list[str]:
    head = ["Row", "Protocol", "Region", *REGION_METRICS, "Images"]
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]


class RegionSource:
    """A bag's instance data for the frames an evaluation scores: feeds RegionAccumulators by frame stamp."""

    def __init__(self, frames: dict[int, Any], sequences: list[dict[str, Any]]) -> None:
        self.frames, self.sequences = frames, sequences

    @classmethod
    def from_bag(cls, bag: Any, stamps: Any) -> RegionSource | None:
        """None when the bag has no instance maps (then evaluations report what they always did)."""
        from avs_depth_core.data.bag import bag_sequences
        from avs_depth_core.data.instances import has_instances, read_instances

        if not has_instances(bag):
            return None
        return cls(read_instances(bag, [int(s) for s in stamps]), bag_sequences(bag))

    def sequence_of(self, stamp: int) -> str:
        for s in self.sequences:
            if int(s["start_ns"]) <= stamp < int(s["end_ns"]):
                return str(s["name"])
        return ""

    def update(self, acc: RegionAccumulator, pred: torch.Tensor, gt: torch.Tensor, stamp: int) -> bool:
        """Add one frame to acc; False (nothing added) when the frame has no instance map."""
        frame = self.frames.get(int(stamp))
        if frame is None or frame.instances is None:
            return False
        ids = [] if frame.objects is None else [int(k) for k in frame.objects.ids]
        acc.update(pred, gt, frame.instances, frame.moving_ids(), {k: frame.describe(k) for k in ids},
                   self.sequence_of(int(stamp)))
        return True
