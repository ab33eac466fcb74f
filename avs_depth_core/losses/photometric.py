"""Monodepth2's self-supervised loss: view synthesis by warping source frames into the target, SSIM + L1 photometric error,
per-pixel minimum reprojection over the sources, auto-masking of static pixels, edge-aware smoothness.

Numbers and order of operations follow nianticlabs/monodepth2 (layers.py, trainer.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from avs_depth_core.geometry import BackprojectDepth, Project3D, scale_intrinsics, warp_image
from avs_depth_core.models.monodepth2 import Monodepth2Config, disp_to_depth

# Monodepth2 trainer.compute_losses: noise that breaks ties between identity and reprojection losses in favour of neither.
IDENTITY_NOISE = 1e-5


class SSIM(nn.Module):
    """(1 - SSIM) / 2 per pixel and channel, clamped to [0, 1]; 3x3 windows, reflection padding, C1 = 0.01^2, C2 = 0.03^2."""

    def __init__(self) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.C1, self.C2 = 0.01**2, 0.03**2

    @staticmethod
    def pool(x: torch.Tensor) -> torch.Tensor:
        """3x3 mean over valid windows (= AvgPool2d(3, 1)), separably: about 3x faster on CPU, where it dominated a step."""
        x = (x[..., :-2] + x[..., 1:-1] + x[..., 2:]) / 3
        return (x[..., :-2, :] + x[..., 1:-1, :] + x[..., 2:, :]) / 3

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = self.pad(x), self.pad(y)
        mu_x, mu_y = self.pool(x), self.pool(y)
        sigma_x = self.pool(x * x) - mu_x**2
        sigma_y = self.pool(y * y) - mu_y**2
        sigma_xy = self.pool(x * y) - mu_x * mu_y
        numerator = (2 * mu_x * mu_y + self.C1) * (2 * sigma_xy + self.C2)
        denominator = (mu_x**2 + mu_y**2 + self.C1) * (sigma_x + sigma_y + self.C2)
        return torch.clamp((1 - numerator / denominator) / 2, 0, 1)


def reprojection_loss(pred: torch.Tensor, target: torch.Tensor, ssim: SSIM | None = None,
                      ssim_weight: float = 0.85) -> torch.Tensor:
    """Photometric error (B, 1, H, W): w * mean_c SSIM + (1 - w) * mean_c |pred - target|, w = ssim_weight (Monodepth2: 0.85)."""
    l1 = (target - pred).abs().mean(1, keepdim=True)
    if ssim_weight == 0:
        return l1
    ssim = ssim if ssim is not None else SSIM().to(pred.device)
    return ssim_weight * ssim(pred, target).mean(1, keepdim=True) + (1 - ssim_weight) * l1


def min_reprojection_with_automask(reprojection: torch.Tensor, identity: torch.Tensor | None,
                                   noise: float = IDENTITY_NOISE, average: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel minimum over sources, with auto-masking.

    reprojection: (B, N, H, W) errors of the warped sources; identity: (B, N, H, W) errors of the unwarped sources, or None to
    switch auto-masking off. A pixel where an unwarped source already matches better than any warp (static camera, object moving
    with the camera) takes the identity error, which carries no gradient, so it is effectively masked out.
    average=True averages over sources instead of the minimum (Monodepth2's --avg_reprojection ablation).
    Returns (per-pixel loss (B, 1, H, W), warp_selected (B, 1, H, W) bool: True where a reprojection error was chosen).
    """
    if average:
        reprojection = reprojection.mean(1, keepdim=True)
    if identity is None:
        loss = reprojection.min(1, keepdim=True)[0]
        return loss, torch.ones_like(loss, dtype=torch.bool)
    if average:
        identity = identity.mean(1, keepdim=True)
    identity = identity + torch.randn_like(identity) * noise
    loss, index = torch.cat([identity, reprojection], 1).min(1, keepdim=True)
    return loss, index >= identity.shape[1]


def get_smooth_loss(disp: torch.Tensor, image: torch.Tensor, order: int = 1) -> torch.Tensor:
    """Edge-aware smoothness mean(|dx d| exp(-mean_c |dx I|)) + mean(|dy d| exp(-mean_c |dy I|)), d mean-normalised disparity
    (Monodepth2). order 2: the second differences |d[x-1] - 2 d[x] + d[x+1]| instead, weighted by the larger of the two
    image gradients beside x, so a plane costs nothing and an image edge on either side frees the kink."""
    grad_img_x = (image[:, :, :, :-1] - image[:, :, :, 1:]).abs().mean(1, keepdim=True)
    grad_img_y = (image[:, :, :-1, :] - image[:, :, 1:, :]).abs().mean(1, keepdim=True)
    if order == 1:
        grad_disp_x = (disp[:, :, :, :-1] - disp[:, :, :, 1:]).abs()
        grad_disp_y = (disp[:, :, :-1, :] - disp[:, :, 1:, :]).abs()
        return (grad_disp_x * torch.exp(-grad_img_x)).mean() + (grad_disp_y * torch.exp(-grad_img_y)).mean()
    if order != 2:
        raise ValueError(f"smoothness order must be 1 or 2, got {order!r}")
    curv_x = (disp[:, :, :, :-2] - 2 * disp[:, :, :, 1:-1] + disp[:, :, :, 2:]).abs()
    curv_y = (disp[:, :, :-2, :] - 2 * disp[:, :, 1:-1, :] + disp[:, :, 2:, :]).abs()
    edge_x = torch.maximum(grad_img_x[:, :, :, :-1], grad_img_x[:, :, :, 1:])
    edge_y = torch.maximum(grad_img_y[:, :, :-1, :], grad_img_y[:, :, 1:, :])
    return (curv_x * torch.exp(-edge_x)).mean() + (curv_y * torch.exp(-edge_y)).mean()


def mean_normalised(disp: torch.Tensor) -> torch.Tensor:
    """disp / its per-image mean: the smoothness term then does not reward shrinking the depth scale (Monodepth2)."""
    return disp / (disp.mean(dim=(2, 3), keepdim=True) + 1e-7)


def warp_sources(disps: dict[tuple[str, int], torch.Tensor], sources: dict[int, torch.Tensor], poses: dict[int, torch.Tensor],
                 K: torch.Tensor, inv_K: torch.Tensor, min_depth: float = 0.1, max_depth: float = 100.0,
                 align_corners: bool = True, backproject: BackprojectDepth | None = None,
                 project: Project3D | None = None) -> dict[tuple[int, int], torch.Tensor]:
    """Synthesise the target from each source at each disparity scale: {(offset, scale): warped (B, 3, H, W)}.

    As in Monodepth2 (not its v1 multiscale), every disparity is upsampled bilinearly to full resolution first, then converted to
    depth and used with the full-resolution K (4x4) and inv_K to sample the full-resolution source; poses map target to source.
    """
    offsets = set(sources)
    if set(poses) != offsets:
        raise ValueError(f"poses for offsets {sorted(poses)} do not match the source frames {sorted(offsets)}")
    h, w = next(iter(sources.values())).shape[-2:]
    backproject = backproject if backproject is not None else BackprojectDepth(h, w).to(K.device)
    project = project if project is not None else Project3D(h, w)
    warped = {}
    for (_, scale), disp in sorted(disps.items()):
        disp = F.interpolate(disp, (h, w), mode="bilinear", align_corners=False)
        _, depth = disp_to_depth(disp, min_depth, max_depth)
        points = backproject(depth, inv_K)
        for offset in sorted(offsets):
            grid = project(points, K, poses[offset])
            warped[(offset, scale)] = warp_image(sources[offset], grid, align_corners)
    return warped


@dataclass
class Monodepth2LossResult:
    loss: torch.Tensor
    per_scale: dict[int, torch.Tensor]
    smoothness: dict[int, torch.Tensor]
    # Fraction of full-resolution pixels (scale 0) where a warped source beat every unwarped one: 1 - the auto-masked share.
    # A detached 0-d tensor, so reading it (.item()) is the caller's choice of when to synchronise a GPU.
    warp_selected_fraction: torch.Tensor
    warped: dict[tuple[int, int], torch.Tensor]
    # Further detached scalars to log, from terms added by the trainer (e.g. train/echo_supervision.py's).
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class Monodepth2Loss(nn.Module):
    """The full multi-scale loss: for each scale s, mean per-pixel min reprojection + disparity_smoothness / 2^s * edge-aware
    smoothness of the mean-normalised disp_s against the target at scale s; total = mean over scales (trainer.compute_losses).

    The colour at scale s, made by Monodepth2's data loader with an antialiased resize, is area-downsampled from the target here.
    """

    def __init__(self, height: int, width: int, scales: list[int] | tuple[int, ...] = (0, 1, 2, 3), ssim_weight: float = 0.85,
                 disparity_smoothness: float = 1e-3, min_depth: float = 0.1, max_depth: float = 100.0, automask: bool = True,
                 min_reprojection: bool = True, align_corners: bool = True, v1_multiscale: bool = False,
                 smoothness_order: int = 1) -> None:
        super().__init__()
        if 0 not in scales or any(s not in range(4) for s in scales):
            raise ValueError(f"Monodepth2Loss scales must be a subset of [0, 1, 2, 3] containing 0, got {list(scales)}")
        self.height, self.width, self.scales = height, width, sorted(scales)
        self.ssim_weight, self.disparity_smoothness = ssim_weight, disparity_smoothness
        if smoothness_order not in (1, 2):
            raise ValueError(f"Monodepth2Loss smoothness_order must be 1 or 2, got {smoothness_order!r}")
        self.smoothness_order = smoothness_order
        self.min_depth, self.max_depth = min_depth, max_depth
        self.automask, self.min_reprojection, self.align_corners = automask, min_reprojection, align_corners
        self.ssim = SSIM()
        self.backproject = BackprojectDepth(height, width)
        self.project = Project3D(height, width)
        # Monodepth2's --v1_multiscale: each scale warps its own-resolution colour with its own disparity and K, so the
        # coarse scales see a motion of n pixels as n / 2^s and the pose gets a gradient from further away.
        self.v1_multiscale = v1_multiscale
        self.backproject_at = nn.ModuleDict({str(s): BackprojectDepth(height // 2**s, width // 2**s) for s in self.scales})

    @classmethod
    def from_config(cls, config: Monodepth2Config) -> Monodepth2Loss:
        return cls(config.height, config.width, config.scales, config.ssim_weight, config.disparity_smoothness, config.min_depth,
                   config.max_depth, config.automask, config.min_reprojection, config.warp_align_corners, config.v1_multiscale,
                   config.smoothness_order)

    def _check(self, target: torch.Tensor, sources: dict[int, torch.Tensor], disps: dict[tuple[str, int], torch.Tensor],
               K: torch.Tensor | None, inv_K: torch.Tensor | None) -> None:
        expected = (3, self.height, self.width)
        if target.dim() != 4 or tuple(target.shape[1:]) != expected:
            raise ValueError(f"target frame must be (B, {', '.join(map(str, expected))}), got {tuple(target.shape)}")
        if not sources:
            raise ValueError("the photometric loss needs at least one source frame (a triple with both neighbours missing?)")
        for offset, source in sources.items():
            if source is None:
                raise ValueError(f"source frame {offset:+d} is missing (a triple without that neighbour)")
            if source.shape != target.shape:
                raise ValueError(f"source frame {offset:+d} has shape {tuple(source.shape)}, the target {tuple(target.shape)}")
        if K is None or inv_K is None:
            raise ValueError("the photometric loss needs K and inv_K (intrinsics absent from the data?)")
        for s in self.scales:
            disp = disps.get(("disp", s))
            want = (target.shape[0], 1, self.height // 2**s, self.width // 2**s)
            if disp is None or tuple(disp.shape) != want:
                got = None if disp is None else tuple(disp.shape)
                raise ValueError(f"disparity at scale {s} must have shape {want}, got {got}")

    def forward(self, target: torch.Tensor, sources: dict[int, torch.Tensor], disps: dict[tuple[str, int], torch.Tensor],
                poses: dict[int, torch.Tensor], K: torch.Tensor, inv_K: torch.Tensor,
                exclude: torch.Tensor | None = None) -> Monodepth2LossResult:
        """target (B, 3, H, W) and sources {offset: (B, 3, H, W)}, un-augmented, in [0, 1]; disps from DepthNet;
        poses {offset: (B, 4, 4)} target -> source; K, inv_K: full-resolution 4x4 intrinsics, (B, 4, 4) or (4, 4).
        exclude: (B, 1, H, W) bool, pixels left out of the photometric term (not Monodepth2: e.g. moving objects that
        another term supervises); the mean runs over the rest."""
        self._check(target, sources, disps, K, inv_K)
        if exclude is not None and exclude.shape != (target.shape[0], 1, *target.shape[-2:]):
            raise ValueError(f"photometric loss: exclude must be (B, 1, H, W) = {(target.shape[0], 1, *target.shape[-2:])}, "
                             f"got {tuple(exclude.shape)}")
        keep = None if exclude is None else (~exclude.bool()).float()
        disps = {("disp", s): disps[("disp", s)] for s in self.scales}
        offsets = sorted(sources)
        if self.v1_multiscale:
            warped, targets, identities = self._warp_per_scale(target, sources, disps, poses, K)
        else:
            warped = warp_sources(disps, sources, poses, K, inv_K, self.min_depth, self.max_depth, self.align_corners,
                                  self.backproject, self.project)
            identity = None
            if self.automask:
                identity = torch.cat([reprojection_loss(sources[o], target, self.ssim, self.ssim_weight) for o in offsets], 1)
            targets, identities = {s: target for s in self.scales}, {s: identity for s in self.scales}
        per_scale, smoothness = {}, {}
        for s in self.scales:
            reprojection = torch.cat([reprojection_loss(warped[(o, s)], targets[s], self.ssim, self.ssim_weight)
                                      for o in offsets], 1)
            per_pixel, selected = min_reprojection_with_automask(reprojection, identities[s],
                                                                 average=not self.min_reprojection)
            if s == 0:
                warp_fraction = selected.float().mean().detach()
            disp = disps[("disp", s)]
            colour = target if s == 0 else F.interpolate(target, disp.shape[-2:], mode="area")
            smoothness[s] = get_smooth_loss(mean_normalised(disp), colour, self.smoothness_order)
            photometric = per_pixel.mean() if keep is None else (per_pixel * keep).sum() / keep.sum().clamp_min(1.0)
            per_scale[s] = photometric + self.disparity_smoothness * smoothness[s] / 2**s
        total = torch.stack(list(per_scale.values())).mean()
        return Monodepth2LossResult(total, per_scale, smoothness, warp_fraction, warped)

    def _warp_per_scale(self, target: torch.Tensor, sources: dict[int, torch.Tensor],
                        disps: dict[tuple[str, int], torch.Tensor], poses: dict[int, torch.Tensor], K: torch.Tensor
                        ) -> tuple[dict[tuple[int, int], torch.Tensor], dict[int, torch.Tensor], dict[int, torch.Tensor | None]]:
        """v1_multiscale: per scale s, the frames area-downsampled to H / 2^s, K rescaled to that size (pixel centres,
        geometry.scale_intrinsics), the target synthesised from the sources with disp_s; identity errors at that size."""
        warped, targets, identities = {}, {}, {}
        for s in self.scales:
            size = (self.height // 2**s, self.width // 2**s)
            def at(x: torch.Tensor, s: int = s, size: tuple[int, int] = size) -> torch.Tensor:
                return x if s == 0 else F.interpolate(x, size, mode="area")
            K_s = scale_intrinsics(K, (self.height, self.width), size)
            inv_K_s = torch.linalg.inv(K_s.double()).to(K_s.dtype)
            _, depth = disp_to_depth(disps[("disp", s)], self.min_depth, self.max_depth)
            points = self.backproject_at[str(s)](depth, inv_K_s)
            project = Project3D(*size)
            targets[s] = at(target)
            small = {o: at(src) for o, src in sources.items()}
            for o in sorted(sources):
                warped[(o, s)] = warp_image(small[o], project(points, K_s, poses[o]), self.align_corners)
            identities[s] = torch.cat([reprojection_loss(small[o], targets[s], self.ssim, self.ssim_weight)
                                       for o in sorted(sources)], 1) if self.automask else None
        return warped, targets, identities
