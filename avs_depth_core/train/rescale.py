"""Training of the pixel-wise rescale-map head (`avs-depth train --model rescale`, models/rescale_head.py): TR2M's losses
(Cui et al. CVPR 2026) on a bag with metric ground truth; the loop is train/loop.py's.

The frozen networks (models/rescale_frontend.py) run once per frame when the dataset is built, and their outputs stay
in memory (TR2M precomputes its pseudo depth the same way; on 2 CPU cores this makes an epoch of the small head cost
seconds). With train.aug_flip > 0 every training frame is also run mirrored, with the ears swapped (left <-> right STFT
and range profile), and each step picks the mirrored copy with that probability.

Loss (train:, defaults the TR2M code's ratio w_sig 10 : w_sts 2 : w_scon 0.2 : w_eas 0.1 on the project's SILog):
  w_si * SILog(M, GT) + w_tp * SILog(M, D_pseudo) [frames with delta1(D_pseudo, GT) > pseudo_rho]
  + w_soc_image * image contrast + w_soc_pixel * pixel contrast [from step soc_start_step] + w_es * edge smoothness.
AdamW (TR2M: weight decay 1e-2), lr x lr_decay per epoch (TR2M's note: x0.9).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import ExponentialLR
from torch.utils.data import DataLoader

from avs_depth_core.config import section_from_dict
from avs_depth_core.evaluation import evaluate_model
from avs_depth_core.losses.rescale import edge_smoothness, image_contrast, pixel_contrast
from avs_depth_core.losses.silog import SILogLoss
from avs_depth_core.models.rescale_head import CHECKPOINT_KIND, EchoRescaleHead, RescaleHeadConfig
from avs_depth_core.rescale import (
    EAR_SWAP,
    FrontendConfig,
    FrozenFeatureSet,
    RescaleFrontend,
    frame_dataset,
    head_inputs,
    precompute,
    predict_set,
)
from avs_depth_core.train import loop
from avs_depth_core.train.loop import LoopConfig, Parts, fit
from avs_depth_core.train.runtime import Runtime, to_device

DEFAULT_CONFIG = "rescale.yaml"
LOGGED_TERMS = ("si", "tp", "soc_image", "soc_pixel", "es")


@dataclass
class TrainConfig(LoopConfig):
    """The `train:` section (TR2M's options/notes where it has them; the rest project choices)."""

    lr: float = 1e-4  # TR2M 1e-5 for a 19 M head on 102K images; ours is ~50x smaller and starts at the global scale
    weight_decay: float = 0.01  # TR2M
    lr_decay: float = 0.9  # per epoch (TR2M's note)
    epochs: int = 20  # TR2M's note
    batch_size: int = 8  # TR2M's note
    silog_alpha: float = 10.0
    silog_lambda: float = 0.85
    w_si: float = 1.0  # metric GT
    w_tp: float = 0.2  # threshold-aligned pseudo labels
    w_soc_image: float = 0.02  # coarse scale-oriented contrast
    w_soc_pixel: float = 0.02  # fine contrast (EMA key branch)
    w_es: float = 0.01  # edge-aware smoothness of log A and log B
    pseudo_rho: float = 0.9  # accept a pseudo label when its delta1 against GT exceeds this
    contrast_tau: float = 0.1
    contrast_window: int = 0  # image contrast: positives closer than this many ranks (0: max(1, batch / 4))
    pixel_classes: int = 16
    pixel_samples: int = 256  # pixels per image for the fine contrast
    ema_momentum: float = 0.99  # TR2M pixpro_momentum
    soc_start_step: int = 0  # contrast terms from this optimiser step on (TR2M: from epoch 1)
    aug_flip: float = 0.5  # probability of the mirrored frame (ears swapped)

    def check(self) -> None:
        super().check()
        for key in ("lr", "epochs", "batch_size", "pixel_classes", "pixel_samples", "contrast_tau"):
            if getattr(self, key) <= 0:
                raise ValueError(f"config: train.{key} must be positive, got {getattr(self, key)}")
        for key in ("weight_decay", "w_si", "w_tp", "w_soc_image", "w_soc_pixel", "w_es", "contrast_window", "soc_start_step"):
            if getattr(self, key) < 0:
                raise ValueError(f"config: train.{key} must be >= 0, got {getattr(self, key)}")
        for key in ("lr_decay", "ema_momentum", "pseudo_rho", "aug_flip"):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"config: train.{key} must lie in [0, 1], got {getattr(self, key)}")
        if self.w_si + self.w_tp == 0:
            raise ValueError("config: train.w_si and train.w_tp are both 0; the head needs a depth term")


@dataclass
class DataConfig(loop.DataConfig):
    max_depth: float = 0.0  # 0 = model.frontend.max_depth


class RescaleModelConfig:
    """The `model:` section: the head's keys plus `frontend:` (the frozen checkpoints)."""

    def __init__(self, head: RescaleHeadConfig, frontend: FrontendConfig) -> None:
        self.head, self.frontend = head, frontend

    def to_dict(self) -> dict[str, Any]:
        return {**self.head.to_dict(), "frontend": self.frontend.to_dict()}


def resolve_config(config: dict[str, Any]) -> tuple[RescaleModelConfig, TrainConfig, DataConfig]:
    unknown = sorted(set(config) - {"model", "train", "data"})
    if unknown:
        raise ValueError(f"config: unknown section(s) {unknown}; expected model, train, data")
    model = dict(config.get("model") or {})
    frontend = FrontendConfig.from_dict(dict(model.pop("frontend", None) or {}))
    head = RescaleHeadConfig.from_dict(model)
    if head.use_echo and not frontend.echo_checkpoint:
        raise ValueError("config: model.use_echo is true but model.frontend.echo_checkpoint is empty (an RGB-Echoes AVS-Net)")
    if head.anchor == "global" and not frontend.echo_checkpoint:
        raise ValueError("config: model.anchor global takes the scale from model.frontend.echo_checkpoint; set it, or use "
                         "anchor fitted (TR2M's constant coefficients) for a head without echoes")
    train = section_from_dict(TrainConfig, config.get("train"), "train")
    train.check()
    data = section_from_dict(DataConfig, config.get("data"), "data")
    if data.max_depth == 0:
        data.max_depth = frontend.max_depth
    if not 0 <= data.min_depth < data.max_depth:
        raise ValueError(f"config: need 0 <= data.min_depth < data.max_depth, got {data.min_depth}, {data.max_depth}")
    return RescaleModelConfig(head, frontend), train, data


def pick_views(batch: dict[str, torch.Tensor], flip: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per sample, the mirrored copy where `flip` (B,) is True."""
    out = {}
    for key, value in batch.items():
        if key.startswith("flip_"):
            continue
        mirrored = batch.get("flip_" + key)
        if mirrored is None:
            out[key] = value
        else:
            m = flip.view(-1, *([1] * (value.dim() - 1)))
            out[key] = torch.where(m, mirrored, value)
    return out


class HeadAsDepthModel(nn.Module):
    """Wraps a head so avs_depth_core.evaluation.evaluate_model scores it on FrozenFeatureSet batches (it calls
    model(rgb, echo) with echo only when cfg.use_echo; the batch's frozen outputs are handed over in `feed`)."""

    def __init__(self, head: EchoRescaleHead) -> None:
        super().__init__()
        self.head, self.cfg = head, head.cfg
        self.feed: dict[str, torch.Tensor] = {}

    def forward(self, rgb: torch.Tensor, echo: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.head(**head_inputs(self.head, self.feed))


class RescaleTrainer(loop.Trainer):
    """The rescale-map head on frozen networks: SILog on GT and pseudo labels, scale-oriented contrast, smoothness."""

    kind = CHECKPOINT_KIND
    finite_keys = ("rgb", "depth", "features", "rel_disparity")
    scheduler_per_epoch = True

    def __init__(self, config: dict[str, Any], device: str | torch.device = "cpu") -> None:
        model_cfg, train, data = resolve_config(config)
        super().__init__(model_cfg, train, data, epochs=train.epochs, batch_size=train.batch_size)
        self.frontend: RescaleFrontend | None = None
        self.frontend_device = device
        self.train_set: FrozenFeatureSet | None = None
        self.ema: EchoRescaleHead | None = None
        self.pseudo_acceptance: float | None = None

    def describe(self) -> str:
        h, f = self.model_cfg.head, self.model_cfg.frontend
        echo = "echo tokens" + (" + range tokens" if f.echo_range_tokens else "") if h.use_echo else "no echo"
        return f"rescale-map head ({h.form} form, anchor {h.anchor}, {echo}; R {f.relative})"

    def get_frontend(self) -> RescaleFrontend:
        if self.frontend is None:
            self.frontend = RescaleFrontend(self.model_cfg.frontend, self.frontend_device or "cpu")
            head = self.model_cfg.head
            head.image_channels = self.frontend.image_channels
            if self.frontend.echo_net is not None:
                net = self.frontend.echo_net
                echo = torch.zeros(1, net.cfg.echo_channels, *(net.cfg.echo_size or net.cfg.image_size))
                tokens = self.frontend.echo_tokens(echo.to(self.frontend.device))
                head.echo_tokens, head.echo_channels = int(tokens.shape[1]), int(tokens.shape[2])
        return self.frontend

    def dataset(self, bag: Path, split: str, verbose: bool) -> FrozenFeatureSet:
        frontend = self.get_frontend()
        flipped = split == self.data.train_split and self.train.aug_flip > 0
        d = self.data
        frames = frame_dataset(bag, split, frontend, d.max_depth, verbose, tolerance_s=d.tolerance_s, cache_dir=d.cache_dir,
                               skip_bad=d.skip_bad)
        features = precompute(frames, frontend, d.min_depth, d.max_depth, flipped)
        if split == self.data.train_split:
            self.train_set = features
            accepted = features.tensors["pseudo_delta1"] > self.train.pseudo_rho
            self.pseudo_acceptance = float(accepted.float().mean())
            if verbose:
                print(f"pseudo labels: {int(accepted.sum())}/{len(accepted)} training frames accepted "
                      f"(delta1 > {self.train.pseudo_rho})")
        return features

    def fitted_coefficients(self) -> tuple[float, float]:
        """TR2M-pure anchor: median alpha and median max(beta, eps) of the training set's per-frame fits."""
        t = self.train_set.tensors
        alpha, beta = t["pseudo_alpha"], t["pseudo_beta"]
        ok = torch.isfinite(alpha) & (alpha > 0)  # a negative scale turns disparity upside down: not a depth map
        if not ok.any():
            raise ValueError("rescale: no training frame gave a least-squares fit with a positive scale; cannot set "
                             "the fitted anchor (model.anchor fitted)")
        a = float(alpha[ok].median())
        b = float(beta[ok].clamp_min(1e-3 * a).median())
        if self.model_cfg.head.form == "depth":  # M = A / r + B ~ 1 / (a r + b): A = 1/a, B small
            return 1.0 / a, 1e-3 / a
        return a, b

    def build(self, device: torch.device, total_steps: int) -> Parts:
        t, head_cfg = self.train, self.model_cfg.head
        if head_cfg.anchor == "fitted":
            head_cfg.coef_scale, head_cfg.coef_shift = self.fitted_coefficients()
        model = EchoRescaleHead(head_cfg).to(device)
        if t.w_soc_pixel > 0:
            self.ema = copy.deepcopy(model).requires_grad_(False)
        optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        return Parts(model, optimizer, ExponentialLR(optimizer, gamma=t.lr_decay), SILogLoss(t.silog_alpha, t.silog_lambda))

    @torch.no_grad()
    def update_ema(self, model: nn.Module) -> None:
        m = self.train.ema_momentum
        for e, p in zip(self.ema.parameters(), model.parameters(), strict=True):
            e.mul_(m).add_(p.detach(), alpha=1 - m)

    def loss(self, net: nn.Module, criterion: SILogLoss, batch: dict[str, Any], step: int,
             runtime: Runtime) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        t, d = self.train, self.data
        batch = to_device(batch, runtime.device)
        b = batch["rgb"].shape[0]
        flip = torch.rand(b, device=runtime.device) < t.aug_flip if "flip_rgb" in batch else torch.zeros(b, dtype=torch.bool)
        batch = pick_views(batch, flip)
        head = net.module if hasattr(net, "module") else net
        out = net(**head_inputs(head, batch))
        metric = out["metric_depth"]
        terms: dict[str, torch.Tensor] = {}
        valid = (batch["depth"] > d.min_depth) & (batch["depth"] < d.max_depth)
        total = metric.new_zeros(())
        if t.w_si > 0 and int(valid.sum()) >= 2:
            terms["si"] = criterion(metric, batch["depth"], valid)
            total = total + t.w_si * terms["si"]
        accepted = (batch["pseudo_delta1"] > t.pseudo_rho).view(-1, 1, 1, 1)
        pseudo_valid = accepted & (batch["pseudo_depth"] > 0)
        if t.w_tp > 0 and int(pseudo_valid.sum()) >= 2:
            terms["tp"] = criterion(metric, batch["pseudo_depth"], pseudo_valid)
            total = total + t.w_tp * terms["tp"]
        if step >= t.soc_start_step:
            if t.w_soc_image > 0 and b > 1:
                window = t.contrast_window or max(1, b // 4)
                terms["soc_image"] = image_contrast(head.image_projector(out["embedding"]), batch["pseudo_alpha"],
                                                    t.contrast_tau, window)
                total = total + t.w_soc_image * terms["soc_image"]
            if t.w_soc_pixel > 0:
                self.update_ema(head)
                with torch.no_grad():
                    key_mid = self.ema(**head_inputs(self.ema, batch))["mid"]
                    keys = self.ema.pixel_projector(key_mid)
                target = torch.where(valid, batch["depth"], batch["pseudo_depth"])
                terms["soc_pixel"] = pixel_contrast(head.pixel_projector(out["mid"]), keys, target, t.pixel_classes,
                                                    d.min_depth, d.max_depth, t.pixel_samples, t.contrast_tau)
                total = total + t.w_soc_pixel * terms["soc_pixel"]
        if t.w_es > 0:
            terms["es"] = edge_smoothness(out["log_scale"], batch["rgb"]) + edge_smoothness(out["log_shift"], batch["rgb"])
            total = total + t.w_es * terms["es"]
        # every term on every logged step (0 when inactive in this batch): the CSV log keeps one set of columns
        return total, {k: terms[k].detach() if k in terms else torch.zeros(()) for k in LOGGED_TERMS}

    def validate(self, model: EchoRescaleHead, criterion: SILogLoss, loader: DataLoader, runtime: Runtime) -> dict[str, float]:
        wrapper = HeadAsDepthModel(model)
        feeding = _Feeding(loader, wrapper)
        return evaluate_model(wrapper, feeding, runtime.device, self.data.min_depth, self.data.max_depth,
                              desc="validate", progress=False).metrics

    def checkpoint_config(self) -> dict[str, Any]:
        return {"head": self.model_cfg.head.to_dict(), "frontend": self.model_cfg.frontend.to_dict()}

    def save_best(self, model: EchoRescaleHead, path: Path, meta: dict[str, Any]) -> None:
        model.save(path, self.model_cfg.frontend.to_dict(), {**meta, "pseudo_acceptance": self.pseudo_acceptance})


class _Feeding:
    """Iterates a loader of FrozenFeatureSet batches, handing each to the wrapper before evaluate_model calls it."""

    def __init__(self, loader: DataLoader, wrapper: HeadAsDepthModel) -> None:
        self.loader, self.wrapper = loader, wrapper

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.wrapper.feed = batch
            yield {**batch, "echo": batch["rgb"][:, :1]}


def train_rescale(config: dict[str, Any], bag: str | Path, run_dir: str | Path, *, resume: str | Path | None = None,
                  device: str | None = None) -> dict[str, Any]:
    """Train the rescale-map head on `bag` into `run_dir` (train/loop.py fit)."""
    return fit(RescaleTrainer(config, device or "cpu"), bag, run_dir, resume=resume, device=device)


__all__ = ["DEFAULT_CONFIG", "EAR_SWAP", "FrozenFeatureSet", "RescaleTrainer", "TrainConfig", "predict_set", "train_rescale"]
