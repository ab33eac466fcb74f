"""Retraining Monodepth2 on mined dynamic-region pseudo labels: the final stage of Nguyen et al. ("Mining Supervision for
Dynamic Regions in Self-Supervised Monocular Depth Estimation", CVPR 2024; their trainer/train_final_depthnet.py).

`avs-depth train --model monodepth2 --dynamic-labels LABELS.npz --init STAGE1_CKPT` (config `train.dynamic_labels`):
the DepthNet and PoseNet start from the stage-1 weights and train with Monodepth2's losses plus weight x L_dyn
(losses/dynamic.py: the scale-invariant L1 on the dynamic-object masks), averaged over the disparity scales, each
upsampled to full resolution as Monodepth2's photometric loss does. The labels come from `avs-depth mine-labels`
(train/mining.py): per centre frame a depth label (the scene depth, the echo-aligned object depth inside dynamic objects;
0 = none) and the dynamic mask. Frames without a label (or without dynamic objects) add nothing. Mirrored samples get the
mirrored label. Their stage 4 uses Adam lr 2e-5 (a tenth of stage 1's) for 5 epochs; set train.lr and train.epochs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from avs_depth_core.losses.dynamic import DYNAMIC_DEPTH_LOSS_WEIGHT, LABEL_PERCENTILE, LABEL_RANGES, dynamic_depth_loss
from avs_depth_core.models.monodepth2 import disp_to_depth

LABEL_KEYS = ("stamps", "label", "mask")


@dataclass
class DynamicLabelsConfig:
    """`train.dynamic_labels` (module docstring); labels null = off."""

    labels: str | None = None  # .npz written by `avs-depth mine-labels`
    init_checkpoint: str | None = None  # stage-1 Monodepth2 checkpoint (with its PoseNet) the retraining starts from
    weight: float = DYNAMIC_DEPTH_LOSS_WEIGHT  # their dynamic_depth_loss_weight 0.1
    percentile: float = LABEL_PERCENTILE  # kept labels up to this percentile of the prediction (their 90)
    # Not theirs: their L1 is in the DepthNet's units, about 1 for their KITTI/Cityscapes nets; the CPU recipe's DepthNet
    # (depth range [0.01, 10]) predicts about 0.03 on the simulated world, where the raw L1 is ~100x smaller than the
    # photometric loss (measured bv2 seed 101: 0.001-0.002 against 0.1) and the weight 0.1 means nothing. True divides
    # each image's L1 by its median predicted depth; false = their raw L1.
    normalise: bool = True
    # Not theirs: their stage 4 warps with the residual flow, so a moving object's pixels are explained by its motion and
    # the photometric loss does not pull its depth. This retraining has no motion model: true leaves the labelled dynamic
    # pixels out of the photometric term (the label term supervises them); false keeps Monodepth2's loss everywhere.
    mask_photometric: bool = False
    # prediction: their kept range [min(pred), percentile of pred]; none (not theirs): every labelled pixel. Measured
    # (bv2 seed 101, oracle labels): with theirs the retrained DepthNet kept 17 % of the dynamic pixels in the term (43 % at
    # stage 1) and ended worse than stage 1 on the very frames it was trained on (losses/dynamic.py).
    label_range: str = "prediction"
    # Not theirs: a second L_dyn, this weight x the same scale-invariant L1 on the labelled pixels outside the dynamic
    # masks, where the label is stage 1's own depth (s_t R): it holds the static scene where stage 1 put it while the
    # objects move to their labels. 0 = off (theirs). Measured on bv2 seed 303 (README): without it the objects' gain
    # came with a static regression (Abs Rel x 1.12).
    static_weight: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.labels is not None

    def check(self) -> None:
        where = "config: train.dynamic_labels"
        if self.enabled and not Path(self.labels).is_file():
            raise FileNotFoundError(f"{where}.labels: {self.labels} not found (write it with avs-depth mine-labels)")
        if self.init_checkpoint is not None and not (Path(self.init_checkpoint).exists()
                                                     or Path(f"{self.init_checkpoint}.safetensors").exists()):
            raise FileNotFoundError(f"{where}.init_checkpoint: {self.init_checkpoint} not found")
        if not self.weight > 0:
            raise ValueError(f"{where}.weight must be positive, got {self.weight}")
        if self.static_weight < 0:
            raise ValueError(f"{where}.static_weight must be >= 0, got {self.static_weight}")
        if not 0 < self.percentile <= 100:
            raise ValueError(f"{where}.percentile must be in (0, 100], got {self.percentile}")
        if self.label_range not in LABEL_RANGES:
            raise ValueError(f"{where}.label_range must be one of {list(LABEL_RANGES)}, got {self.label_range!r}")


def save_labels(path: str | Path, stamps: np.ndarray, label: np.ndarray, mask: np.ndarray,
                meta: dict[str, Any] | None = None) -> Path:
    """stamps (N,), label (N, H, W) depth (0 = none), mask (N, H, W) bool -> a compressed .npz (+ meta as JSON inside)."""
    path = Path(path)
    if label.shape != mask.shape or label.ndim != 3 or len(stamps) != label.shape[0]:
        raise ValueError(f"labels: stamps {np.shape(stamps)}, label {label.shape} and mask {mask.shape} do not match")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, stamps=np.asarray(stamps, np.int64), label=label.astype(np.float16),
                        mask=mask.astype(bool), meta=np.array(json.dumps(meta or {})))
    return path


def load_labels(path: str | Path) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """{stamp_ns: (label (H, W) float32, mask (H, W) bool)}, meta."""
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in LABEL_KEYS if k not in data]
        if missing:
            raise ValueError(f"{path}: not a dynamic-labels file (missing {missing}); write it with avs-depth mine-labels")
        stamps, label, mask = data["stamps"], data["label"].astype(np.float32), data["mask"].astype(bool)
        meta = json.loads(str(data["meta"])) if "meta" in data else {}
    return {int(s): (label[i], mask[i]) for i, s in enumerate(stamps)}, meta


class WithDynamicLabels(Dataset):
    """A TripletBagDataset whose items also carry the centre frame's "dynamic_label" (1, H, W) float32 (0 = none) and
    "dynamic_mask" (1, H, W) bool, resized (nearest) to the dataset's image size when stored at another."""

    def __init__(self, dataset: Any, path: str | Path) -> None:
        self.dataset = dataset
        self.labels, self.meta = load_labels(path)
        self.size = tuple(dataset.settings.image_size)
        stamps = {int(s) for s in np.asarray(dataset.cache.array("stamps"))}
        if not stamps & set(self.labels):
            raise ValueError(f"{path}: no label for any frame of {dataset.bag} (mined on another bag?)")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        found = self.labels.get(int(item["stamp_ns"]))
        if found is None:
            label, mask = torch.zeros(1, *self.size), torch.zeros(1, *self.size, dtype=torch.bool)
        else:
            label, mask = torch.from_numpy(found[0])[None], torch.from_numpy(found[1])[None]
            if tuple(label.shape[-2:]) != self.size:
                label = F.interpolate(label[None], self.size, mode="nearest")[0]
                mask = F.interpolate(mask[None].float(), self.size, mode="nearest")[0] > 0.5
        item.update({"dynamic_label": label, "dynamic_mask": mask})
        return item


def mirrored_labels(batch: dict[str, Any], flipped: torch.Tensor, device: torch.device
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's "dynamic_label" (float) and "dynamic_mask" (bool), (B, 1, H, W) on `device`, mirrored like the frames."""
    label = batch["dynamic_label"].to(device).float()
    mask = batch["dynamic_mask"].to(device).bool()
    flip = flipped.to(device).view(-1, 1, 1, 1)
    return torch.where(flip, label.flip(-1), label), torch.where(flip, mask.flip(-1), mask)


def photometric_exclusion(batch: dict[str, Any], flipped: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The batch's dynamic masks (1 where a label supervises a moving object), mirrored like the frames: (B, 1, H, W)."""
    label, mask = mirrored_labels(batch, flipped, device)
    return mask & (label > 0)


def dynamic_term(disps: dict[tuple[str, int], torch.Tensor], batch: dict[str, Any], flipped: torch.Tensor,
                 cfg: DynamicLabelsConfig, depth_range: tuple[float, float]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """weight x L_dyn averaged over the disparity scales (each upsampled to full resolution), plus static_weight x the
    same L1 outside the dynamic masks when set -> (term, scalars to log)."""
    first = disps[("disp", 0)]
    device, size = first.device, tuple(first.shape[-2:])
    label, mask = mirrored_labels(batch, flipped, device)
    static = (label > 0) & ~mask
    losses, static_losses = [], []
    for (_, _scale), disp in sorted(disps.items()):
        up = disp if tuple(disp.shape[-2:]) == size else F.interpolate(disp, size, mode="bilinear", align_corners=False)
        _, depth = disp_to_depth(up, *depth_range)
        losses.append(dynamic_depth_loss(depth, label, mask, cfg.percentile, cfg.normalise, cfg.label_range))
        if cfg.static_weight > 0:
            static_losses.append(dynamic_depth_loss(depth, label, static, cfg.percentile, cfg.normalise, cfg.label_range))
    loss = torch.stack(losses).mean()
    logs = {"dynamic_term": loss.detach(), "dynamic_pixels": mask.float().mean().detach()}
    term = cfg.weight * loss
    if static_losses:
        static_loss = torch.stack(static_losses).mean()
        term = term + cfg.static_weight * static_loss
        logs["static_term"] = static_loss.detach()
    return term, logs
