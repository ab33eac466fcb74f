"""Depth figures: colourised depth maps and the RGB | ground truth | prediction | error panels of `avs-depth evaluate --figures`.

Conventions: ground truth and prediction share one colour scale (metres); NaN, inf and invalid ground truth (outside
min_depth < gt < max_depth) are drawn in grey, never as a colour that reads as a depth; the error map is the absolute
relative error |pred - gt| / gt on valid pixels.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from avs_depth_core.files import atomic_output, save_figure
from avs_depth_core.metrics import resize_prediction

DEPTH_CMAP = "magma_r"  # near = bright
ERROR_CMAP = "inferno"
INVALID_RGB = (128, 128, 128)


def to_numpy_image(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """(3,H,W) or (H,W,3) float in [0,1] or uint8 -> (H,W,3) uint8."""
    a = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"image: expected (3, H, W) or (H, W, 3), got shape {a.shape}")
    if a.dtype != np.uint8:
        a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return a


def to_numpy_map(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """(1,H,W), (H,W) or (1,1,H,W) -> (H,W) float32."""
    a = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    a = np.squeeze(a)
    if a.ndim != 2:
        raise ValueError(f"depth map: expected (H, W) after squeezing, got shape {a.shape}")
    return a.astype(np.float32)


def colourise(values: np.ndarray | torch.Tensor, vmin: float, vmax: float, cmap: str = DEPTH_CMAP,
              valid: np.ndarray | None = None) -> np.ndarray:
    """(H,W) -> (H,W,3) uint8 through `cmap` over [vmin, vmax]; NaN/inf and pixels outside `valid` are grey."""
    a = to_numpy_map(values)
    ok = np.isfinite(a) if valid is None else (np.isfinite(a) & valid)
    norm = np.clip((np.where(ok, a, vmin) - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    rgb = (plt.get_cmap(cmap)(norm)[..., :3] * 255.0 + 0.5).astype(np.uint8)
    rgb[~ok] = INVALID_RGB
    return rgb


def save_depth_png(path: str | Path, depth: np.ndarray | torch.Tensor, vmax: float | None = None, vmin: float = 0.0) -> Path:
    """A colourised depth PNG (vmax default: the 99th percentile of the finite depths)."""
    from PIL import Image

    a = to_numpy_map(depth)
    finite = a[np.isfinite(a)]
    if vmax is None:
        vmax = float(np.percentile(finite, 99)) if finite.size else 1.0
    path = Path(path)
    with atomic_output(path) as tmp:
        Image.fromarray(colourise(a, vmin, max(vmax, vmin + 1e-6))).save(tmp, format="PNG")
    return path


def save_prediction_figure(path: str | Path, rgb: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor,
                           pred: np.ndarray | torch.Tensor, min_depth: float, max_depth: float, title: str = "",
                           max_error: float = 0.5) -> Path:
    """Four panels: RGB, ground truth, prediction (shared scale, metres) and the abs-rel error map on valid pixels.

    pred is resized to the ground truth's resolution first, as in the metrics.
    """
    gt_np = to_numpy_map(gt)
    pred_np = resize_prediction(torch.as_tensor(to_numpy_map(pred))[None, None], gt_np.shape)[0, 0].numpy()
    valid = np.isfinite(gt_np) & (gt_np > min_depth) & (gt_np < max_depth)
    shown = np.concatenate([gt_np[valid], pred_np[np.isfinite(pred_np)]])
    vmax = float(np.percentile(shown, 99)) if shown.size else max_depth
    error = np.where(valid & np.isfinite(pred_np), np.abs(pred_np - gt_np) / np.where(valid, gt_np, 1.0), np.nan)

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    axes[0].imshow(to_numpy_image(rgb))
    axes[0].set_title("RGB")
    grey = tuple(np.array(INVALID_RGB) / 255.0)
    depth_map = plt.get_cmap(DEPTH_CMAP).with_extremes(bad=grey)
    err_map = plt.get_cmap(ERROR_CMAP).with_extremes(bad=grey)
    im = axes[1].imshow(np.where(valid, gt_np, np.nan), cmap=depth_map, vmin=0.0, vmax=vmax)
    axes[1].set_title("ground truth (grey: invalid)")
    axes[2].imshow(np.where(np.isfinite(pred_np), pred_np, np.nan), cmap=depth_map, vmin=0.0, vmax=vmax)
    axes[2].set_title("prediction")
    fig.colorbar(im, ax=axes[1:3], fraction=0.025, label="depth (m)")
    ie = axes[3].imshow(error, cmap=err_map, vmin=0.0, vmax=max_error)
    mean_err = float(np.nanmean(error)) if np.isfinite(error).any() else float("nan")
    axes[3].set_title(f"|pred - gt| / gt (mean {mean_err:.3f})")
    fig.colorbar(ie, ax=axes[3], fraction=0.046)
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    try:
        return save_figure(fig, path, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
