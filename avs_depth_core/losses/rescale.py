"""Loss terms of the rescale-map head (TR2M, Cui et al. CVPR 2026; constants the public sources leave open are project
choices, named where they are set in config/rescale.yaml):

- pseudo_labels: TR2M's threshold-aligned pseudo metric depth. Per frame, the closed-form least-squares fit
  alpha * r + beta ~ 1 / gt over the valid GT pixels (done in disparity, where the head rescales; MiDaS's alignment),
  D_pseudo = 1 / (alpha r + beta), accepted when its delta1 against the GT exceeds rho. It covers every pixel, also
  those without GT.
- image_contrast: the coarse scale-oriented contrast: pooled fused embeddings, batch items ranked by their fitted scale
  alpha; items closer than `window` ranks are positives (supervised-contrastive form, temperature tau).
- pixel_contrast: the fine contrast: pixel features of the query branch against those of an EMA key branch at the same
  sampled pixels; pixels in the same depth class (|C| linear bins of the target over [min, max]) are positives.
- edge_smoothness: edge-aware smoothness (Monodepth2's form, image-gradient weighted) of the log scale and log shift.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pseudo_labels(rel_disparity: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, min_depth: float, max_depth: float
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image (B,1,H,W) -> (D_pseudo (B,1,H,W) with 0 where not in range, alpha (B,), beta (B,), delta1 (B,) against GT).
    An image with fewer than 2 valid pixels, a non-positive slope or one that changes the disparity by less than a part
    per million (flat GT, constant R) gets alpha = beta = NaN, delta1 = 0."""
    b = rel_disparity.shape[0]
    alpha, beta = torch.full((b,), float("nan")), torch.full((b,), float("nan"))
    delta1 = torch.zeros(b)
    pseudo = torch.zeros_like(rel_disparity)
    for i in range(b):
        m = valid[i]
        if int(m.sum()) < 2:
            continue
        x, y = rel_disparity[i][m].double(), 1.0 / gt[i][m].double()
        design = torch.stack([x, torch.ones_like(x)], 1)
        solution = torch.linalg.lstsq(design, y[:, None]).solution[:, 0]
        a, c = float(solution[0]), float(solution[1])
        # a flat GT (one wall) or a constant R leaves the slope at rounding noise of either sign: no fit
        if not (a > 0) or a * float(x.std()) <= 1e-6 * float(y.abs().mean()):
            continue
        disp = a * rel_disparity[i] + c
        d = torch.where(disp > 0, 1.0 / disp.clamp_min(1e-12), torch.zeros_like(disp))
        d = torch.where((d > min_depth) & (d < max_depth), d, torch.zeros_like(d)).float()
        p, g = d[m], gt[i][m]
        ok = p > 0
        ratio = torch.maximum(p[ok] / g[ok], g[ok] / p[ok])
        alpha[i], beta[i] = a, c
        delta1[i] = float((ratio < 1.25).sum()) / float(m.sum())
        pseudo[i] = d
    return pseudo, alpha, beta, delta1


def supcon(features: torch.Tensor, positives: torch.Tensor, tau: float, keys: torch.Tensor | None = None) -> torch.Tensor:
    """Supervised-contrastive loss: features (N,D) L2-normalised queries, keys (N,D) (default: the features, self-pairs
    left out), positives (N,N) bool. Mean over the queries that have a positive of -mean log p(positive)."""
    q = F.normalize(features, dim=1)
    k = q if keys is None else F.normalize(keys, dim=1)
    logits = q @ k.t() / tau
    n = q.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=q.device)
    if keys is None:
        logits = logits.masked_fill(eye, float("-inf"))
        positives = positives & ~eye
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    counts = positives.sum(1)
    has = counts > 0
    if not has.any():
        return features.sum() * 0.0
    pos_log = torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(1)
    return -(pos_log[has] / counts[has]).mean()


def image_contrast(embedding: torch.Tensor, scale: torch.Tensor, tau: float, window: int) -> torch.Tensor:
    """Coarse contrast: embedding (B,D) (projected), scale (B,) the fitted per-image scale; positives are items whose
    ranks by scale differ by less than `window` (items with a NaN scale take part only as negatives)."""
    ok = torch.isfinite(scale)
    if int(ok.sum()) < 2:
        return embedding.sum() * 0.0
    ranks = torch.empty_like(scale)
    filled = torch.where(ok, scale, torch.full_like(scale, float("inf")))
    ranks[filled.argsort()] = torch.arange(len(scale), dtype=scale.dtype, device=scale.device)
    positives = ((ranks[:, None] - ranks[None, :]).abs() < window) & ok[:, None] & ok[None, :]
    return supcon(embedding, positives, tau)


def depth_classes(depth: torch.Tensor, classes: int, min_depth: float, max_depth: float) -> torch.Tensor:
    """TR2M's depth-distribution classes, Y = round((d_max - D) / (d_max - d_min) * |C|), clamped to [0, |C|]."""
    y = torch.round((max_depth - depth) / (max_depth - min_depth) * classes)
    return y.clamp(0, classes).long()


def pixel_contrast(query: torch.Tensor, key: torch.Tensor, target: torch.Tensor, classes: int, min_depth: float,
                   max_depth: float, samples: int, tau: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fine contrast: query/key pixel features (B,C,h,w) (key without gradient), target depth (B,1,H,W) with 0 where
    unknown. `samples` pixels per image with a target are drawn; positives share the depth class."""
    b, _, h, w = query.shape
    t = F.interpolate(target, size=(h, w), mode="nearest")[:, 0]
    qs, ks, ys = [], [], []
    for i in range(b):
        idx = torch.nonzero(t[i].flatten() > 0)[:, 0]
        if len(idx) == 0:
            continue
        pick = idx[torch.randperm(len(idx), generator=generator)[:samples]] if len(idx) > samples else idx
        qs.append(query[i].flatten(1)[:, pick].t())
        ks.append(key[i].flatten(1)[:, pick].t())
        ys.append(depth_classes(t[i].flatten()[pick], classes, min_depth, max_depth))
    if not qs:
        return query.sum() * 0.0
    y = torch.cat(ys)
    return supcon(torch.cat(qs), y[:, None] == y[None, :], tau, keys=torch.cat(ks).detach())


def edge_smoothness(log_map: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Monodepth2's edge-aware smoothness on a log map (B,1,H,W), weighted by exp(-mean |image gradient|)."""
    dx = (log_map[..., :, :-1] - log_map[..., :, 1:]).abs()
    dy = (log_map[..., :-1, :] - log_map[..., 1:, :]).abs()
    ix = (image[..., :, :-1] - image[..., :, 1:]).abs().mean(1, keepdim=True)
    iy = (image[..., :-1, :] - image[..., 1:, :]).abs().mean(1, keepdim=True)
    return (dx * torch.exp(-ix)).mean() + (dy * torch.exp(-iy)).mean()
