"""Supervised AVS-Net training on a bag: SILog on valid pixels, AdamW + OneCycle with ZoeDepth's parameter groups.

Numbers (config `train:`) follow ZoeD_N's training section (method_spec 1.4): AdamW lr 1.61e-4, weight decay 0.01, MiDaS
encoder at lr/10, OneCycleLR (pct_start 0.7, div_factor 1, final_div_factor 1e4, momentum 0.85-0.95) stepped every
iteration, batch 16, 5 epochs, grad-norm clipping 0.1; SILog alpha 10, lambda 0.85 (AVS-Net). AMP (fp16) on CUDA.
After every epoch the model is validated (the seven Table-1 metrics on the val split) and checkpointed as
<run>/checkpoints/last (with optimiser state, for --resume); the checkpoint with the lowest validation abs_rel (a stated
choice: the first Table-1 metric, scale-sensitive unlike SILog) is also kept as <run>/checkpoints/best.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.optim.lr_scheduler import OneCycleLR

from avs_depth_core.data.cache import bag_fingerprint
from avs_depth_core.data.datasets import SupervisedBagDataset
from avs_depth_core.evaluation import evaluate_model
from avs_depth_core.losses.silog import SILogLoss
from avs_depth_core.metrics import METRIC_NAMES
from avs_depth_core.models.avsnet import CHECKPOINT_KIND, AVSNet, AVSNetConfig
from avs_depth_core.train.loop import (
    Progress,
    RunLog,
    Runtime,
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


@dataclass
class TrainConfig:
    """The `train:` section. Defaults: ZoeD_N (config_zoedepth.json "train", trainers/*.py) unless noted."""

    optimizer: str = "adamw"
    lr: float = 1.61e-4
    weight_decay: float = 0.01
    encoder_lr_factor: float = 10.0
    midas_lr_factor: float = 1.0
    pos_enc_lr_factor: float = 10.0
    scheduler: str = "onecycle"
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
    loss: str = "silog"
    silog_alpha: float = 10.0  # AVS-Net
    silog_lambda: float = 0.85
    amp: bool = True  # fp16 autocast + GradScaler, CUDA only
    seed: int = 0
    num_workers: int = 2
    max_steps: int = 0  # 0 = epochs * batches per epoch; otherwise stop (and end the OneCycle schedule) after this many steps
    checkpoint_every: int = 0  # also write checkpoints/last every N steps (0 = only at epoch ends)
    stop_after_steps: int = 0  # end this invocation after N steps, schedule unchanged; continue with --resume (job slots)
    log_every: int = 10  # steps between logged training scalars
    validate: bool = True  # per-epoch validation (needs a val split); best checkpoint by val abs_rel

    def check(self) -> None:
        choices = {"optimizer": ("adamw",), "scheduler": ("onecycle",), "loss": ("silog",)}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"config: train.{key} {getattr(self, key)!r} is not implemented; use {' or '.join(allowed)}")
        for key in ("lr", "epochs", "batch_size", "log_every", "encoder_lr_factor", "midas_lr_factor", "pos_enc_lr_factor"):
            if getattr(self, key) <= 0:
                raise ValueError(f"config: train.{key} must be positive, got {getattr(self, key)}")
        for key in ("max_steps", "checkpoint_every", "stop_after_steps", "num_workers", "clip_grad", "weight_decay"):
            if getattr(self, key) < 0:
                raise ValueError(f"config: train.{key} must be >= 0, got {getattr(self, key)}")
        if not 0 < self.pct_start < 1:
            raise ValueError(f"config: train.pct_start must lie in (0, 1), got {self.pct_start}")


@dataclass
class DataConfig:
    """The `data:` section: which frames of the bag train and validate, and how they are read."""

    dataset: str = "bag"  # a label recorded in the checkpoint (e.g. batvision_v2)
    image_size: tuple[int, int] | None = None  # must equal model.image_size (null = take it from the model)
    min_depth: float = 1e-3  # valid GT: min_depth < gt < max_depth, in the loss and the metrics
    max_depth: float = 0.0  # 0 = model.max_depth
    train_split: str = "train"
    val_split: str = "val"
    tolerance_s: float = 0.05  # echo-frame pairing tolerance
    cache_dir: str | None = None  # default: $AVS_DEPTH_CACHE or ~/.cache/avs_depth
    skip_bad: bool = False  # skip (and count) undecodable messages instead of failing


def resolve_config(config: dict[str, Any]) -> tuple[AVSNetConfig, TrainConfig, DataConfig]:
    """Validate the three sections; errors name the key."""
    unknown = sorted(set(config) - {"model", "train", "data"})
    if unknown:
        raise ValueError(f"config: unknown section(s) {unknown}; expected model, train, data")
    model_cfg = AVSNetConfig.from_dict(dict(config.get("model") or {}), where="config model")
    train_cfg = dataclass_from_dict(TrainConfig, config.get("train"), "train")
    train_cfg.check()
    data_cfg = dataclass_from_dict(DataConfig, config.get("data"), "data")
    if data_cfg.image_size is not None and tuple(data_cfg.image_size) != tuple(model_cfg.image_size):
        raise ValueError(f"config: data.image_size {list(data_cfg.image_size)} differs from model.image_size "
                         f"{list(model_cfg.image_size)}; the network trains at the size the dataset delivers")
    data_cfg.image_size = tuple(model_cfg.image_size)
    if data_cfg.max_depth == 0:
        data_cfg.max_depth = model_cfg.max_depth
    if not 0 <= data_cfg.min_depth < data_cfg.max_depth:
        raise ValueError(f"config: need 0 <= data.min_depth < data.max_depth, got {data_cfg.min_depth}, {data_cfg.max_depth}")
    return model_cfg, train_cfg, data_cfg


def resolved_dict(model_cfg: AVSNetConfig, train_cfg: TrainConfig, data_cfg: DataConfig) -> dict[str, Any]:
    data = asdict(data_cfg)
    data["image_size"] = list(data_cfg.image_size)
    return {"model": model_cfg.to_dict(), "train": asdict(train_cfg), "data": data}


def build_dataset(bag: Path, split: str, model_cfg: AVSNetConfig, data_cfg: DataConfig, verbose: bool) -> SupervisedBagDataset:
    return SupervisedBagDataset(
        bag, split=split, image_size=model_cfg.image_size, max_depth=data_cfg.max_depth, echo_size=model_cfg.echo_size,
        stft=model_cfg.stft, speed_of_sound=model_cfg.speed_of_sound, sample_rate=model_cfg.sample_rate,
        tolerance_s=data_cfg.tolerance_s, cache_dir=data_cfg.cache_dir, skip_bad=data_cfg.skip_bad, progress=verbose,
        verbose=verbose)


def train_avsnet(config: dict[str, Any], bag: str | Path, run_dir: str | Path, *, resume: str | Path | None = None,
                 device: str | None = None) -> dict[str, Any]:
    """Train AVS-Net on `bag` into `run_dir` (config.yaml, checkpoints/{last,best}, logs, training_curve.png).

    Under torchrun every process calls this; rank 0 logs, validates and writes. Returns a summary (rank 0's view).
    """
    model_cfg, train_cfg, data_cfg = resolve_config(config)
    bag, run_dir = Path(bag), Path(run_dir)
    runtime = setup_runtime(device, train_cfg.amp)
    try:
        return _train(model_cfg, train_cfg, data_cfg, bag, run_dir, resume, runtime)
    finally:
        teardown(runtime)


def _train(model_cfg: AVSNetConfig, train_cfg: TrainConfig, data_cfg: DataConfig, bag: Path, run_dir: Path,
           resume: str | Path | None, runtime: Runtime) -> dict[str, Any]:
    say = print if runtime.is_main else (lambda *a, **k: None)
    seed_everything(train_cfg.seed + runtime.rank)
    resolved = resolved_dict(model_cfg, train_cfg, data_cfg)
    start_run(run_dir, resolved, resume, runtime, "avs-depth train")
    train_set, val_set = build_splits(lambda split, verbose: build_dataset(bag, split, model_cfg, data_cfg, verbose),
                                      data_cfg.train_split, data_cfg.val_split if train_cfg.validate else None, runtime)
    loader = make_loader(train_set, train_cfg.batch_size, runtime, shuffle=True, seed=train_cfg.seed,
                         num_workers=train_cfg.num_workers, drop_last=len(train_set) >= train_cfg.batch_size * runtime.world_size)
    val_loader = None
    if val_set is not None and runtime.is_main:
        val_loader = torch.utils.data.DataLoader(val_set, batch_size=train_cfg.batch_size, shuffle=False,
                                                 num_workers=train_cfg.num_workers)

    # Model, optimiser (ZoeDepth parameter groups), OneCycle schedule stepped per iteration.
    model = AVSNet(model_cfg).to(runtime.device)
    groups = model.parameter_groups(train_cfg.lr, train_cfg.encoder_lr_factor, train_cfg.midas_lr_factor,
                                    train_cfg.pos_enc_lr_factor)
    optimizer = torch.optim.AdamW(groups, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    batches_per_epoch = len(loader)
    total_steps = train_cfg.epochs * batches_per_epoch
    if train_cfg.max_steps:
        total_steps = min(total_steps, train_cfg.max_steps)
    scheduler = OneCycleLR(optimizer, max_lr=[g["lr"] for g in groups], total_steps=total_steps,
                           pct_start=train_cfg.pct_start, div_factor=train_cfg.div_factor,
                           final_div_factor=train_cfg.final_div_factor, three_phase=train_cfg.three_phase,
                           cycle_momentum=train_cfg.cycle_momentum, base_momentum=train_cfg.base_momentum,
                           max_momentum=train_cfg.max_momentum)
    scaler = grad_scaler(runtime)
    state = Progress()
    if resume is not None:
        path = resume_path(resume, run_dir)
        state = load_training_checkpoint(path, model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                         kind=CHECKPOINT_KIND)
        if scheduler.total_steps != total_steps:
            say(f"note: the checkpoint's schedule has {scheduler.total_steps} steps (this config gives {total_steps}); "
                "keeping the checkpoint's", file=sys.stderr)
            total_steps = scheduler.total_steps
        if runtime.rank > 0:  # the stored RNG state is rank 0's; other ranks keep streams of their own
            seed_everything(train_cfg.seed + runtime.rank + 1_000_003 * state.step)
        say(f"resumed from {path}: epoch {state.epoch + 1}, batch {state.batch}, step {state.step}/{total_steps}",
            file=sys.stderr)
    # MiDaS's refinenet4 holds a residual unit for a skip input it never receives, as in the original; DDP must know.
    net = wrap_model(model, runtime, find_unused_parameters=True)
    criterion = SILogLoss(alpha=train_cfg.silog_alpha, lam=train_cfg.silog_lambda)
    log = RunLog(run_dir, runtime, purge_step=state.step + 1 if resume is not None else None)
    meta = {"train_config": resolved, "bag": str(bag), "bag_fingerprint": bag_fingerprint(bag) if runtime.is_main else "",
            "dataset": data_cfg.dataset, "train_frames": len(train_set), "world_size": runtime.world_size}
    ckpt_dir = run_dir / "checkpoints"
    model_config = {**model_cfg.to_dict(), "visual_weights": None, "audio_weights": None}

    def save_last(validation: dict[str, float] | None = None) -> None:
        if runtime.is_main:
            save_training_checkpoint(ckpt_dir / "last", model.state_dict(), model_config, CHECKPOINT_KIND,
                                     {**meta, "val": validation or {}}, optimizer=optimizer, scheduler=scheduler,
                                     scaler=scaler, progress=state)

    say(f"training AVS-Net ({'RGB + echo' if model_cfg.use_echo else 'Only-RGB'}, {model_cfg.backbone}, "
        f"{model_cfg.image_size[0]}x{model_cfg.image_size[1]}) on {len(train_set)} frames, {runtime.world_size} process(es) "
        f"on {runtime.device}{' with AMP' if runtime.amp else ''}; {total_steps} steps; run dir {run_dir}", file=sys.stderr)
    if state.step >= total_steps:
        say(f"nothing to do: the run already finished its {total_steps} steps", file=sys.stderr)
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    end_step = total_steps if not train_cfg.stop_after_steps else min(total_steps, state.step + train_cfg.stop_after_steps)
    net.train()
    while state.step < end_step:
        loader.sampler.set_epoch(state.epoch, skip=state.batch * train_cfg.batch_size)
        steps_left = min(batches_per_epoch - state.batch, end_step - state.step)
        bar = progress(loader, steps_left, f"epoch {state.epoch + 1}/{train_cfg.epochs}", runtime)
        for batch in bar:
            check_batch_finite(batch, state.step, ("rgb", "echo", "depth"))
            batch = to_device(batch, runtime.device)
            valid = (batch["depth"] > data_cfg.min_depth) & (batch["depth"] < data_cfg.max_depth)
            if int(valid.sum()) < 2:
                raise ValueError(f"step {state.step}: no valid depth pixels ({data_cfg.min_depth} < gt < {data_cfg.max_depth}) "
                                 f"in the batch of samples with stamp_ns {batch['stamp_ns'].tolist()}")
            with autocast(runtime):
                out = net(batch["rgb"], batch["echo"] if model_cfg.use_echo else None)
            loss = criterion(out["metric_depth"], batch["depth"], valid)
            check_loss_finite(loss, state.step, batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if train_cfg.clip_grad > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(net.parameters(), train_cfg.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            state.step += 1
            state.batch += 1
            if runtime.is_main:
                bar.set_postfix(loss=f"{loss.item():.3f}")
                if state.step % train_cfg.log_every == 0 or state.step == 1:
                    log.scalars("train", state.step, {"loss": loss.item(), "lr": scheduler.get_last_lr()[-1]}, state.epoch)
            if train_cfg.checkpoint_every and state.step % train_cfg.checkpoint_every == 0 and state.step < end_step:
                save_last()
            if state.step >= end_step:
                break
        epoch_done = state.batch >= batches_per_epoch
        if epoch_done:
            state.epoch, state.batch = state.epoch + 1, 0
        validation = None
        if val_loader is not None:
            result = evaluate_model(model, val_loader, runtime.device, data_cfg.min_depth, data_cfg.max_depth,
                                    amp=runtime.amp, desc="validate")
            validation = result.metrics
            log.scalars("val", state.step, {k: validation[k] for k in METRIC_NAMES}, state.epoch)
            improved = validation["abs_rel"] < state.best
            if improved:
                state.best = validation["abs_rel"]
            say(f"epoch {state.epoch if epoch_done else state.epoch + 1}: step {state.step}, val "
                + ", ".join(f"{k} {validation[k]:.4f}" for k in ("abs_rel", "rmse", "delta1"))
                + (" (best)" if improved else ""), file=sys.stderr)
            if improved:
                model.save(ckpt_dir / "best", {**meta, "val": validation, "epoch": state.epoch, "step": state.step})
        save_last(validation)
        log.plot()
        history.append({"epoch": state.epoch, "step": state.step, "val": validation})
        barrier(runtime)
    log.close()
    summary = {"run_dir": str(run_dir), "steps": state.step, "epochs": state.epoch, "seconds": time.perf_counter() - start,
               "best_val_abs_rel": state.best, "history": history, "last": str(ckpt_dir / "last.safetensors"),
               "best": str(ckpt_dir / "best.safetensors") if (ckpt_dir / "best.safetensors").exists() else None}
    if runtime.is_main:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
