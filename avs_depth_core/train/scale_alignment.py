"""Training the learned Depth Scale Alignment (DSA, B.6 of ../shared/reference/rescale_maps_and_dynamic_regions.md) on
the static objects of the mined frames, and predicting the scale of the dynamic ones (`mine-labels --set
object_scale=dsa` or `gate=echo_dsa`).

Their recipe: only STATIC instances train it, because there the stage-1 scene depth is right, so it is the target.
Input per object: RGB, the scene depth as context outside the object's (dilated) box with the mean-normalised object depth
inside the mask, and that object depth alone; loss Huber (delta 0.005) between beta x object depth and the scene depth
over the mask; Adam 1e-3, batch 32, lr halved at milestones, random horizontal flips.
Deviations (config keys): `normalise` (ours, default on): the depth channels and the target are divided by the frame's
median scene depth outside the objects and the output multiplied by it, so the network predicts the object's depth
relative to its scene and need not learn the stage-1 net's units (without it, on the quick bv2 world, the DSA fitted its
own training objects to a median |log| error of 0.42); the head's bias starts at 1 then (the scene's median). Their
context is the scene depth on ROAD pixels only; there is no floor segmentation here
(none offline, and BatVision has no labels), so every pixel outside the box and outside every object is context. The B.11
CPU schedule (10 epochs, halved at 3 and 7) instead of their 20 (3 and 10), the last epoch instead of their best one on
a validation split, and a narrower ResNet-18 (width 16, theirs 64) from random initialisation.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from avs_depth_core.models.depth_scale_alignment import DepthScaleAlignmentNet
from avs_depth_core.models.monodepth2 import INPUT_MEAN, INPUT_STD


@dataclass
class ScaleAlignmentConfig:
    width: int = 16                 # ResNet-18 width (theirs 64, ImageNet-initialised)
    epochs: int = 10                # B.11 (theirs 20)
    learning_rate: float = 1e-3     # theirs
    milestones: list[int] = field(default_factory=lambda: [3, 7])  # lr halved after these epochs (B.11; theirs 3, 10)
    batch_size: int = 32            # theirs
    huber_delta: float = 0.005      # theirs
    hflip_prob: float = 0.5         # theirs: random horizontal flip
    box_margin: int = 2             # px the object's box grows before it is cut out of the context (their 5x5 dilation)
    normalise: bool = True          # ours (module docstring); false = theirs: raw scene depth in and out
    seed: int = 0

    def check(self) -> None:
        for key in ("width", "epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"scale alignment: {key} must be >= 1, got {getattr(self, key)}")
        if not self.learning_rate > 0 or not self.huber_delta > 0:
            raise ValueError("scale alignment: learning_rate and huber_delta must be > 0")
        if not 0 <= self.hflip_prob <= 1 or self.box_margin < 0:
            raise ValueError("scale alignment: hflip_prob must lie in [0, 1] and box_margin be >= 0")


@dataclass
class AlignmentFrame:
    """What the DSA reads of one frame: rgb (3, H, W) in [0, 1], scene depth R and the object depth source (H, W), and
    every object's pixels."""
    rgb: torch.Tensor
    scene: np.ndarray
    object_depth: np.ndarray
    occupied: np.ndarray


def normalised_object_depth(depth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The object depth divided by its mean over the mask (their D^o); zero outside the mask."""
    mean = float(depth[mask].mean()) if mask.any() else math.nan
    if not math.isfinite(mean) or mean <= 0:
        return np.zeros(depth.shape, np.float32)
    return np.where(mask, depth / mean, 0.0).astype(np.float32)


def depth_reference(frame: AlignmentFrame, normalise: bool) -> float:
    """What the depth channels and the target are divided by: the median scene depth outside every object (1 when not
    normalising)."""
    if not normalise:
        return 1.0
    free = frame.scene[~frame.occupied & np.isfinite(frame.scene) & (frame.scene > 0)]
    ref = float(np.median(free)) if free.size else float(np.nanmedian(frame.scene))
    return ref if math.isfinite(ref) and ref > 0 else 1.0


def alignment_input(frame: AlignmentFrame, mask: np.ndarray, box_margin: int, ref: float = 1.0) -> torch.Tensor:
    """(5, H, W): normalised RGB, context / ref + object shape, object shape."""
    shape = normalised_object_depth(frame.object_depth, mask)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    box = np.zeros(mask.shape, bool)
    if rows.size:
        top, left = max(0, rows[0] - box_margin), max(0, cols[0] - box_margin)
        box[top: rows[-1] + box_margin + 1, left: cols[-1] + box_margin + 1] = True
    context = np.where(box | frame.occupied, 0.0, frame.scene / ref)
    composite = np.where(mask, shape, context).astype(np.float32)
    rgb = (frame.rgb.float() - INPUT_MEAN) / INPUT_STD
    return torch.cat([rgb, torch.from_numpy(composite)[None], torch.from_numpy(shape)[None]])


def _batch(frames: list[AlignmentFrame], items: list[tuple[int, np.ndarray]], cfg: ScaleAlignmentConfig,
           rng: np.random.Generator | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, shape, target, mask = [], [], [], []
    for index, m in items:
        frame = frames[index]
        ref = depth_reference(frame, cfg.normalise)
        inp = alignment_input(frame, m, cfg.box_margin, ref)
        t = torch.from_numpy(np.asarray(frame.scene / ref, np.float32))
        mm = torch.from_numpy(m)
        if rng is not None and rng.random() < cfg.hflip_prob:
            inp, t, mm = inp.flip(-1), t.flip(-1), mm.flip(-1)
        x.append(inp)
        shape.append(inp[4])
        target.append(t)
        mask.append(mm)
    return torch.stack(x), torch.stack(shape), torch.stack(target), torch.stack(mask)


def alignment_loss(beta: torch.Tensor, shape: torch.Tensor, scene: torch.Tensor, mask: torch.Tensor,
                   delta: float) -> torch.Tensor:
    """Huber between beta x object shape and the scene depth, averaged over each mask, then over the batch (theirs)."""
    err = F.huber_loss(beta[:, None, None] * shape, scene, reduction="none", delta=delta) * mask
    return (err.flatten(1).sum(1) / mask.flatten(1).sum(1).clamp(min=1)).mean()


class ScaleAligner:
    """A trained DSA: scale(frame, mask) -> beta (scene-depth units per unit of the mean-normalised object depth)."""

    def __init__(self, net: DepthScaleAlignmentNet, cfg: ScaleAlignmentConfig) -> None:
        self.net, self.cfg = net.eval(), cfg

    @torch.no_grad()
    def scale(self, frame: AlignmentFrame, mask: np.ndarray) -> float:
        ref = depth_reference(frame, self.cfg.normalise)
        beta = float(self.net(alignment_input(frame, mask, self.cfg.box_margin, ref)[None])[0]) * ref
        return beta if math.isfinite(beta) and beta > 0 else math.nan


def train_scale_alignment(frames: list[AlignmentFrame], samples: list[tuple[int, np.ndarray]],
                          cfg: ScaleAlignmentConfig | None = None, progress: bool = False) -> tuple[ScaleAligner, dict]:
    """Train the DSA on (frame index, static object mask) samples; returns it and a log (loss per epoch, the training
    objects' median |log(beta / median(scene depth / object shape))|, seconds)."""
    cfg = cfg or ScaleAlignmentConfig()
    cfg.check()
    if not samples:
        raise ValueError("scale alignment: no static object to train on (their DSA learns from static instances only); "
                         "the bag needs instance maps with static objects of at least object_size_threshold")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = DepthScaleAlignmentNet(cfg.width)
    if cfg.normalise:
        with torch.no_grad():
            net.head[-1].bias.fill_(1.0)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg.milestones), gamma=0.5)
    start, losses = time.perf_counter(), []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.epochs * math.ceil(len(samples) / cfg.batch_size), desc="scale alignment", unit="step")
    for _ in range(cfg.epochs):
        net.train()
        order = rng.permutation(len(samples))
        total, count = 0.0, 0
        for lo in range(0, len(order), cfg.batch_size):
            x, shape, target, mask = _batch(frames, [samples[i] for i in order[lo: lo + cfg.batch_size]], cfg, rng)
            loss = alignment_loss(net(x), shape, target, mask, cfg.huber_delta)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, count = total + float(loss.detach()) * len(x), count + len(x)
            if bar is not None:
                bar.update()
                bar.set_postfix(loss=f"{float(loss.detach()):.5f}")
        sched.step()
        losses.append(total / count)
    if bar is not None:
        bar.close()
    aligner = ScaleAligner(net, cfg)
    errors = []
    for index, m in samples:
        beta = aligner.scale(frames[index], m)
        shape = normalised_object_depth(frames[index].object_depth, m)[m]
        ok = shape > 0
        ref = float(np.median(frames[index].scene[m][ok] / shape[ok])) if ok.any() else math.nan  # the loss's optimum
        if math.isfinite(beta) and ref > 0:
            errors.append(abs(math.log(beta / ref)))
    log = {"samples": len(samples), "epoch_loss": losses, "seconds": time.perf_counter() - start,
           "train_log_error_median": float(np.median(errors)) if errors else math.nan}
    return aligner, log
