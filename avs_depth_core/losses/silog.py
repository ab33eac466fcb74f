"""Scale-invariant log loss as ZoeDepth trains with it (zoedepth/trainers/loss.py SILogLoss).

g = log(pred + 1e-7) - log(gt + 1e-7) over the masked pixels of the whole batch (pooled, not per image);
loss = alpha * sqrt(var(g) + (1 - lambda) * mean(g)^2) with the unbiased variance, alpha 10 and lambda 0.85 (AVS-Net).
Computed in fp32 with autocast off (ZoeDepth: "amp causes NaNs in this loss function").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SILogLoss(nn.Module):
    def __init__(self, alpha: float = 10.0, lam: float = 0.85, eps: float = 1e-7) -> None:
        super().__init__()
        self.alpha, self.lam, self.eps = alpha, lam, eps

    def forward(self, pred: torch.Tensor | dict[str, torch.Tensor], target: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """pred (B,1,h,w) metres (or AVS-Net's output dict), target (B,1,H,W) or (B,H,W), mask bool like target
        (default target > 0; ZoeDepth's default is every pixel, log(1e-7) at missing depth included: kept as the better
        default). pred is resized bilinearly (align_corners=True, as ZoeDepth) to the target size when they differ."""
        if isinstance(pred, dict):
            pred = pred["metric_depth"]
        if target.ndim == 3:
            target = target.unsqueeze(1)
        if mask is None:
            mask = target > 0
        elif mask.ndim == 3:
            mask = mask.unsqueeze(1)
        if pred.ndim != 4 or pred.shape[1] != 1 or pred.shape[0] != target.shape[0]:
            raise ValueError(f"SILog: pred must be (B,1,h,w) with the target's batch {target.shape[0]}, got {tuple(pred.shape)}")
        if mask.shape != target.shape or mask.dtype != torch.bool:
            raise ValueError(f"SILog: mask must be a bool tensor shaped like the target {tuple(target.shape)}, "
                             f"got {mask.dtype} {tuple(mask.shape)}")
        with torch.autocast(device_type=pred.device.type, enabled=False):
            pred = pred.float()
            if pred.shape[-2:] != target.shape[-2:]:
                pred = F.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=True)
            count = int(mask.sum())
            if count < 2:
                raise ValueError(f"SILog: {count} valid pixel(s) in the batch; the loss needs at least 2 (empty valid mask)")
            g = torch.log(pred[mask] + self.eps) - torch.log(target[mask].float() + self.eps)
            dg = torch.var(g) + (1.0 - self.lam) * g.mean() ** 2
            return self.alpha * torch.sqrt(dg)
