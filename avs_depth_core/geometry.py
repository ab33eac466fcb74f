"""Camera geometry for view synthesis: intrinsics per resolution, back-projection, projection, poses from axis-angle.

Follows Monodepth2 (nianticlabs/monodepth2 layers.py): intrinsics are 4x4, the pixel grid is integer (u, v) in xy order, and
projected pixels are normalised to grid_sample's [-1, 1] by u / (W - 1), the align_corners=True convention. The modules here
take any batch size (Monodepth2's are built for one).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def as_homogeneous_intrinsics(K: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) or (..., 4, 4) camera matrix -> (..., 4, 4) with the 3x3 block in the top left and 1 at [3, 3]."""
    if K.shape[-2:] == (4, 4):
        return K
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"intrinsics must be 3x3 or 4x4 (optionally batched), got shape {tuple(K.shape)}")
    out = torch.zeros(*K.shape[:-2], 4, 4, dtype=K.dtype, device=K.device)
    out[..., :3, :3] = K
    out[..., 3, 3] = 1.0
    return out


def check_intrinsics(K: torch.Tensor | np.ndarray | None, source: str = "intrinsics") -> torch.Tensor:
    """Return K as a float tensor, or raise ValueError naming `source` when it is absent, non-finite or has fx, fy <= 0."""
    if K is None:
        raise ValueError(f"{source}: camera intrinsics are missing (a bag needs a CameraInfo topic for the image topic)")
    K = torch.as_tensor(K, dtype=torch.float32)
    if K.shape[-2:] not in ((3, 3), (4, 4)):
        raise ValueError(f"{source}: intrinsics must be 3x3 or 4x4, got shape {tuple(K.shape)}")
    if not torch.isfinite(K).all():
        raise ValueError(f"{source}: intrinsics contain NaN or inf")
    if (K[..., 0, 0] <= 0).any() or (K[..., 1, 1] <= 0).any():
        raise ValueError(f"{source}: focal lengths must be positive (fx={K[..., 0, 0].flatten().tolist()}, "
                         f"fy={K[..., 1, 1].flatten().tolist()}); an all-zero CameraInfo means the camera is uncalibrated")
    return K


def scale_intrinsics(K: torch.Tensor | np.ndarray, from_size: tuple[int, int],
                     to_size: tuple[int, int]) -> torch.Tensor | np.ndarray:
    """Intrinsics (3x3 or 4x4, optionally batched) of an image resized from (H, W) = from_size to to_size.

    The one pixel convention of the package: integer pixel coordinates are pixel centres, and a resize with
    align_corners=False (what the datasets' bilinear resize does) maps them as u' = (u + 0.5) * W'/W - 0.5, likewise v. So
    fx and the skew scale by W'/W, fy by H'/H, and the principal point moves as cx' = (cx + 0.5) * W'/W - 0.5,
    cy' = (cy + 0.5) * H'/H - 0.5. NumPy input is computed and returned in float64; a tensor keeps its float dtype.
    """
    (h0, w0), (h1, w1) = from_size, to_size
    if min(h0, w0, h1, w1) <= 0:
        raise ValueError(f"image sizes must be positive, got from {from_size} to {to_size}")
    sx, sy = w1 / w0, h1 / h0
    if isinstance(K, np.ndarray):
        out = np.asarray(K, dtype=np.float64).copy()
    else:
        out = K.clone().float() if not K.is_floating_point() else K.clone()
    out[..., 0, :2] *= sx
    out[..., 1, :2] *= sy
    out[..., 0, 2] = (out[..., 0, 2] + 0.5) * sx - 0.5
    out[..., 1, 2] = (out[..., 1, 2] + 0.5) * sy - 0.5
    return out


def intrinsics_pyramid(K: torch.Tensor | np.ndarray | None, image_size: tuple[int, int], net_size: tuple[int, int],
                       scales: list[int] | tuple[int, ...],
                       source: str = "intrinsics") -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """K (3x3 or 4x4, optionally batched) for an image of size image_size -> {s: (K_s, inv_K_s)} as 4x4 for (H // 2^s, W // 2^s).

    net_size is the network input (H, W); scale s has Monodepth2's size (H // 2^s, W // 2^s) (trainer.py), and K follows
    the resize by scale_intrinsics.
    """
    K = check_intrinsics(K, source)
    h, w = net_size
    out = {}
    for s in scales:
        K_s = as_homogeneous_intrinsics(scale_intrinsics(K, image_size, (h // 2**s, w // 2**s)))
        out[s] = (K_s, torch.linalg.inv(K_s.double()).to(K_s.dtype))
    return out


def rot_from_axisangle(axisangle: torch.Tensor) -> torch.Tensor:
    """Axis-angle (B, 1, 3) or (B, 3) -> rotation (B, 4, 4) by Rodrigues: R = I + sin(a) [k]x + (1 - cos(a)) [k]x^2.

    As in Monodepth2, the axis is v / (|v| + 1e-7), so a zero vector gives the identity without a division by zero.
    """
    v = axisangle.reshape(-1, 3)
    angle = v.norm(dim=1, keepdim=True)
    k = v / (angle + 1e-7)
    zero = torch.zeros_like(k[:, 0])
    cross = torch.stack([zero, -k[:, 2], k[:, 1],
                         k[:, 2], zero, -k[:, 0],
                         -k[:, 1], k[:, 0], zero], dim=1).view(-1, 3, 3)
    sin, one_minus_cos = torch.sin(angle)[:, :, None], (1 - torch.cos(angle))[:, :, None]
    eye = torch.eye(3, dtype=v.dtype, device=v.device).expand_as(cross)
    rot3 = eye + sin * cross + one_minus_cos * (cross @ cross)
    rot = torch.zeros(v.shape[0], 4, 4, dtype=v.dtype, device=v.device)
    rot[:, :3, :3] = rot3
    rot[:, 3, 3] = 1.0
    return rot


def get_translation_matrix(translation: torch.Tensor) -> torch.Tensor:
    """Translation (B, 1, 3) or (B, 3) -> (B, 4, 4) homogeneous transform."""
    t = translation.reshape(-1, 3)
    T = torch.eye(4, dtype=t.dtype, device=t.device).repeat(t.shape[0], 1, 1)
    T[:, :3, 3] = t
    return T


def transformation_from_parameters(axisangle: torch.Tensor, translation: torch.Tensor, invert: bool = False) -> torch.Tensor:
    """PoseNet output -> 4x4 transform T(t) @ R, or its inverse R^T @ T(-t) when invert (Monodepth2: frames before the target)."""
    R = rot_from_axisangle(axisangle)
    if invert:
        return R.transpose(1, 2) @ get_translation_matrix(-translation)
    return get_translation_matrix(translation) @ R


def _batched(K: torch.Tensor, batch: int) -> torch.Tensor:
    K = as_homogeneous_intrinsics(K)
    return K.expand(batch, 4, 4) if K.dim() == 2 or K.shape[0] == 1 else K


class BackprojectDepth(nn.Module):
    """Depth (B, 1, H, W) and inverse intrinsics -> homogeneous camera points (B, 4, H*W): X = depth * K^-1 [u, v, 1]^T."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.height, self.width = height, width
        v, u = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij")
        pix = torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(height * width)], 0)
        self.register_buffer("pix_coords", pix[None], persistent=False)

    def forward(self, depth: torch.Tensor, inv_K: torch.Tensor) -> torch.Tensor:
        b = depth.shape[0]
        if depth.shape[-2:] != (self.height, self.width):
            raise ValueError(f"BackprojectDepth built for {self.height}x{self.width}, got depth of shape {tuple(depth.shape)}")
        rays = _batched(inv_K, b)[:, :3, :3].to(depth.dtype) @ self.pix_coords.to(depth.dtype)
        points = depth.reshape(b, 1, -1) * rays
        return torch.cat([points, torch.ones_like(points[:, :1])], 1)


class Project3D(nn.Module):
    """Camera points (B, 4, H*W), intrinsics K, pose T -> grid (B, H, W, 2) in [-1, 1] for grid_sample(align_corners=True).

    Points at or behind the camera plane are not masked; as in Monodepth2 the +eps only avoids a division by zero.
    """

    def __init__(self, height: int, width: int, eps: float = 1e-7) -> None:
        super().__init__()
        self.height, self.width, self.eps = height, width, eps

    def forward(self, points: torch.Tensor, K: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
        b = points.shape[0]
        P = (_batched(K, b).to(points.dtype) @ T.to(points.dtype))[:, :3, :]
        cam = P @ points
        pix = cam[:, :2] / (cam[:, 2:3] + self.eps)
        pix = pix.view(b, 2, self.height, self.width).permute(0, 2, 3, 1)
        size = torch.tensor([self.width - 1, self.height - 1], dtype=pix.dtype, device=pix.device)
        return (pix / size - 0.5) * 2


def warp_image(source: torch.Tensor, grid: torch.Tensor, align_corners: bool = True) -> torch.Tensor:
    """Sample source (B, C, H, W) at grid (B, H, W, 2), border padding (Monodepth2).

    align_corners=True matches Project3D's u / (W - 1) normalisation and torch 0.4.1, the version Monodepth2 was released with;
    the released code calls grid_sample with the default, which became align_corners=False in torch 1.3 (a sub-pixel shift).
    Kept True as the geometry Monodepth2 meant; False reproduces the released code on current torch (test/golden).
    """
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=align_corners)
