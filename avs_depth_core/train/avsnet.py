"""Supervised AVS-Net training on a bag: SILog on valid pixels, AdamW + OneCycle with ZoeDepth's parameter groups.

Numbers (config `train:`) follow ZoeD_N's training section (zoedepth/models/zoedepth/config_zoedepth.json "train",
zoedepth/trainers/): AdamW lr 1.61e-4, weight decay 0.01, MiDaS encoder at lr/10, OneCycleLR (pct_start 0.7,
div_factor 1, final_div_factor 1e4, momentum 0.85-0.95) stepped every iteration, batch 16, 5 epochs, grad-norm clipping
0.1; SILog alpha 10, lambda 0.85 (AVS-Net). AMP (fp16) on CUDA.
After every epoch the model is validated (the seven Table-1 metrics on the val split) and checkpointed as
<run>/checkpoints/last (with optimiser state, for --resume); the checkpoint with the lowest validation abs_rel (a stated
choice: the first Table-1 metric, scale-sensitive unlike SILog) is also kept as <run>/checkpoints/best. The loop itself
is train/loop.py's; this file holds what is AVS-Net's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR

from avs_depth_core.config import section_from_dict
from avs_depth_core.data.datasets import SupervisedBagDataset
from avs_depth_core.evaluation import evaluate_model
from avs_depth_core.losses.silog import SILogLoss
from avs_depth_core.models.avsnet import CHECKPOINT_KIND, AVSNet, AVSNetConfig
from avs_depth_core.train import loop
from avs_depth_core.train.echo_augment import EchoAugment, augment_batch
from avs_depth_core.train.loop import LoopConfig, Parts, fit
from avs_depth_core.train.runtime import Runtime, autocast, to_device

DEFAULT_CONFIG = "avsnet_bv2.yaml"
# Keys older configs carry with the only value they ever accepted: read and dropped, any other value is an error.
FIXED_TRAIN_KEYS = {"optimizer": "adamw", "scheduler": "onecycle", "loss": "silog"}


@dataclass
class TrainConfig(LoopConfig):
    """The `train:` section. Defaults: ZoeD_N (config_zoedepth.json "train", trainers/*.py) unless noted."""

    lr: float = 1.61e-4
    weight_decay: float = 0.01
    encoder_lr_factor: float = 10.0
    midas_lr_factor: float = 1.0
    pos_enc_lr_factor: float = 10.0
    pct_start: float = 0.7
    div_factor: float = 1.0
    final_div_factor: float = 1e4
    three_phase: bool = False
    cycle_momentum: bool = True
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    epochs: int = 5
    batch_size: int = 16
    clip_grad: float = 0.1  # max grad norm; 0 = off
    silog_alpha: float = 10.0  # AVS-Net
    silog_lambda: float = 0.85
    amp: bool = True  # fp16 autocast + GradScaler, CUDA only
    # Augmentation keeping the geometry (train/echo_augment.py; deviation options, all off by default as in AVS-Net):
    aug_flip: float = 0.0  # probability of mirroring image and depth with the ears swapped
    aug_scale: float = 1.0  # scene scale factor, log-uniform in [1/aug_scale, aug_scale]: depth and echo delays (1: off)
    aug_echo_gain_db: float = 0.0  # echo level, uniform within +- this many dB
    aug_echo_noise: float = 0.0  # Gaussian noise on the STFT, this fraction of its standard deviation
    # Deviation option: weight of a per-image scale term added to SILog, mean over images of |mean log(pred / gt)| on the
    # valid pixels. SILog pools the batch and weights its scale term by 1 - lambda (0.15), so one image's scale error is
    # only seen through the batch variance; this term scores each image's scale, as scale_log_error does (0: off).
    scale_loss_weight: float = 0.0

    @property
    def augment(self) -> EchoAugment:
        return EchoAugment(flip=self.aug_flip, scale=self.aug_scale, gain_db=self.aug_echo_gain_db, noise=self.aug_echo_noise)

    def check(self) -> None:
        super().check()
        for key in ("lr", "epochs", "batch_size", "encoder_lr_factor", "midas_lr_factor", "pos_enc_lr_factor"):
            if getattr(self, key) <= 0:
                raise ValueError(f"config: train.{key} must be positive, got {getattr(self, key)}")
        if self.scale_loss_weight < 0:
            raise ValueError(f"config: train.scale_loss_weight must be >= 0, got {self.scale_loss_weight}")
        if self.weight_decay < 0:
            raise ValueError(f"config: train.weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 < self.pct_start < 1:
            raise ValueError(f"config: train.pct_start must lie in (0, 1), got {self.pct_start}")
        _ = self.augment  # EchoAugment checks its ranges, naming the keys


@dataclass
class DataConfig(loop.DataConfig):
    """The `data:` section: which frames of the bag train and validate, and how they are read."""

    image_size: tuple[int, int] | None = None  # must equal model.image_size (null = take it from the model)
    max_depth: float = 0.0  # 0 = model.max_depth


def resolve_config(config: dict[str, Any]) -> tuple[AVSNetConfig, TrainConfig, DataConfig]:
    """Validate the three sections; errors name the key."""
    unknown = sorted(set(config) - {"model", "train", "data"})
    if unknown:
        raise ValueError(f"config: unknown section(s) {unknown}; expected model, train, data")
    model_cfg = AVSNetConfig.from_dict(dict(config.get("model") or {}), where="config model")
    train_values = dict(config.get("train") or {})
    for key, only in FIXED_TRAIN_KEYS.items():
        if key in train_values and train_values.pop(key) != only:
            raise ValueError(f"config: train.{key} is fixed: AVS-Net trains with AdamW, OneCycleLR and SILog (ZoeDepth); "
                             f"drop the key (older configs may keep {key}: {only})")
    train_cfg = section_from_dict(TrainConfig, train_values, "train")
    train_cfg.check()
    data_cfg = section_from_dict(DataConfig, config.get("data"), "data")
    if data_cfg.image_size is not None and tuple(data_cfg.image_size) != tuple(model_cfg.image_size):
        raise ValueError(f"config: data.image_size {list(data_cfg.image_size)} differs from model.image_size "
                         f"{list(model_cfg.image_size)}; the network trains at the size the dataset delivers")
    data_cfg.image_size = tuple(model_cfg.image_size)
    if data_cfg.max_depth == 0:
        data_cfg.max_depth = model_cfg.max_depth
    if not 0 <= data_cfg.min_depth < data_cfg.max_depth:
        raise ValueError(f"config: need 0 <= data.min_depth < data.max_depth, got {data_cfg.min_depth}, {data_cfg.max_depth}")
    return model_cfg, train_cfg, data_cfg


def build_dataset(bag: Path, split: str, model_cfg: AVSNetConfig, data_cfg: DataConfig, verbose: bool) -> SupervisedBagDataset:
    return SupervisedBagDataset.for_model(bag, split, model_cfg, max_depth=data_cfg.max_depth, tolerance_s=data_cfg.tolerance_s,
                                          cache_dir=data_cfg.cache_dir, skip_bad=data_cfg.skip_bad, progress=verbose,
                                          verbose=verbose)


def per_image_scale_loss(pred: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Mean over the images with valid pixels of |mean log(pred / gt)| over their valid pixels (fp32; pred resized
    bilinearly to the depth's size as SILog does). pred, depth (B,1,H,W), valid bool like depth."""
    with torch.autocast(device_type=pred.device.type, enabled=False):
        pred = pred.float()
        if pred.shape[-2:] != depth.shape[-2:]:
            pred = F.interpolate(pred, size=depth.shape[-2:], mode="bilinear", align_corners=True)
        g = (torch.log(pred + eps) - torch.log(depth.float() + eps)) * valid
        count = valid.flatten(1).sum(dim=1)
        has = count > 0
        mean = g.flatten(1).sum(dim=1)[has] / count[has]
        return mean.abs().mean()


class AVSNetTrainer(loop.Trainer):
    """Supervised metric depth: SILog on the valid pixels, ZoeDepth's parameter groups under AdamW and OneCycle."""

    kind = CHECKPOINT_KIND
    finite_keys = ("rgb", "echo", "depth")
    # MiDaS's refinenet4 holds a residual unit for a skip input it never receives, as in the original; DDP must know.
    find_unused_parameters = True

    def __init__(self, config: dict[str, Any]) -> None:
        model_cfg, train, data = resolve_config(config)
        super().__init__(model_cfg, train, data, epochs=train.epochs, batch_size=train.batch_size)

    def describe(self) -> str:
        m = self.model_cfg
        return f"AVS-Net ({'RGB + echo' if m.use_echo else 'Only-RGB'}, {m.backbone}, {m.image_size[0]}x{m.image_size[1]})"

    def dataset(self, bag: Path, split: str, verbose: bool) -> SupervisedBagDataset:
        return build_dataset(bag, split, self.model_cfg, self.data, verbose)

    def build(self, device: torch.device, total_steps: int) -> Parts:
        """Model, AdamW over ZoeDepth's parameter groups, OneCycle stepped per iteration, SILog."""
        t = self.train
        model = AVSNet(self.model_cfg).to(device)
        groups = model.parameter_groups(t.lr, t.encoder_lr_factor, t.midas_lr_factor, t.pos_enc_lr_factor)
        optimizer = torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)
        scheduler = OneCycleLR(optimizer, max_lr=[g["lr"] for g in groups], total_steps=total_steps, pct_start=t.pct_start,
                               div_factor=t.div_factor, final_div_factor=t.final_div_factor, three_phase=t.three_phase,
                               cycle_momentum=t.cycle_momentum, base_momentum=t.base_momentum, max_momentum=t.max_momentum)
        return Parts(model, optimizer, scheduler, SILogLoss(alpha=t.silog_alpha, lam=t.silog_lambda))

    def loss(self, net: nn.Module, criterion: SILogLoss, batch: dict[str, Any], step: int,
             runtime: Runtime) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        d = self.data
        batch = augment_batch(to_device(batch, runtime.device), self.train.augment, self.model_cfg)
        valid = (batch["depth"] > d.min_depth) & (batch["depth"] < d.max_depth)
        if int(valid.sum()) < 2:
            raise ValueError(f"step {step}: no valid depth pixels ({d.min_depth} < gt < {d.max_depth}) "
                             f"in the batch of samples with stamp_ns {batch['stamp_ns'].tolist()}")
        with autocast(runtime):
            out = net(batch["rgb"], batch["echo"] if self.model_cfg.use_echo else None)
        loss = criterion(out["metric_depth"], batch["depth"], valid)
        if self.train.scale_loss_weight == 0:
            return loss, {}
        scale = per_image_scale_loss(out["metric_depth"], batch["depth"], valid)
        return loss + self.train.scale_loss_weight * scale, {"scale_loss": scale.detach()}

    def validate(self, model: AVSNet, criterion: SILogLoss, loader: torch.utils.data.DataLoader,
                 runtime: Runtime) -> dict[str, float]:
        """The Table-1 metrics on the val split at the network's size (avs_depth_core.evaluation)."""
        return evaluate_model(model, loader, runtime.device, self.data.min_depth, self.data.max_depth, amp=runtime.amp,
                              desc="validate").metrics

    def checkpoint_config(self) -> dict[str, Any]:
        return {**self.model_cfg.to_dict(), "visual_weights": None, "audio_weights": None}

    def save_best(self, model: AVSNet, path: Path, meta: dict[str, Any]) -> None:
        model.save(path, meta)


def train_avsnet(config: dict[str, Any], bag: str | Path, run_dir: str | Path, *, resume: str | Path | None = None,
                 device: str | None = None) -> dict[str, Any]:
    """Train AVS-Net on `bag` into `run_dir` (train/loop.py fit: config.yaml, checkpoints/{last,best}, logs, curve)."""
    return fit(AVSNetTrainer(config), bag, run_dir, resume=resume, device=device)
