"""The dynamic-region figure: an image, its moving-object masks and the depth, and optionally predictions with their error
maps (one row each, e.g. a baseline and a model trained with mined labels), the dynamic region outlined on every map.

    save_dynamic_figure("f.png", rgb, gt, instances, moving_ids={1, 3}, predictions={"baseline": d0, "mined": d1},
                        max_depth=12.0, title="bv1 test frame 40")
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from avs_depth_core.data.instances import DYNAMIC_MIN_FRACTION, resize_labels
from avs_depth_core.evaluation.regions import region_masks
from avs_depth_core.files import save_figure
from avs_depth_core.metrics import resize_prediction
from avs_depth_core.visualise import DEPTH_CMAP, ERROR_CMAP, INVALID_RGB, to_numpy_image, to_numpy_map


def mask_overlay(rgb: np.ndarray, instances: np.ndarray, moving_ids: set[int]) -> np.ndarray:
    """The image dimmed, moving instances in saturated colours (one per id), still ones in grey."""
    out = rgb.astype(np.float32) * 0.35
    cmap = plt.get_cmap("tab10")
    for k in np.unique(instances):
        if k == 0:
            continue
        mask = instances == k
        colour = np.array(cmap(int(k) % 10)[:3]) * 255 if int(k) in moving_ids else np.array([170.0, 170.0, 170.0])
        out[mask] = 0.3 * rgb[mask] + 0.7 * colour
    return np.clip(out, 0, 255).astype(np.uint8)


def save_dynamic_figure(path: str | Path, rgb: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor,
                        instances: np.ndarray, moving_ids: set[int],
                        predictions: dict[str, np.ndarray | torch.Tensor] | None = None, *, min_depth: float = 1e-3,
                        max_depth: float = 30.0, title: str = "", max_error: float = 0.5,
                        min_fraction: float = DYNAMIC_MIN_FRACTION) -> Path:
    """Row 1: RGB | moving-object masks (coloured: moving; grey: still; white outline: the evaluated dynamic region) |
    ground truth. Then per prediction: the prediction (resized to the ground truth, shared depth scale) | its abs-rel error
    map, each with the dynamic region outlined."""
    image = to_numpy_image(rgb)
    gt_np = to_numpy_map(gt)
    labels = resize_labels(instances, gt_np.shape).numpy()
    image_labels = resize_labels(instances, image.shape[:2]).numpy()
    dynamic = region_masks(torch.from_numpy(labels), moving_ids, min_fraction)["dynamic"].numpy()
    valid = np.isfinite(gt_np) & (gt_np > min_depth) & (gt_np < max_depth)
    preds = {name: resize_prediction(torch.as_tensor(to_numpy_map(p))[None, None], gt_np.shape)[0, 0].numpy()
             for name, p in (predictions or {}).items()}
    shown = np.concatenate([gt_np[valid], *(p[np.isfinite(p)] for p in preds.values())])
    vmax = float(np.percentile(shown, 99)) if shown.size else max_depth
    grey = tuple(np.array(INVALID_RGB) / 255.0)
    depth_map = plt.get_cmap(DEPTH_CMAP).with_extremes(bad=grey)
    err_map = plt.get_cmap(ERROR_CMAP).with_extremes(bad=grey)
    rows = 1 + len(preds)
    fig, axes = plt.subplots(rows, 3, figsize=(15, 3.0 * rows), squeeze=False)
    axes[0, 0].imshow(image)
    axes[0, 0].set_title("RGB")
    axes[0, 1].imshow(mask_overlay(image, image_labels, moving_ids))
    share = 100 * float(dynamic.mean())
    axes[0, 1].set_title(f"objects (colour: moving, grey: still); dynamic {share:.1f} %")
    im = axes[0, 2].imshow(np.where(valid, gt_np, np.nan), cmap=depth_map, vmin=0.0, vmax=vmax)
    axes[0, 2].set_title("ground truth depth")
    fig.colorbar(im, ax=axes[0, 2], fraction=0.046, label="m")
    for r, (name, p) in enumerate(preds.items(), start=1):
        error = np.where(valid & np.isfinite(p), np.abs(p - gt_np) / np.where(valid, gt_np, 1.0), np.nan)
        axes[r, 0].imshow(np.where(np.isfinite(p), p, np.nan), cmap=depth_map, vmin=0.0, vmax=vmax)
        axes[r, 0].set_title(f"{name}: depth")
        ie = axes[r, 1].imshow(error, cmap=err_map, vmin=0.0, vmax=max_error)
        dyn = error[dynamic & valid]
        static = error[~dynamic & valid]
        axes[r, 1].set_title(f"{name}: |pred - gt| / gt\nstatic {np.nanmean(static) if static.size else np.nan:.3f}, "
                             f"dynamic {np.nanmean(dyn) if dyn.size else np.nan:.3f}")
        fig.colorbar(ie, ax=axes[r, 1], fraction=0.046)
        axes[r, 2].set_axis_off()
    if dynamic.any():  # the image's panels at the image's size, the maps' at the ground truth's
        at_image = resize_labels(dynamic.astype(np.int64), image.shape[:2]).numpy().astype(float)
        for ax in axes[0, :2]:
            ax.contour(at_image, levels=[0.5], colors="white", linewidths=0.8)
        for ax in axes[1:, :2].ravel():
            ax.contour(dynamic.astype(float), levels=[0.5], colors="white", linewidths=0.8)
    for ax in axes.ravel():
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    try:
        return save_figure(fig, path, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
