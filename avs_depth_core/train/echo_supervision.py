"""Echo-supervised self-supervised training: a frozen RGB-Echoes AVS-Net's pseudo-metric depth Mp as a scale-aware
pseudo-label for Monodepth2's DepthNet, so that the DepthNet itself predicts metres (`avs-depth train --model monodepth2
--echo-supervision CKPT`, config `train.echo_supervision`).

Neither Monodepth2 nor the AVS-Net paper trains this way (the paper names echoes as a possible "supervisory signal for
scale-correct self-supervised training"); every choice below is a documented option of EchoSupervisionConfig, and with
no checkpoint the trainer is Monodepth2's, unchanged.

- Teacher: AVSNet.from_checkpoint in eval mode with gradients off; each frame of the triple, un-augmented, resized to the
  AVS-Net's image_size with the echo paired with that frame; Mp resized back to the DepthNet's resolution. Being frozen and
  fed un-augmented frames, it gives a frame the same Mp every epoch, so Mp is computed once per frame (keyed by the
  dataset's slot_triple) and kept in memory: the same numbers, with the teacher run once per frame instead of three
  times per triple and epoch. Mirrored
  samples get the mirrored Mp of the unmirrored frame (mirroring the image would also need the ears swapped).
- Confidence filter "triple_median" (default): the scene's scale barely changes between a triple's frames, while a
  wrong echo scale moves Mp's median, so a target frame is used only when at least one neighbour with an echo has
  |log median(Mp_neighbour) - log median(Mp_target)| <= tolerance, and every neighbour with an echo agrees. "none" uses
  every target frame with an echo. Pixels: Mp strictly inside both the AVS-Net's and the DepthNet's depth range, and the
  caller's per-pixel pseudo-label mask where the batch has one ("pseudo_label_mask", (B, 1, H, W), True = may
  supervise; e.g. to leave out moving objects).
- Term "log_l1" (default): mean |log D - log Mp| over the selected pixels (shape and scale); "scale": per image
  |mean log D - mean log Mp| over its selected pixels (scale only, the shape stays photometric). D is the full-resolution
  depth of the DepthNet (disp_to_depth of its scale-0 disparity with the model's min_depth and max_depth).
- Schedule: weight 0 for the first start_step optimiser steps, then a linear ramp over ramp_steps up to `weight`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from avs_depth_core.models.avsnet import AVSNet

FILTERS = ("triple_median", "none")
TERMS = ("log_l1", "scale")
_LOG_FLOOR = 1e-6


@dataclass
class EchoSupervisionConfig:
    """`train.echo_supervision`: the pseudo-metric teacher and how its depth supervises the DepthNet (module docstring)."""

    checkpoint: str | None = None  # RGB-Echoes AVS-Net checkpoint; None = off (plain Monodepth2)
    weight: float = 0.1  # of the pseudo-label term, added to the photometric loss (not measured yet)
    term: str = "log_l1"  # log_l1 | scale
    filter: str = "triple_median"  # triple_median | none
    tolerance: float = 0.2  # triple_median: largest |log| ratio of neighbouring frames' Mp medians (0.2: about 22 %)
    start_step: int = 0  # optimiser steps with photometric loss only
    ramp_steps: int = 0  # then steps over which the weight rises linearly to `weight` (0: at once)

    @property
    def enabled(self) -> bool:
        return self.checkpoint is not None

    def check(self) -> None:
        """Errors name the key (train.echo_supervision.<key>)."""
        where = "config: train.echo_supervision"
        if self.term not in TERMS:
            raise ValueError(f"{where}.term {self.term!r}: choose from {list(TERMS)}")
        if self.filter not in FILTERS:
            raise ValueError(f"{where}.filter {self.filter!r}: choose from {list(FILTERS)}")
        for key in ("weight", "tolerance"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{where}.{key} must be positive, got {getattr(self, key)}")
        for key in ("start_step", "ramp_steps"):
            if getattr(self, key) < 0:
                raise ValueError(f"{where}.{key} must be >= 0, got {getattr(self, key)}")

    def weight_at(self, step: int) -> float:
        """The term's weight at optimiser step `step` (counted from 0)."""
        if step < self.start_step:
            return 0.0
        if self.ramp_steps == 0:
            return self.weight
        return self.weight * min(1.0, (step - self.start_step + 1) / self.ramp_steps)


class PseudoMetricTeacher:
    """A frozen RGB-Echoes AVS-Net: (rgb (B, 3, H, W) in [0, 1], echo features (B, C, He, We)) -> Mp (B, 1, H, W) metres."""

    def __init__(self, checkpoint: str | Path, device: str | torch.device = "cpu") -> None:
        if not Path(checkpoint).exists() and not Path(f"{checkpoint}.safetensors").exists():
            raise FileNotFoundError(f"{checkpoint}: echo-supervision checkpoint not found (train.echo_supervision.checkpoint)")
        net = AVSNet.from_checkpoint(checkpoint, device).eval()
        if not net.cfg.use_echo:
            raise ValueError(f"{checkpoint}: an Only-RGB AVS-Net (use_echo false); echo supervision needs an RGB-Echoes "
                             f"checkpoint, whose scale comes from the echo")
        for p in net.parameters():
            p.requires_grad_(False)
        self.net, self.cfg = net, net.cfg

    @torch.no_grad()
    def __call__(self, rgb: torch.Tensor, echo: torch.Tensor) -> torch.Tensor:
        size = tuple(rgb.shape[-2:])
        x = rgb.float()
        if size != tuple(self.cfg.image_size):
            x = F.interpolate(x, tuple(self.cfg.image_size), mode="bilinear", align_corners=False, antialias=True)
        mp = self.net(x, echo.float())["metric_depth"].float()
        if tuple(mp.shape[-2:]) != size:
            mp = F.interpolate(mp, size, mode="bilinear", align_corners=False)
        return mp


def log_medians(depth: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per image median of log depth over its valid pixels: (B, 1, H, W) each -> (B,), NaN where none is valid."""
    out = torch.full((depth.shape[0],), float("nan"), device=depth.device)
    for i in range(depth.shape[0]):
        values = depth[i][valid[i]]
        if values.numel():
            out[i] = values.clamp_min(_LOG_FLOOR).log().median()
    return out


def confidence_mask(mp_triple: torch.Tensor, has_echo: torch.Tensor, cfg: EchoSupervisionConfig,
                    depth_range: tuple[float, float]) -> torch.Tensor:
    """Which target pixels Mp may supervise: mp_triple (B, 3, 1, H, W) in the triple's order (t - k, t, t + k), has_echo
    (B, 3) bool, depth_range the open interval Mp must lie in -> (B, 1, H, W) bool (filters: module docstring)."""
    low, high = depth_range
    valid = torch.isfinite(mp_triple) & (mp_triple > low) & (mp_triple < high)
    frame_ok = has_echo[:, 1].to(mp_triple.device).bool()
    if cfg.filter == "triple_median":
        medians = [log_medians(mp_triple[:, j], valid[:, j]) for j in range(3)]
        agreeing = torch.zeros_like(frame_ok)
        for j in (0, 2):
            with_echo = has_echo[:, j].to(mp_triple.device).bool() & torch.isfinite(medians[j])
            agrees = (medians[j] - medians[1]).abs() <= cfg.tolerance
            frame_ok = frame_ok & (~with_echo | agrees)
            agreeing = agreeing | (with_echo & agrees)
        frame_ok = frame_ok & agreeing
    return valid[:, 1] & frame_ok.view(-1, 1, 1, 1)


def pseudo_label_loss(depth: torch.Tensor, pseudo: torch.Tensor, mask: torch.Tensor, term: str = "log_l1") -> torch.Tensor:
    """The scale-aware term between the DepthNet's depth and the pseudo-label, both (B, 1, H, W) metres, over `mask`
    (B, 1, H, W) bool; 0 (still part of the graph) when the mask selects nothing."""
    if term not in TERMS:
        raise ValueError(f"pseudo-label term {term!r}: choose from {list(TERMS)}")
    if mask.shape != depth.shape or pseudo.shape != depth.shape:
        raise ValueError(f"depth {tuple(depth.shape)}, pseudo-label {tuple(pseudo.shape)} and mask {tuple(mask.shape)} "
                         f"must have one shape")
    if not mask.any():
        return depth.sum() * 0.0
    difference = depth.clamp_min(_LOG_FLOOR).log() - pseudo.clamp_min(_LOG_FLOOR).log()
    if term == "log_l1":
        return difference[mask].abs().mean()
    weights = mask.float()
    pixels = weights.sum(dim=(1, 2, 3))
    used = pixels > 0
    per_image = (difference * weights).sum(dim=(1, 2, 3))[used] / pixels[used]
    return per_image.abs().mean()


class EchoSupervision:
    """The teacher and its config for one training process; `term` gives the weighted pseudo-label loss of a batch."""

    def __init__(self, cfg: EchoSupervisionConfig, device: str | torch.device, depth_range: tuple[float, float]) -> None:
        self.cfg = cfg
        self.teacher = PseudoMetricTeacher(cfg.checkpoint, device)
        tcfg = self.teacher.cfg
        # Mp must lie inside the teacher's range and the range the DepthNet can express.
        self.range = (max(tcfg.min_depth, depth_range[0]), min(tcfg.max_depth, depth_range[1]))
        self.device = torch.device(device)
        self._cache: dict[int, torch.Tensor] = {}  # frame (cache slot) -> its Mp (1, H, W)

    def to(self, device: str | torch.device) -> EchoSupervision:
        self.device = torch.device(device)
        self.teacher.net.to(self.device)
        self._cache = {k: v.to(self.device) for k, v in self._cache.items()}
        return self

    def _teacher_depth(self, frames: torch.Tensor, echoes: torch.Tensor, slots: torch.Tensor | None) -> torch.Tensor:
        """Mp of frames (N, 3, H, W) with their echoes (N, C, He, We) -> (N, 1, H, W); slots (the frames' cache indices,
        any shape holding N) key the per-frame cache, None = compute every frame."""
        if slots is None:
            return self.teacher(frames.to(self.device), echoes.to(self.device))
        keys = [int(k) for k in slots.flatten()]
        missing = sorted({k for k in keys if k not in self._cache})
        if missing:
            first = {k: keys.index(k) for k in missing}
            index = torch.tensor([first[k] for k in missing])
            computed = self.teacher(frames[index].to(self.device), echoes[index].to(self.device))
            self._cache.update({k: computed[i] for i, k in enumerate(missing)})
        return torch.stack([self._cache[k] for k in keys])

    def pseudo_labels(self, batch: dict[str, Any], flipped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mp of the target frames (B, 1, H, W), mirrored where the sample was, and its confidence mask (B, 1, H, W)."""
        if "echo_triple" not in batch:
            raise ValueError("echo supervision needs the echoes of every triple frame (TripletBagDataset neighbour_echoes)")
        frames = batch["rgb"]
        b, n = frames.shape[:2]
        mp = self._teacher_depth(frames.flatten(0, 1), batch["echo_triple"].flatten(0, 1),
                                 batch.get("slot_triple")).view(b, n, 1, *frames.shape[-2:])
        mask = confidence_mask(mp, batch["has_echo_triple"], self.cfg, self.range)
        if "pseudo_label_mask" in batch:
            mask = mask & batch["pseudo_label_mask"].to(self.device).bool()
        target = mp[:, 1]
        flip = flipped.to(self.device).view(-1, 1, 1, 1)
        return torch.where(flip, target.flip(-1), target), torch.where(flip, mask.flip(-1), mask)

    def term(self, depth: torch.Tensor, batch: dict[str, Any], flipped: torch.Tensor,
             step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(weighted term, scalars to log: the unweighted term and the share of target pixels selected)."""
        pseudo, mask = self.pseudo_labels(batch, flipped)
        loss = pseudo_label_loss(depth, pseudo, mask, self.cfg.term)
        stats = {"echo_term": loss.detach(), "echo_selected": mask.float().mean().detach()}
        return self.cfg.weight_at(step) * loss, stats
