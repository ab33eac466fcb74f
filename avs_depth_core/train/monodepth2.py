"""Self-supervised Monodepth2 training on a bag's frame triples: the relative depth model that AVS-Net's echoes scale.

Numbers follow nianticlabs/monodepth2 (options.py, trainer.py, mono_dataset.py; method_spec section 3) and live in the
config's model section (config/monodepth2.yaml, Monodepth2Config): 0.85 SSIM + 0.15 L1, per-pixel minimum reprojection
over the source frames, auto-masking, edge-aware smoothness 1e-3 / 2^s on mean-normalised disparity, scales {1, 1/2, 1/4,
1/8}, 192x640, Adam lr 1e-4 with StepLR(15, 0.1) stepped per epoch, batch 12, 20 epochs; the sources are the triple's
neighbours frame_interval frames away (20 in the AVS-Net paper). Augmentation as mono_dataset.py: horizontal flip with
p 0.5 (images and intrinsics) and colour jitter (brightness, contrast, saturation 0.2, hue 0.1) with p 0.5, one draw per
sample for all of its frames, applied only to the networks' inputs; the loss sees the un-jittered frames.

The run conveniences mirror the AVS-Net trainer (train/avsnet.py): progress bars, TensorBoard + CSV logs and a training
curve, <run>/checkpoints/last after every epoch (with optimiser state, for --resume) and <run>/checkpoints/best, DDP under
torchrun. Validation after every epoch on the val split's triples: the photometric loss, and, where the bag has depth,
the seven depth metrics after per-image median scaling with the ground truth (Monodepth2's evaluate_depth.py protocol);
best = lowest median-scaled abs_rel, or the lowest validation loss when the val split has no depth.

The config YAML is either flat Monodepth2Config keys (config/monodepth2.yaml) or sections `model:` (those keys), `train:`
(TrainConfig) and `data:` (DataConfig); flat keys may be mixed with train:/data: sections. --set takes model.KEY,
train.KEY or data.KEY; train.epochs, train.batch_size and train.lr are accepted as the AVS-Net trainer spells them and
set model.num_epochs, model.batch_size and model.learning_rate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import StepLR

from avs_depth_core.data.cache import bag_fingerprint
from avs_depth_core.data.datasets import TripletBagDataset
from avs_depth_core.geometry import intrinsics_pyramid
from avs_depth_core.losses.photometric import Monodepth2Loss, Monodepth2LossResult
from avs_depth_core.metrics import METRIC_NAMES, MetricAccumulator
from avs_depth_core.models.monodepth2 import (
    CHECKPOINT_KIND,
    DepthNet,
    Monodepth2Config,
    PoseNet,
    disp_to_depth,
    predict_poses,
    save_monodepth2,
)
from avs_depth_core.models.resnet import LAYOUTS as RESNET_LAYOUTS
from avs_depth_core.scaling import recover_scale_batch
from avs_depth_core.train.loop import (
    Progress,
    RunLog,
    Runtime,
    apply_overrides,
    autocast,
    barrier,
    build_splits,
    check_batch_finite,
    check_loss_finite,
    dataclass_from_dict,
    grad_scaler,
    load_training_checkpoint,
    make_loader,
    progress,
    resume_path,
    save_training_checkpoint,
    seed_everything,
    setup_runtime,
    start_run,
    teardown,
    to_device,
    wrap_model,
)

# Offsets (in units of frame_interval) of the frames in a TripletBagDataset item, in its order.
TRIPLE_OFFSETS = (-1, 0, 1)
# train.KEY spellings of the AVS-Net trainer -> the Monodepth2Config key they set.
TRAIN_ALIASES = {"epochs": "num_epochs", "batch_size": "batch_size", "lr": "learning_rate"}
SECTIONS = ("model", "train", "data")


@dataclass
class TrainConfig:
    """The `train:` section: how this run proceeds. Optimisation numbers are Monodepth2's, in the model section."""

    seed: int = 0
    num_workers: int = 2
    amp: bool = False  # fp16 autocast + GradScaler, CUDA only; Monodepth2 trains in fp32
    clip_grad: float = 0.0  # max grad norm; 0 = off (Monodepth2 does not clip)
    max_steps: int = 0  # 0 = num_epochs * batches per epoch; otherwise stop after this many steps
    checkpoint_every: int = 0  # also write checkpoints/last every N steps (0 = only at epoch ends)
    stop_after_steps: int = 0  # end this invocation after N steps, schedule unchanged; continue with --resume
    log_every: int = 10  # steps between logged training scalars
    validate: bool = True  # per-epoch validation on the val split's triples; best checkpoint by it

    def check(self) -> None:
        if self.log_every <= 0:
            raise ValueError(f"config: train.log_every must be positive, got {self.log_every}")
        for key in ("max_steps", "checkpoint_every", "stop_after_steps", "num_workers", "clip_grad"):
            if getattr(self, key) < 0:
                raise ValueError(f"config: train.{key} must be >= 0, got {getattr(self, key)}")


@dataclass
class DataConfig:
    """The `data:` section: which triples train and validate, and how the bag is read."""

    dataset: str = "bag"  # a label recorded in the checkpoint
    train_split: str = "train"
    val_split: str = "val"
    min_depth: float = 1e-3  # validation ground truth: min_depth < gt < max_depth
    max_depth: float = 30.0  # depth at or beyond it is invalid (BatVision: 12 m BV1, 30 m BV2); also the cache's echo window
    tolerance_s: float = 0.05  # echo-frame pairing tolerance (the cache pairs echoes even though training ignores them)
    # The trainer never reads the echo; the cache stores it anyway when the bag has one, so keep its resized STFT small.
    echo_size: tuple[int, int] = (32, 32)
    cache_dir: str | None = None  # default: $AVS_DEPTH_CACHE or ~/.cache/avs_depth
    skip_bad: bool = False  # skip (and count) undecodable messages instead of failing


# ---------------------------------------------------------------------------------------------------------------------
# configuration


def sectioned_config(raw: Any, source: str) -> dict[str, Any]:
    """A monodepth2 YAML (flat Monodepth2Config keys and/or model/train/data sections) -> {"model", "train", "data"}."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: expected a mapping of settings, got {type(raw).__name__}")
    flat = {k: v for k, v in raw.items() if k not in SECTIONS}
    if flat and "model" in raw:
        raise ValueError(f"{source}: has both a model: section and top-level model keys {sorted(flat)}; use one of them")
    out = {"model": raw.get("model") or flat, "train": raw.get("train") or {}, "data": raw.get("data") or {}}
    for name in SECTIONS:
        if not isinstance(out[name], dict):
            raise ValueError(f"{source}: section {name}: must be a mapping, got {type(out[name]).__name__}")
    return {name: dict(values) for name, values in out.items()}


def resolve_config(config: dict[str, Any]) -> tuple[Monodepth2Config, TrainConfig, DataConfig]:
    """Validate the three sections (after aliasing train.epochs/batch_size/lr); errors name the key."""
    unknown = sorted(set(config) - set(SECTIONS))
    if unknown:
        raise ValueError(f"config: unknown section(s) {unknown}; expected model, train, data")
    model_values = dict(config.get("model") or {})
    train_values = dict(config.get("train") or {})
    for alias, key in TRAIN_ALIASES.items():
        if alias in train_values:
            model_values[key] = train_values.pop(alias)
    model_cfg = _model_config(model_values)
    if not set(model_cfg.source_offsets) <= {-1, 1}:
        raise ValueError(f"config: model.source_offsets {model_cfg.source_offsets}: the triple dataset provides the frames "
                         f"at -1 and +1 frame_interval only")
    for key in ("num_layers", "pose_num_layers"):
        if getattr(model_cfg, key) not in RESNET_LAYOUTS:
            raise ValueError(f"config: model.{key} {getattr(model_cfg, key)}: choose a ResNet depth from "
                             f"{sorted(RESNET_LAYOUTS)}")
    train_cfg = dataclass_from_dict(TrainConfig, train_values, "train")
    train_cfg.check()
    data_cfg = dataclass_from_dict(DataConfig, config.get("data"), "data")
    data_cfg.echo_size = tuple(data_cfg.echo_size)
    if not 0 <= data_cfg.min_depth < data_cfg.max_depth:
        raise ValueError(f"config: need 0 <= data.min_depth < data.max_depth, got {data_cfg.min_depth}, {data_cfg.max_depth}")
    if len(data_cfg.echo_size) != 2 or min(data_cfg.echo_size) < 1:
        raise ValueError(f"config: data.echo_size must be [height, width], got {list(data_cfg.echo_size)}")
    return model_cfg, train_cfg, data_cfg


def _model_config(values: dict[str, Any]) -> Monodepth2Config:
    try:
        typed = dataclass_from_dict(Monodepth2Config, values, "model")
    except ValueError as err:
        raise ValueError(str(err)) from None
    except TypeError as err:
        raise ValueError(f"config: model: {err}") from None
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in typed.to_dict().items()}
    return Monodepth2Config.from_dict(plain, source="config model")


def resolved_dict(model_cfg: Monodepth2Config, train_cfg: TrainConfig, data_cfg: DataConfig) -> dict[str, Any]:
    data = asdict(data_cfg)
    data["echo_size"] = list(data_cfg.echo_size)
    return {"model": model_cfg.to_dict(), "train": asdict(train_cfg), "data": data}


# ---------------------------------------------------------------------------------------------------------------------
# networks and augmentation


class Monodepth2Model(nn.Module):
    """DepthNet + PoseNet as one module (state dict keys depth.* and pose.*, as load_monodepth2 reads them), so DDP wraps
    both and one forward call gives what the loss needs."""

    def __init__(self, config: Monodepth2Config, load_pretrained: bool = True) -> None:
        super().__init__()
        self.depth = DepthNet.from_config(config, load_pretrained)
        self.pose = PoseNet.from_config(config, load_pretrained)

    def forward(self, target: torch.Tensor, sources: dict[int, torch.Tensor]
                ) -> tuple[dict[tuple[str, int], torch.Tensor], dict[int, torch.Tensor]]:
        """(augmented) target (B, 3, H, W) and sources {offset: (B, 3, H, W)} -> (disparities by scale, poses target->source)."""
        return self.depth(target), predict_poses(self.pose, target, sources)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    # ITU-R 601-2 luma, the weights torchvision's rgb_to_grayscale uses.
    return (0.299 * x[..., 0, :, :] + 0.587 * x[..., 1, :, :] + 0.114 * x[..., 2, :, :]).unsqueeze(-3)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: float) -> torch.Tensor:
    return (factor * x + (1 - factor) * other).clamp(0, 1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> HSV with hue in [0, 1)."""
    r, g, b = x.unbind(-3)
    maxc, _ = x.max(-3)
    minc, _ = x.min(-3)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, maxc], -3)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) HSV (hue in [0, 1)) -> RGB in [0, 1]."""
    h, s, v = x.unbind(-3)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = torch.stack([torch.stack(c, -3) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    index = i.unsqueeze(-3).unsqueeze(0).expand(1, *x.shape)
    return torch.gather(choices, 0, index)[0]


def color_jitter(frames: torch.Tensor, brightness: float, contrast: float, saturation: float, hue: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """torchvision ColorJitter on one sample's frames (N, 3, H, W) with ONE draw of factors and order for all of them
    (Monodepth2 mono_dataset.py): brightness/contrast/saturation factors U[1 - b, 1 + b], hue shift U[-h, h], in a random
    order. Contrast blends each frame with the mean of its own grayscale, as torchvision does."""
    def draw(spread: float, centre: float = 1.0) -> float:
        return float(centre + spread * (2 * torch.rand((), generator=generator) - 1))

    factors = {"brightness": draw(brightness), "contrast": draw(contrast), "saturation": draw(saturation), "hue": draw(hue, 0.0)}
    x = frames
    for k in torch.randperm(4, generator=generator).tolist():
        name = ("brightness", "contrast", "saturation", "hue")[k]
        f = factors[name]
        if name == "brightness":
            x = (x * f).clamp(0, 1)
        elif name == "contrast":
            x = _blend(x, _grayscale(x).mean(dim=(-3, -2, -1), keepdim=True), f)
        elif name == "saturation":
            x = _blend(x, _grayscale(x), f)
        elif f != 0:
            hsv = rgb_to_hsv(x)
            hsv = torch.stack([(hsv[..., 0, :, :] + f) % 1.0, hsv[..., 1, :, :], hsv[..., 2, :, :]], -3)
            x = hsv_to_rgb(hsv).clamp(0, 1)
    return x


def augment(frames: torch.Tensor, K: torch.Tensor, config: Monodepth2Config,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """frames (B, N, 3, H, W) in [0, 1], K (B, 3, 3) -> (frames for the loss, frames for the networks, K).

    Flip (p hflip_prob) mirrors every frame of a sample and its intrinsics: pixel u goes to W - 1 - u, so cx -> W - 1 - cx
    (and the skew changes sign). Monodepth2 keeps K, right only for cx = (W - 1) / 2; kept here as the correct geometry.
    Jitter (p color_jitter_prob) touches only the networks' copy.
    """
    b, _, _, _, w = frames.shape
    flip = torch.rand(b, generator=generator) < config.hflip_prob
    jitter = torch.rand(b, generator=generator) < config.color_jitter_prob
    frames, K = frames.clone(), K.clone()
    if flip.any():
        idx = flip.nonzero().flatten().to(frames.device)
        frames[idx] = frames[idx].flip(-1)
        K[idx, 0, 2] = (w - 1) - K[idx, 0, 2]
        K[idx, 0, 1] = -K[idx, 0, 1]
    inputs = frames.clone()
    for i in jitter.nonzero().flatten().tolist():
        inputs[i] = color_jitter(frames[i], config.brightness, config.contrast, config.saturation, config.hue, generator)
    return frames, inputs, K


def split_frames(frames: torch.Tensor, offsets: list[int]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """(B, 3, 3, H, W) triple -> (target (B, 3, H, W), {offset: source}) for the configured source offsets."""
    by_offset = {o: frames[:, i] for i, o in enumerate(TRIPLE_OFFSETS)}
    return by_offset[0], {o: by_offset[o] for o in offsets}


def batch_intrinsics(K: torch.Tensor, size: tuple[int, int], stamps: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Dataset K (B, 3, 3) for the network size -> 4x4 (K, inv_K); missing (NaN) or bad intrinsics name the frames."""
    try:
        return intrinsics_pyramid(K, size, size, [0], source="camera intrinsics")[0]
    except ValueError as err:
        raise ValueError(f"{err} (triples centred on stamp_ns {[int(s) for s in stamps]})") from None


def training_loss(net: nn.Module, criterion: Monodepth2Loss, batch: dict[str, Any], config: Monodepth2Config,
                  runtime: Runtime) -> Monodepth2LossResult:
    """One training batch (TripletBagDataset items, on the host) -> the loss result: augment, move to the device, depth and
    pose networks on the augmented frames, the multi-scale loss on the plain ones."""
    frames, inputs, K = augment(batch["rgb"], batch["K"], config)
    K4, inv_K4 = batch_intrinsics(K, (config.height, config.width), batch["stamp_ns"])
    moved = to_device({"frames": frames, "inputs": inputs, "K4": K4, "inv_K4": inv_K4}, runtime.device)
    target, sources = split_frames(moved["frames"], config.source_offsets)
    target_in, sources_in = split_frames(moved["inputs"], config.source_offsets)
    with autocast(runtime):
        disps, poses = net(target_in, sources_in)
    disps = {k: v.float() for k, v in disps.items()}
    poses = {k: v.float() for k, v in poses.items()}
    return criterion(target, sources, disps, poses, moved["K4"], moved["inv_K4"])


# ---------------------------------------------------------------------------------------------------------------------
# training


def build_dataset(bag: Path, split: str, model_cfg: Monodepth2Config, data_cfg: DataConfig, verbose: bool) -> TripletBagDataset:
    return TripletBagDataset(bag, split=split, image_size=(model_cfg.height, model_cfg.width),
                             interval=model_cfg.frame_interval, max_depth=data_cfg.max_depth, echo_size=data_cfg.echo_size,
                             tolerance_s=data_cfg.tolerance_s, cache_dir=data_cfg.cache_dir, skip_bad=data_cfg.skip_bad,
                             progress=verbose, verbose=verbose)


def train_monodepth2(config: dict[str, Any], bag: str | Path, run_dir: str | Path, *, resume: str | Path | None = None,
                     device: str | None = None) -> dict[str, Any]:
    """Train Monodepth2 on `bag`'s triples into `run_dir` (config.yaml, checkpoints/{last,best}, logs, training_curve.png).

    `config` is sectioned ({"model", "train", "data"}, see sectioned_config). Under torchrun every process calls this;
    rank 0 logs, validates and writes. Returns a summary (rank 0's view).
    """
    model_cfg, train_cfg, data_cfg = resolve_config(config)
    bag, run_dir = Path(bag), Path(run_dir)
    runtime = setup_runtime(device, train_cfg.amp)
    try:
        return _train(model_cfg, train_cfg, data_cfg, bag, run_dir, resume, runtime)
    finally:
        teardown(runtime)


def _train(model_cfg: Monodepth2Config, train_cfg: TrainConfig, data_cfg: DataConfig, bag: Path, run_dir: Path,
           resume: str | Path | None, runtime: Runtime) -> dict[str, Any]:
    say = print if runtime.is_main else (lambda *a, **k: None)
    seed_everything(train_cfg.seed + runtime.rank)
    resolved = resolved_dict(model_cfg, train_cfg, data_cfg)
    start_run(run_dir, resolved, resume, runtime, "avs-depth train --model monodepth2")
    train_set, val_set = build_splits(lambda split, verbose: build_dataset(bag, split, model_cfg, data_cfg, verbose),
                                      data_cfg.train_split, data_cfg.val_split if train_cfg.validate else None, runtime)
    batch_size = model_cfg.batch_size
    loader = make_loader(train_set, batch_size, runtime, shuffle=True, seed=train_cfg.seed, num_workers=train_cfg.num_workers,
                         drop_last=len(train_set) >= batch_size * runtime.world_size)
    val_loader = None
    if val_set is not None and runtime.is_main:
        val_loader = torch.utils.data.DataLoader(val_set, batch_size=batch_size, shuffle=False,
                                                 num_workers=train_cfg.num_workers)

    # Networks, Adam and the per-epoch StepLR of Monodepth2's trainer.
    model = Monodepth2Model(model_cfg).to(runtime.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=model_cfg.learning_rate)
    scheduler = StepLR(optimizer, model_cfg.scheduler_step_size, model_cfg.scheduler_gamma)
    batches_per_epoch = len(loader)
    total_steps = model_cfg.num_epochs * batches_per_epoch
    if train_cfg.max_steps:
        total_steps = min(total_steps, train_cfg.max_steps)
    scaler = grad_scaler(runtime)
    state = Progress()
    if resume is not None:
        path = resume_path(resume, run_dir)
        state = load_training_checkpoint(path, model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                         kind=CHECKPOINT_KIND)
        if runtime.rank > 0:  # the stored RNG state is rank 0's; other ranks keep streams of their own
            seed_everything(train_cfg.seed + runtime.rank + 1_000_003 * state.step)
        say(f"resumed from {path}: epoch {state.epoch + 1}, batch {state.batch}, step {state.step}/{total_steps}",
            file=sys.stderr)
    net = wrap_model(model, runtime, find_unused_parameters=False)
    criterion = Monodepth2Loss.from_config(model_cfg).to(runtime.device)
    log = RunLog(run_dir, runtime, purge_step=state.step + 1 if resume is not None else None)
    meta = {"train_config": resolved, "bag": str(bag), "bag_sha256": bag_fingerprint(bag) if runtime.is_main else "",
            "dataset": data_cfg.dataset, "train_triples": len(train_set), "world_size": runtime.world_size}
    ckpt_dir = run_dir / "checkpoints"
    model_config = dict(model_cfg.to_dict(), pretrained_encoder=None)  # the weights are in the checkpoint now

    def save_last(validation: dict[str, float] | None = None) -> None:
        if runtime.is_main:
            save_training_checkpoint(ckpt_dir / "last", model.state_dict(), model_config, CHECKPOINT_KIND,
                                     {**meta, "val": validation or {}}, optimizer=optimizer, scheduler=scheduler,
                                     scaler=scaler, progress=state)

    size = (model_cfg.height, model_cfg.width)
    say(f"training Monodepth2 (ResNet-{model_cfg.num_layers}, {size[0]}x{size[1]}, sources "
        f"{[o * model_cfg.frame_interval for o in model_cfg.source_offsets]} frames) on {len(train_set)} triples, "
        f"{runtime.world_size} process(es) on {runtime.device}{' with AMP' if runtime.amp else ''}; {total_steps} steps; "
        f"run dir {run_dir}", file=sys.stderr)
    if state.step >= total_steps:
        say(f"nothing to do: the run already finished its {total_steps} steps", file=sys.stderr)
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    triples_seen, step_seconds = 0, 0.0  # training steps only (data, forward, backward, update), for the throughput
    end_step = total_steps if not train_cfg.stop_after_steps else min(total_steps, state.step + train_cfg.stop_after_steps)
    net.train()
    while state.step < end_step:
        loader.sampler.set_epoch(state.epoch, skip=state.batch * batch_size)
        steps_left = min(batches_per_epoch - state.batch, end_step - state.step)
        bar = progress(loader, steps_left, f"epoch {state.epoch + 1}/{model_cfg.num_epochs}", runtime)
        epoch_start = time.perf_counter()
        for batch in bar:
            check_batch_finite(batch, state.step, ("rgb",))
            result = training_loss(net, criterion, batch, model_cfg, runtime)
            loss = result.loss
            check_loss_finite(loss, state.step, batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if train_cfg.clip_grad > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(net.parameters(), train_cfg.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            state.step += 1
            state.batch += 1
            triples_seen += int(batch["rgb"].shape[0])
            if runtime.is_main:
                bar.set_postfix(loss=f"{loss.item():.4f}")
                if state.step % train_cfg.log_every == 0 or state.step == 1:
                    log.scalars("train", state.step, {"loss": loss.item(), "lr": scheduler.get_last_lr()[0],
                                                      "automasked": 1.0 - result.warp_selected_fraction.item()}, state.epoch)
            if train_cfg.checkpoint_every and state.step % train_cfg.checkpoint_every == 0 and state.step < end_step:
                save_last()
            if state.step >= end_step:
                break
        step_seconds += time.perf_counter() - epoch_start
        epoch_done = state.batch >= batches_per_epoch
        if epoch_done:
            state.epoch, state.batch = state.epoch + 1, 0
            scheduler.step()  # Monodepth2 steps its StepLR once per epoch
        validation = None
        if val_loader is not None:
            validation = validate(model, criterion, val_loader, runtime.device, model_cfg, data_cfg)
            log.scalars("val", state.step, validation, state.epoch)
            key = "abs_rel" if "abs_rel" in validation else "loss"
            improved = validation[key] < state.best
            if improved:
                state.best = validation[key]
            shown = [k for k in ("loss", "abs_rel", "rmse", "delta1") if k in validation]
            say(f"epoch {state.epoch if epoch_done else state.epoch + 1}: step {state.step}, val "
                + ", ".join(f"{k} {validation[k]:.4f}" for k in shown) + (" (best)" if improved else ""), file=sys.stderr)
            if improved and runtime.is_main:
                save_monodepth2(ckpt_dir / "best", model.depth, model_cfg, model.pose,
                                {**meta, "val": validation, "epoch": state.epoch, "step": state.step})
        save_last(validation)
        log.plot(val_keys=("loss", "abs_rel", "delta1"))
        history.append({"epoch": state.epoch, "step": state.step, "val": validation})
        barrier(runtime)
    log.close()
    seconds = time.perf_counter() - start
    summary = {"run_dir": str(run_dir), "steps": state.step, "epochs": state.epoch, "seconds": seconds,
               "train_triples_per_s": triples_seen * runtime.world_size / step_seconds if triples_seen else None,
               "best_val": state.best if math.isfinite(state.best) else None, "history": history,
               "last": str(ckpt_dir / "last.safetensors"),
               "best": str(ckpt_dir / "best.safetensors") if (ckpt_dir / "best.safetensors").exists() else None}
    if runtime.is_main:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


@torch.inference_mode()
def validate(model: Monodepth2Model, criterion: Monodepth2Loss, loader: torch.utils.data.DataLoader, device: torch.device,
             model_cfg: Monodepth2Config, data_cfg: DataConfig) -> dict[str, float]:
    """Mean photometric loss of the un-augmented val triples, and where the centre frames have depth, the seven metrics
    after per-image median scaling with the ground truth (Monodepth2 evaluate_depth.py) plus the spread of those ratios."""
    was_training = model.training
    model.eval()
    size = (model_cfg.height, model_cfg.width)
    acc = MetricAccumulator(data_cfg.min_depth, data_cfg.max_depth)
    losses, ratios = [], []
    try:
        for batch in progress(loader, len(loader), "validate", Runtime(device)):
            K4, inv_K4 = batch_intrinsics(batch["K"], size, batch["stamp_ns"])
            frames = batch["rgb"].to(device)
            target, sources = split_frames(frames, model_cfg.source_offsets)
            disps, poses = model(target, sources)
            result = criterion(target, sources, disps, poses, K4.to(device), inv_K4.to(device))
            losses.append((float(result.loss), int(target.shape[0])))
            if "depth" not in batch:
                continue
            has = batch["has_depth"].bool()
            if not has.any():
                continue
            _, depth = disp_to_depth(disps[("disp", 0)][has.to(device)], model_cfg.min_depth, model_cfg.max_depth)
            gt = batch["depth"][has].to(device)
            valid = (gt > data_cfg.min_depth) & (gt < data_cfg.max_depth)
            scales = recover_scale_batch(depth, gt, "median", mask=valid, min_depth=data_cfg.min_depth,
                                         max_depth=data_cfg.max_depth, min_pixels=1, fallback="unit")
            ratios += [s.scale for s in scales if s.fallback is None]
            acc.update(torch.stack([depth[i] * s.scale for i, s in enumerate(scales)]), gt)
    finally:
        model.train(was_training)
    out = {"loss": sum(v * n for v, n in losses) / max(1, sum(n for _, n in losses))}
    if acc.count:
        out.update({k: v for k, v in acc.compute().items() if k in METRIC_NAMES})
        med = float(np.median(ratios))
        out["scale_ratio_median"] = med
        out["scale_ratio_std"] = float(np.std(np.asarray(ratios) / med))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# command line (called by avs_depth_core.train.cli for `avs-depth train --model monodepth2`)


def _default_config_path() -> Path:
    from avs_depth_core.train.cli import DEFAULT_CONFIGS, find_config

    return find_config(DEFAULT_CONFIGS["monodepth2"])


def cli_overrides(args: argparse.Namespace) -> list[str]:
    """`avs-depth train` options as assignments: --epochs, --batch-size and --lr set the model section's Monodepth2 keys."""
    pairs = {"model.num_epochs": args.epochs, "model.batch_size": args.batch_size, "model.learning_rate": args.lr,
             "train.seed": args.seed, "train.num_workers": args.num_workers, "train.max_steps": args.max_steps}
    return [f"{k}={v}" for k, v in pairs.items() if v is not None]


def run(args: argparse.Namespace) -> int:
    """Entry point of `avs-depth train --model monodepth2` (args as avs_depth_core.train.cli parses them)."""
    from avs_depth_core.train.cli import find_config, load_config, resolve_run_dir

    if getattr(args, "no_echo", False):
        raise ValueError("--no-echo applies to --model avsnet; Monodepth2 never uses the echo")
    run_dir = resolve_run_dir(args)
    given = Path(find_config(args.config)) if args.config else _default_config_path()
    # A resumed run keeps its own configuration unless another config than the default was named.
    if args.resume is not None and (run_dir / "config.yaml").is_file() and given.resolve() == _default_config_path().resolve():
        config_path = run_dir / "config.yaml"
    else:
        config_path = given
    config = sectioned_config(load_config(config_path), str(config_path))
    config = apply_overrides(config, [*cli_overrides(args), *args.overrides])
    summary = train_monodepth2(config, args.bag, run_dir, resume=args.resume, device=args.device)
    if int(os.environ.get("RANK", "0")) == 0:
        best = f", best {summary['best']}" if summary["best"] else ""
        rate = summary["train_triples_per_s"]
        speed = f" ({rate:.1f} triples/s in training steps)" if rate and math.isfinite(rate) else ""
        print(f"trained {summary['steps']} steps in {summary['seconds']:.1f} s{speed}; checkpoints: last {summary['last']}{best}")
    return 0
