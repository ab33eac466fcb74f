"""Depth metrics as ZoeDepth/Monodepth2 compute them (ZoeDepth zoedepth/utils/misc.py compute_errors).

valid = min_depth < gt < max_depth; pred resized to the GT resolution (resize_prediction) and clamped to [min_depth,
max_depth]. No evaluation crop: ZoeDepth's compute_metrics applies the NYU Eigen crop by default, which is for 480x640 NYU
frames, not BatVision. The headline numbers are averaged PER IMAGE over the images that have valid pixels (the BatVision and
Monodepth2 convention); images without valid pixels are skipped and counted.
The pooled variant treats every valid pixel of the dataset alike (mean over pixels, rmse over all pixels).

scale_log_error = |log(median(pred) / median(gt))| over an image's valid pixels (the clamped prediction; true medians,
the two middle values averaged), averaged over images: how far the overall scale is off, whatever the shape (0.10 is
about 10 %). A median is no per-pixel sum, so its pooled value is the per-image average too.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

# The seven standard metrics first; log10 and mae are reported by BatVision's baseline.
METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3", "log10", "mae", "scale_log_error")
SUM_METRICS = METRIC_NAMES[:9]  # the metrics that are means of per-pixel terms
# Upper edges (metres) of the per-distance breakdown's buckets by an image's ground-truth median; the last bucket is open.
GT_MEDIAN_EDGES = (1.0, 2.0, 4.0, 8.0, 16.0)


def resize_prediction(pred: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """(B,1,h,w) -> (B,1,*size), bilinear with align_corners=False (pixel centres), as Monodepth2's trainer resizes depth for
    its metrics. Decision: the inverse of how the data path resizes images to the network (align_corners=False, antialias);
    ZoeDepth's compute_metrics uses align_corners=True, which matches its own align_corners=True input resize, not ours."""
    if tuple(pred.shape[-2:]) == tuple(size):
        return pred
    return F.interpolate(pred, size=tuple(size), mode="bilinear", align_corners=False)


def _prepare(pred: torch.Tensor, gt: torch.Tensor, min_depth: float, max_depth: float
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if gt.ndim == 3:
        gt = gt.unsqueeze(1)
    if pred.ndim == 3:
        pred = pred.unsqueeze(1)
    if pred.ndim != 4 or gt.ndim != 4 or pred.shape[:2] != gt.shape[:2] or pred.shape[1] != 1:
        raise ValueError(f"metrics: expected pred and gt as (B,1,H,W) or (B,H,W) with the same batch, "
                         f"got {tuple(pred.shape)} and {tuple(gt.shape)}")
    if not 0 <= min_depth < max_depth:
        raise ValueError(f"metrics: need 0 <= min_depth < max_depth, got {min_depth}, {max_depth}")
    pred, gt = pred.detach().double(), gt.detach().double()
    if not torch.isfinite(pred).all():
        raise ValueError("metrics: the prediction holds NaN or inf")
    pred = resize_prediction(pred, gt.shape[-2:])
    valid = (gt > min_depth) & (gt < max_depth)  # NaN/inf GT are never valid
    return pred.clamp(min_depth, max_depth), torch.where(valid, gt, torch.ones_like(gt)), valid


def _sums(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per image sums over valid pixels: (B, 9) = [n, |d|/gt, d^2/gt, d^2, dlog^2, delta1..3 counts, |dlog10|, |d|]."""
    v = valid.double()
    diff = pred - gt
    ratio = torch.maximum(gt / pred, pred / gt)
    dlog = torch.log(gt) - torch.log(pred)
    dlog10 = torch.log10(gt) - torch.log10(pred)
    terms = [v, diff.abs() / gt, diff ** 2 / gt, diff ** 2, dlog ** 2, (ratio < 1.25).double(), (ratio < 1.25 ** 2).double(),
             (ratio < 1.25 ** 3).double(), dlog10.abs(), diff.abs()]
    return torch.stack([(t * v).flatten(1).sum(1) for t in terms], dim=1)


def _medians(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image medians of pred and gt over the valid pixels (NaN for an image without any): (B,), (B,)."""
    nan = torch.full_like(gt, float("nan"))
    p = torch.where(valid, pred, nan).flatten(1)
    g = torch.where(valid, gt, nan).flatten(1)
    # one image at a time: torch.quantile refuses inputs over 2^24 elements (a batch of native-resolution maps)
    pm = torch.stack([torch.nanquantile(row, 0.5) for row in p])
    gm = torch.stack([torch.nanquantile(row, 0.5) for row in g])
    return pm, gm


def _per_image(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (sums (B, 10), metrics (B, 10) in METRIC_NAMES order with NaN rows for images without valid pixels,
    gt medians (B,))."""
    sums = _sums(pred, gt, valid)
    pred_median, gt_median = _medians(pred, gt, valid)
    metrics = torch.cat([_from_sums(sums), (pred_median / gt_median).log().abs().unsqueeze(1)], dim=1)
    metrics[sums[:, 0] == 0] = float("nan")
    return sums, metrics, gt_median


def _from_sums(s: torch.Tensor) -> torch.Tensor:
    """(..., 10) sums -> (..., 9) metrics in SUM_METRICS order."""
    n = s[..., 0]
    mean = s[..., 1:] / n.unsqueeze(-1)
    return torch.stack([mean[..., 0], mean[..., 1], mean[..., 2].sqrt(), mean[..., 3].sqrt(), mean[..., 4], mean[..., 5],
                        mean[..., 6], mean[..., 7], mean[..., 8]], dim=-1)


def per_image_depth_metrics(pred: torch.Tensor, gt: torch.Tensor, min_depth: float, max_depth: float
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (metrics (B, 10) float64 in METRIC_NAMES order, NaN rows for skipped images; has_valid (B,) bool)."""
    pred, gt, valid = _prepare(pred, gt, min_depth, max_depth)
    sums, metrics, _ = _per_image(pred, gt, valid)
    return metrics, sums[:, 0] > 0


def compute_depth_metrics(pred: torch.Tensor, gt: torch.Tensor, min_depth: float = 1e-3, max_depth: float = 30.0,
                          pooled: bool = False) -> tuple[dict[str, float], int]:
    """-> (metrics averaged per image (or pooled over pixels), number of images skipped for an empty valid mask).
    All images empty -> ValueError."""
    acc = MetricAccumulator(min_depth, max_depth)
    acc.update(pred, gt)
    return acc.compute(pooled=pooled), acc.skipped


class MetricAccumulator:
    """Running metrics for an evaluation loop: update(pred, gt) per batch, compute() at the end, by_gt_median() for the
    per-distance breakdown."""

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 30.0) -> None:
        self.min_depth, self.max_depth = min_depth, max_depth
        self.reset()

    def reset(self) -> None:
        self.count = 0  # images with valid pixels
        self.skipped = 0  # images without
        self._per_image_sum = torch.zeros(len(METRIC_NAMES), dtype=torch.float64)
        self._pooled_sums = torch.zeros(len(SUM_METRICS) + 1, dtype=torch.float64)
        self._rows: list[torch.Tensor] = []  # per batch: (b, 1 + len(METRIC_NAMES)) = [gt median, metrics]

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """Add a batch; returns its per-image metrics (B, 10) on the CPU (NaN rows for skipped images)."""
        p, g, valid = _prepare(pred, gt, self.min_depth, self.max_depth)
        sums, metrics, gt_median = (t.cpu() for t in _per_image(p, g, valid))
        has_valid = sums[:, 0] > 0
        self._per_image_sum += metrics[has_valid].sum(0)
        self._pooled_sums += sums.sum(0)
        self._rows.append(torch.cat([gt_median[has_valid, None], metrics[has_valid]], dim=1))
        self.count += int(has_valid.sum())
        self.skipped += int((~has_valid).sum())
        return metrics

    def compute(self, pooled: bool = False) -> dict[str, float]:
        if self.count == 0:
            raise ValueError(f"metrics: no image had valid ground truth in ({self.min_depth}, {self.max_depth}) "
                             f"({self.skipped} skipped)")
        per_image = self._per_image_sum / self.count
        if pooled:
            values = torch.cat([_from_sums(self._pooled_sums), per_image[len(SUM_METRICS):]])
        else:
            values = per_image
        return dict(zip(METRIC_NAMES, values.tolist(), strict=True))

    def by_gt_median(self, edges: tuple[float, ...] = GT_MEDIAN_EDGES) -> list[dict[str, object]]:
        """The per-image metrics averaged within buckets of the images' ground-truth median depth: [{"gt_median_m":
        [lo, hi] (hi None for the open last bucket), "images": n, metric: mean ...}], empty buckets left out."""
        if list(edges) != sorted(edges) or any(e <= 0 for e in edges):
            raise ValueError(f"metrics: bucket edges must be positive and increasing, got {list(edges)}")
        rows = torch.cat(self._rows) if self._rows else torch.zeros(0, 1 + len(METRIC_NAMES), dtype=torch.float64)
        bounds = [0.0, *edges, math.inf]
        out: list[dict[str, object]] = []
        for lo, hi in itertools.pairwise(bounds):
            inside = rows[(rows[:, 0] >= lo) & (rows[:, 0] < hi)]
            if len(inside):
                means = inside[:, 1:].mean(0).tolist()
                out.append({"gt_median_m": [lo, None if math.isinf(hi) else hi], "images": len(inside),
                            **dict(zip(METRIC_NAMES, means, strict=True))})
        return out
