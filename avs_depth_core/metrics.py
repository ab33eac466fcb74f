"""Depth metrics as ZoeDepth/Monodepth2 compute them (ZoeDepth zoedepth/utils/misc.py compute_errors).

valid = min_depth < gt < max_depth; pred resized to the GT resolution (resize_prediction) and clamped to [min_depth,
max_depth]. No evaluation crop: ZoeDepth's compute_metrics applies the NYU Eigen crop by default, which is for 480x640 NYU
frames, not BatVision. The headline numbers are averaged PER IMAGE over the images that have valid pixels (the BatVision and
Monodepth2 convention); images without valid pixels are skipped and counted.
The pooled variant treats every valid pixel of the dataset alike (mean over pixels, rmse over all pixels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The seven standard metrics first; log10 and mae are reported by BatVision's baseline.
METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3", "log10", "mae")


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


def _from_sums(s: torch.Tensor) -> torch.Tensor:
    """(..., 10) sums -> (..., 9) metrics in METRIC_NAMES order."""
    n = s[..., 0]
    mean = s[..., 1:] / n.unsqueeze(-1)
    return torch.stack([mean[..., 0], mean[..., 1], mean[..., 2].sqrt(), mean[..., 3].sqrt(), mean[..., 4], mean[..., 5],
                        mean[..., 6], mean[..., 7], mean[..., 8]], dim=-1)


def per_image_depth_metrics(pred: torch.Tensor, gt: torch.Tensor, min_depth: float, max_depth: float
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (metrics (B, 9) float64 in METRIC_NAMES order, NaN rows for skipped images; has_valid (B,) bool)."""
    pred, gt, valid = _prepare(pred, gt, min_depth, max_depth)
    sums = _sums(pred, gt, valid)
    has_valid = sums[:, 0] > 0
    metrics = _from_sums(sums)
    metrics[~has_valid] = float("nan")
    return metrics, has_valid


def compute_depth_metrics(pred: torch.Tensor, gt: torch.Tensor, min_depth: float = 1e-3, max_depth: float = 30.0,
                          pooled: bool = False) -> tuple[dict[str, float], int]:
    """-> (metrics averaged per image (or pooled over pixels), number of images skipped for an empty valid mask).
    All images empty -> ValueError."""
    acc = MetricAccumulator(min_depth, max_depth)
    acc.update(pred, gt)
    return acc.compute(pooled=pooled), acc.skipped


class MetricAccumulator:
    """Running metrics for an evaluation loop: update(pred, gt) per batch, compute() at the end."""

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 30.0) -> None:
        self.min_depth, self.max_depth = min_depth, max_depth
        self.reset()

    def reset(self) -> None:
        self.count = 0  # images with valid pixels
        self.skipped = 0  # images without
        self._per_image_sum = torch.zeros(len(METRIC_NAMES), dtype=torch.float64)
        self._pooled_sums = torch.zeros(len(METRIC_NAMES) + 1, dtype=torch.float64)

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """Add a batch; returns its per-image metrics (B, 9) (NaN rows for skipped images)."""
        p, g, valid = _prepare(pred, gt, self.min_depth, self.max_depth)
        sums = _sums(p, g, valid).cpu()
        has_valid = sums[:, 0] > 0
        metrics = _from_sums(sums)
        metrics[~has_valid] = float("nan")
        self._per_image_sum += metrics[has_valid].sum(0)
        self._pooled_sums += sums.sum(0)
        self.count += int(has_valid.sum())
        self.skipped += int((~has_valid).sum())
        return metrics

    def compute(self, pooled: bool = False) -> dict[str, float]:
        if self.count == 0:
            raise ValueError(f"metrics: no image had valid ground truth in ({self.min_depth}, {self.max_depth}) "
                             f"({self.skipped} skipped)")
        values = _from_sums(self._pooled_sums) if pooled else self._per_image_sum / self.count
        return dict(zip(METRIC_NAMES, values.tolist(), strict=True))
