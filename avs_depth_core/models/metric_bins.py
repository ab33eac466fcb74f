"""ZoeDepth's metric bins module (zoedepth/models/layers/*.py, zoedepth/models/zoedepth/zoedepth_v1.py), layer by layer.

Seed bins from the bottleneck, refined by attractors at each decoder level, and a per-pixel log-binomial distribution over
the final bins, conditioned on the last decoder features and the relative depth. Metric depth = sum_k p_k * c_k.
All interpolations are bilinear with align_corners=True, as in ZoeDepth.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BIN_CENTERS_TYPES = ("normed", "softplus", "hybrid1", "hybrid2")


def resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


class SeedBinRegressor(nn.Module):
    """'normed' seed bins, bounded to [min_depth, max_depth]: positive widths normalised to sum 1, centers of cumulative edges.

    forward(x) -> (normed widths (B,n_bins,h,w), metric centers (B,n_bins,h,w)).
    """

    def __init__(self, in_features: int, n_bins: int = 16, mlp_dim: int = 256, min_depth: float = 1e-3,
                 max_depth: float = 10.0) -> None:
        super().__init__()
        self.min_depth, self.max_depth = min_depth, max_depth
        self._net = nn.Sequential(nn.Conv2d(in_features, mlp_dim, 1), nn.ReLU(inplace=True), nn.Conv2d(mlp_dim, n_bins, 1),
                                  nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        widths = self._net(x) + 1e-3
        normed = widths / widths.sum(dim=1, keepdim=True)
        widths = (self.max_depth - self.min_depth) * normed
        # the first "width" is min_depth, so the cumulative edges start at min_depth
        edges = torch.cumsum(F.pad(widths, (0, 0, 0, 0, 1, 0), value=self.min_depth), dim=1)
        return normed, 0.5 * (edges[:, :-1] + edges[:, 1:])


class SeedBinRegressorUnnormed(nn.Module):
    """'softplus' seed bins: unbounded metric centers. forward(x) -> (centers, centers). min/max_depth are unused."""

    def __init__(self, in_features: int, n_bins: int = 16, mlp_dim: int = 256, min_depth: float = 1e-3,
                 max_depth: float = 10.0) -> None:
        super().__init__()
        self._net = nn.Sequential(nn.Conv2d(in_features, mlp_dim, 1), nn.ReLU(inplace=True), nn.Conv2d(mlp_dim, n_bins, 1),
                                  nn.Softplus())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        centers = self._net(x)
        return centers, centers


class Projector(nn.Module):
    """1x1 MLP that maps a feature map to the bin embedding: Conv-ReLU-Conv."""

    def __init__(self, in_features: int, out_features: int = 128, mlp_dim: int = 128) -> None:
        super().__init__()
        self._net = nn.Sequential(nn.Conv2d(in_features, mlp_dim, 1), nn.ReLU(inplace=True), nn.Conv2d(mlp_dim, out_features, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._net(x)


def exp_attractor(dx: torch.Tensor, alpha: float = 300.0, gamma: int = 2) -> torch.Tensor:
    """dc = exp(-alpha * |dx|^gamma) * dx, dx = attractor - center."""
    return torch.exp(-alpha * dx.abs().pow(gamma)) * dx


def inv_attractor(dx: torch.Tensor, alpha: float = 300.0, gamma: int = 2) -> torch.Tensor:
    """dc = dx / (1 + alpha * dx^gamma), dx = attractor - center (the default of the ZoeDepth paper)."""
    return dx / (1 + alpha * dx.pow(gamma))


ATTRACTORS = {"exp": exp_attractor, "inv": inv_attractor}


class _Attractor(nn.Module):
    def __init__(self, n_attractors: int, alpha: float, gamma: int, kind: str, attractor_type: str,
                 apply_alpha: bool = False) -> None:
        super().__init__()
        if kind not in ("mean", "sum"):
            raise ValueError(f"attractor_kind must be 'mean' or 'sum', got {kind!r}")
        if attractor_type not in ATTRACTORS:
            raise ValueError(f"attractor_type must be 'inv' or 'exp', got {attractor_type!r}")
        self.n_attractors, self.alpha, self.gamma = n_attractors, alpha, gamma
        self.kind, self.attractor_type, self.apply_alpha = kind, attractor_type, apply_alpha

    def shift(self, attractors: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """Total shift of each center (B,n_bins,h,w) towards the attractors (B,n_attr,h,w): mean or sum over attractors."""
        attract, dx = ATTRACTORS[self.attractor_type], attractors.unsqueeze(2) - centers.unsqueeze(1)
        # ZoeDepth's layers store alpha and gamma but call the function without them, so its defaults (300, 2) apply;
        # apply_alpha=True uses the configured ones instead (a deviation, and this package's behaviour before it followed
        # ZoeDepth here).
        delta = attract(dx, self.alpha, self.gamma) if self.apply_alpha else attract(dx)
        return delta.mean(dim=1) if self.kind == "mean" else delta.sum(dim=1)

    @staticmethod
    def add_previous(x: torch.Tensor, prev_embedding: torch.Tensor | None) -> torch.Tensor:
        return x if prev_embedding is None else x + resize(prev_embedding, x.shape[-2:])


class AttractorLayer(_Attractor):
    """Attractors for 'normed' bins. forward(x, b_prev, prev_embedding) -> (new normed centers, metric centers sorted, clipped).

    ZoeDepth quirk kept: the attractor points are A[:, :, 0] of the (n_attr, 2) output, not the "linear-normed" pair
    (ZoeDepth computes the normalised copy and then overwrites it).
    """

    def __init__(self, in_features: int, n_bins: int, n_attractors: int = 16, mlp_dim: int = 128, min_depth: float = 1e-3,
                 max_depth: float = 10.0, alpha: float = 300.0, gamma: int = 2, kind: str = "sum",
                 attractor_type: str = "exp", apply_alpha: bool = False) -> None:
        super().__init__(n_attractors, alpha, gamma, kind, attractor_type, apply_alpha)
        self.min_depth, self.max_depth = min_depth, max_depth
        self._net = nn.Sequential(nn.Conv2d(in_features, mlp_dim, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(mlp_dim, n_attractors * 2, 1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, b_prev: torch.Tensor, prev_embedding: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        a = self._net(self.add_previous(x, prev_embedding)) + 1e-3
        n, _, h, w = a.shape
        attractors = a.view(n, self.n_attractors, 2, h, w)[:, :, 0]
        b_prev = resize(b_prev, (h, w))
        b_new = b_prev + self.shift(attractors, b_prev)
        centers = (self.max_depth - self.min_depth) * b_new + self.min_depth
        centers = torch.sort(centers, dim=1).values.clamp(self.min_depth, self.max_depth)
        return b_new, centers


class AttractorLayerUnnormed(_Attractor):
    """Attractors for 'softplus' (unbounded) bins: Softplus attractor points, no sort, no clip. forward -> (new, new)."""

    def __init__(self, in_features: int, n_bins: int, n_attractors: int = 16, mlp_dim: int = 128, min_depth: float = 1e-3,
                 max_depth: float = 10.0, alpha: float = 300.0, gamma: int = 2, kind: str = "sum",
                 attractor_type: str = "exp", apply_alpha: bool = False) -> None:
        super().__init__(n_attractors, alpha, gamma, kind, attractor_type, apply_alpha)
        self._net = nn.Sequential(nn.Conv2d(in_features, mlp_dim, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(mlp_dim, n_attractors, 1), nn.Softplus())

    def forward(self, x: torch.Tensor, b_prev: torch.Tensor, prev_embedding: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        attractors = self._net(self.add_previous(x, prev_embedding))
        b_prev = resize(b_prev, attractors.shape[-2:])
        b_new = b_prev + self.shift(attractors, b_prev)
        return b_new, b_new


def log_binomial(p: torch.Tensor, n_classes: int, temperature: torch.Tensor | float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """softmax over k of [log C(K-1, k) + k log p + (K-1-k) log(1-p)] / t, for p (B,1,h,w) or (B,h,w) -> (B,K,h,w).

    log C uses ZoeDepth's Stirling form n ln n - k ln k - (n-k) ln(n-k+1e-7), with 1e-7 added to n and k;
    p and 1-p are clamped to [eps, 1].
    """
    if p.ndim == 3:
        p = p.unsqueeze(1)
    k = torch.arange(n_classes, device=p.device, dtype=p.dtype).view(1, -1, 1, 1)
    n = torch.full_like(k, n_classes - 1) + 1e-7
    kk = k + 1e-7
    log_comb = n * torch.log(n) - kk * torch.log(kk) - (n - kk) * torch.log(n - kk + 1e-7)
    y = log_comb + k * torch.log(p.clamp(eps, 1)) + (n_classes - 1 - k) * torch.log((1 - p).clamp(eps, 1))
    return torch.softmax(y / temperature, dim=1)


class ConditionalLogBinomial(nn.Module):
    """Per-pixel binomial over n_classes bins with predicted p and temperature t, from cat(features, condition).

    MLP: Conv1x1(in+cond, (in+cond)//bottleneck_factor)-GELU-Conv1x1(.,4)-Softplus; p = (o0+eps)/(o0+o1+2eps),
    t = min_temp + (max_temp-min_temp) * (o2+eps)/(o2+o3+2eps).
    """

    def __init__(self, in_features: int, condition_dim: int, n_classes: int = 256, bottleneck_factor: int = 2,
                 p_eps: float = 1e-4, max_temp: float = 50.0, min_temp: float = 1e-7) -> None:
        super().__init__()
        self.p_eps, self.max_temp, self.min_temp, self.n_classes = p_eps, max_temp, min_temp, n_classes
        hidden = (in_features + condition_dim) // bottleneck_factor
        self.mlp = nn.Sequential(nn.Conv2d(in_features + condition_dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, 4, 1),
                                 nn.Softplus())

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        # fp32 (or fp64) from here: the logits are divided by temperatures down to ~0.02, which fp16 would not survive
        pt = self.mlp(torch.cat((x, cond), dim=1))
        pt = pt.to(torch.promote_types(pt.dtype, torch.float32)) + self.p_eps
        p = pt[:, 0] / (pt[:, 0] + pt[:, 1])
        t = (pt[:, 2] / (pt[:, 2] + pt[:, 3])).unsqueeze(1)
        t = (self.max_temp - self.min_temp) * t + self.min_temp
        return log_binomial(p, self.n_classes, t)


class MetricBinsHead(nn.Module):
    """ZoeDepth's head after the MiDaS core (zoedepth_v1.ZoeDepth minus the core), with ZoeD_N's defaults.

    forward(out_conv, bottleneck, levels [r4, r3, r2, r1], rel_depth) -> dict(metric_depth (B,1,H,W),
    bin_centers (B,n_bins,H,W), probs (B,n_bins,H,W)), metric_depth = sum(probs * bin_centers) over the bins. The bottleneck
    may already be fused with the echo; conv2 is ZoeDepth's 1x1 bottleneck conv. With apply_attractor_alpha False (default)
    the attractors run as ZoeDepth's code runs them, with alpha 300 and gamma 2 whatever attractor_alpha/gamma say.
    """

    def __init__(self, bottleneck_channels: int, level_channels: list[int] | tuple[int, ...], out_conv_channels: int = 32,
                 n_bins: int = 64, bin_centers_type: str = "softplus", bin_embedding_dim: int = 128, min_depth: float = 1e-3,
                 max_depth: float = 10.0, n_attractors: list[int] | tuple[int, ...] = (16, 8, 4, 1),
                 attractor_alpha: float = 1000.0, attractor_gamma: int = 2, attractor_kind: str = "mean",
                 attractor_type: str = "inv", min_temp: float = 0.0212, max_temp: float = 50.0,
                 inverse_midas: bool = False, apply_attractor_alpha: bool = False) -> None:
        super().__init__()
        if bin_centers_type not in BIN_CENTERS_TYPES:
            raise ValueError(f"bin_centers_type must be one of {BIN_CENTERS_TYPES}, got {bin_centers_type!r}")
        if len(n_attractors) != len(level_channels):
            raise ValueError(f"n_attractors has {len(n_attractors)} entries, the decoder has {len(level_channels)} levels")
        self.min_depth, self.max_depth = min_depth, max_depth
        self.bin_centers_type, self.inverse_midas = bin_centers_type, inverse_midas
        seed = SeedBinRegressor if bin_centers_type in ("normed", "hybrid1") else SeedBinRegressorUnnormed
        attractor = AttractorLayer if bin_centers_type in ("normed", "hybrid2") else AttractorLayerUnnormed
        self.conv2 = nn.Conv2d(bottleneck_channels, bottleneck_channels, 1)
        self.seed_bin_regressor = seed(bottleneck_channels, n_bins=n_bins, min_depth=min_depth, max_depth=max_depth)
        self.seed_projector = Projector(bottleneck_channels, bin_embedding_dim)
        self.projectors = nn.ModuleList(Projector(c, bin_embedding_dim) for c in level_channels)
        self.attractors = nn.ModuleList(
            attractor(bin_embedding_dim, n_bins, n_attractors=n, min_depth=min_depth, max_depth=max_depth, alpha=attractor_alpha,
                      gamma=attractor_gamma, kind=attractor_kind, attractor_type=attractor_type,
                      apply_alpha=apply_attractor_alpha) for n in n_attractors)
        self.conditional_log_binomial = ConditionalLogBinomial(out_conv_channels + 1, bin_embedding_dim, n_classes=n_bins,
                                                               min_temp=min_temp, max_temp=max_temp)

    def forward(self, out_conv: torch.Tensor, bottleneck: torch.Tensor, levels: list[torch.Tensor],
                rel_depth: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.conv2(bottleneck)
        _, seed_centers = self.seed_bin_regressor(x)
        if self.bin_centers_type in ("normed", "hybrid2"):
            b_prev = (seed_centers - self.min_depth) / (self.max_depth - self.min_depth)
        else:
            b_prev = seed_centers
        prev_embedding = self.seed_projector(x)
        for projector, attractor, feature in zip(self.projectors, self.attractors, levels, strict=True):
            embedding = projector(feature)
            b_prev, centers = attractor(embedding, b_prev, prev_embedding)
            prev_embedding = embedding
        if self.inverse_midas:
            # ZoeDepth normalises over the whole batch tensor, not per image
            rel_depth = 1.0 / (rel_depth + 1e-6)
            rel_depth = (rel_depth - rel_depth.min()) / (rel_depth.max() - rel_depth.min())
        last = torch.cat([out_conv, resize(rel_depth, out_conv.shape[-2:])], dim=1)
        probs = self.conditional_log_binomial(last, resize(prev_embedding, last.shape[-2:]))
        # bin_centers at the depth's resolution, as ZoeDepth returns them: the centers the depth is the expectation over
        centers = resize(centers, probs.shape[-2:])
        metric = torch.sum(probs * centers, dim=1, keepdim=True)
        return {"metric_depth": metric, "bin_centers": centers, "probs": probs}
