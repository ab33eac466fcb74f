"""The one training loop and the hooks each model fills in (ZoeDepth's BaseTrainer pattern, zoedepth/trainers/base_trainer.py).

A trainer (avsnet.py, monodepth2.py) says what differs: how to build its model, optimiser and schedule (`build`), how a
batch becomes a loss (`loss`), how to validate (`validate`) and how to save its best model. `fit` does the rest for both:
seeding, the run directory, train/val datasets, DDP, AMP, the NaN guard, gradient clipping, progress, logs, checkpoints
after every epoch (and every train.checkpoint_every steps) with --resume, the best checkpoint on validation, summary.json.

Every trainer reads the same config shape: `model:` (the network), `train:` (LoopConfig and the model's own keys) and
`data:` (DataConfig and the model's own keys), see avs_depth_core.config.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from avs_depth_core import files
from avs_depth_core.config import check_finite
from avs_depth_core.data.cache import bag_fingerprint
from avs_depth_core.guards import check_batch_finite, check_loss_finite
from avs_depth_core.train.logs import RunLog
from avs_depth_core.train.runtime import (
    Runtime,
    barrier,
    grad_scaler,
    make_loader,
    progress,
    seed_everything,
    setup_runtime,
    teardown,
    wrap_model,
)
from avs_depth_core.train.state import Progress, load_training_checkpoint, resume_path, save_training_checkpoint

# ---------------------------------------------------------------------------------------------------------------------
# the sections every trainer shares


@dataclass
class LoopConfig:
    """The `train:` keys of the loop itself; a trainer's TrainConfig adds its optimisation keys."""

    seed: int = 0
    num_workers: int = 2
    amp: bool = False  # fp16 autocast + GradScaler, CUDA only
    clip_grad: float = 0.0  # max grad norm; 0 = off
    max_steps: int = 0  # 0 = epochs * batches per epoch; otherwise stop (and end a per-step schedule) after this many steps
    checkpoint_every: int = 0  # also write checkpoints/last every N steps (0 = only at epoch ends)
    stop_after_steps: int = 0  # end this invocation after N steps, schedule unchanged; continue with --resume (job slots)
    log_every: int = 10  # steps between logged training scalars
    validate: bool = True  # per-epoch validation (needs a val split); best checkpoint by it

    def check(self) -> None:
        check_finite(self, "train")
        if self.log_every <= 0:
            raise ValueError(f"config: train.log_every must be positive, got {self.log_every}")
        for key in ("max_steps", "checkpoint_every", "stop_after_steps", "num_workers", "clip_grad"):
            if getattr(self, key) < 0:
                raise ValueError(f"config: train.{key} must be >= 0, got {getattr(self, key)}")


@dataclass
class DataConfig:
    """The `data:` keys every trainer reads: which frames of the bag train and validate, and how the bag is read."""

    dataset: str = "bag"  # a label recorded in the checkpoint (e.g. batvision_v2)
    train_split: str = "train"
    val_split: str = "val"
    min_depth: float = 1e-3  # valid GT: min_depth < gt < max_depth, in the loss and the metrics
    tolerance_s: float = 0.05  # echo-frame pairing tolerance
    cache_dir: str | None = None  # default: $AVS_DEPTH_CACHE or ~/.cache/avs_depth
    skip_bad: bool = False  # skip (and count) undecodable messages instead of failing


@dataclass
class Parts:
    """What a trainer's `build` returns: the model (undistributed), its optimiser, schedule and loss."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    criterion: Callable[..., Any]


class Trainer:
    """One model's hooks into `fit`. Subclasses set the class attributes and implement the methods that raise here."""

    kind: str  # checkpoint kind
    command: str = "avs-depth train"  # named in the run's config.yaml
    samples: str = "frames"  # what one dataset item is, in messages and the summary
    finite_keys: tuple[str, ...] = ("rgb",)  # batch keys checked for NaN/inf before every step
    find_unused_parameters: bool = False  # for DistributedDataParallel
    scheduler_per_epoch: bool = False  # step the schedule once per epoch (else once per optimiser step)
    score_keys: tuple[str, ...] = ("abs_rel",)  # the first one validation returns picks the best checkpoint (lower wins)
    shown_keys: tuple[str, ...] = ("abs_rel", "rmse", "delta1")  # printed after each validation
    plot_keys: tuple[str, ...] = ("abs_rel", "delta1")  # validation curves in training_curve.png

    def __init__(self, model_cfg: Any, train: LoopConfig, data: DataConfig, *, epochs: int, batch_size: int) -> None:
        self.model_cfg, self.train, self.data = model_cfg, train, data
        self.epochs, self.batch_size = epochs, batch_size

    def describe(self) -> str:
        """The model in a few words, for the start-up line."""
        raise NotImplementedError

    def resolved(self) -> dict[str, Any]:
        """The resolved config ({"model", "train", "data"}) written to <run>/config.yaml and into the checkpoints."""
        def plain(values: dict[str, Any]) -> dict[str, Any]:
            return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

        return {"model": self.model_cfg.to_dict(), "train": plain(asdict(self.train)), "data": plain(asdict(self.data))}

    def dataset(self, bag: Path, split: str, verbose: bool) -> Dataset:
        raise NotImplementedError

    def build(self, device: torch.device, total_steps: int) -> Parts:
        raise NotImplementedError

    def loss(self, net: nn.Module, criterion: Callable[..., Any], batch: dict[str, Any], step: int,
             runtime: Runtime) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One training batch (on the host) -> (loss, extra scalars to log)."""
        raise NotImplementedError

    def validate(self, model: nn.Module, criterion: Callable[..., Any], loader: DataLoader,
                 runtime: Runtime) -> dict[str, float]:
        raise NotImplementedError

    def checkpoint_config(self) -> dict[str, Any]:
        """The model config stored with the weights (local init files dropped: the weights are in the checkpoint)."""
        raise NotImplementedError

    def save_best(self, model: nn.Module, path: Path, meta: dict[str, Any]) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------------------------
# run start-up


def start_run(run_dir: Path, resume: str | Path | None, runtime: Runtime) -> None:
    """Refuse to start over an existing run unless resuming; check the run directory takes files and sweep the
    temporaries a killed run left there. Nothing is written yet: a run that fails to start leaves the directory as it
    was (write_run_config comes once the model and any resumed state are in place)."""
    if resume is None and (run_dir / "checkpoints" / "last.json").is_file():
        raise ValueError(f"{run_dir}: already holds a run; add --resume to continue it, or choose another --out")
    if runtime.is_main:
        files.check_output(run_dir, 0, kind="folder")
        for folder in (run_dir, run_dir / "checkpoints"):
            files.sweep_temporaries(folder)


def write_run_config(run_dir: Path, resolved: dict[str, Any], runtime: Runtime, command: str) -> None:
    """Rank 0 saves the resolved config as <run>/config.yaml (atomically)."""
    if runtime.is_main:
        import yaml

        header = f"# resolved configuration of this run ({command})\n"
        files.write_text(run_dir / "config.yaml", header + yaml.safe_dump(resolved, sort_keys=False))


def checkpoint_bytes(model: nn.Module) -> int:
    """About what checkpoints/last (weights, optimiser moments, extra state) and best take together."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return 5 * params + 2 * buffers + (4 << 20)


def build_splits(build: Callable[[str, bool], Dataset], train_split: str, val_split: str | None,
                 runtime: Runtime) -> tuple[Dataset, Dataset | None]:
    """Train (and val) datasets; rank 0 builds the bag cache first, the other ranks then read it."""
    if not runtime.is_main:
        barrier(runtime)
    train_set = build(train_split, runtime.is_main)
    val_set = build(val_split, runtime.is_main) if val_split is not None else None
    if runtime.is_main:
        barrier(runtime)
    return train_set, val_set


def fit(trainer: Trainer, bag: str | Path, run_dir: str | Path, *, resume: str | Path | None = None,
        device: str | None = None) -> dict[str, Any]:
    """Train into `run_dir` (config.yaml, checkpoints/{last,best}, logs, training_curve.png, summary.json).

    Under torchrun every process calls this; rank 0 logs, validates and writes. Returns a summary (rank 0's view).
    """
    runtime = setup_runtime(device, trainer.train.amp)
    try:
        run = _Run(trainer, Path(bag), Path(run_dir), resume, runtime)
        return run.train()
    finally:
        teardown(runtime)


# ---------------------------------------------------------------------------------------------------------------------
# the loop


class _Run:
    """One invocation of `fit`: set up in __init__, then train() runs epochs until the step budget is spent."""

    def __init__(self, trainer: Trainer, bag: Path, run_dir: Path, resume: str | Path | None, runtime: Runtime) -> None:
        self.trainer, self.run_dir, self.runtime = trainer, run_dir, runtime
        self.say = print if runtime.is_main else (lambda *a, **k: None)
        t, d = trainer.train, trainer.data
        seed_everything(t.seed + runtime.rank)
        resolved = trainer.resolved()
        start_run(run_dir, resume, runtime)
        train_set, val_set = build_splits(lambda split, verbose: trainer.dataset(bag, split, verbose),
                                          d.train_split, d.val_split if t.validate else None, runtime)
        batch_size = trainer.batch_size
        self.loader = make_loader(train_set, batch_size, runtime, shuffle=True, seed=t.seed, num_workers=t.num_workers,
                                  drop_last=len(train_set) >= batch_size * runtime.world_size)
        self.val_loader = None
        if val_set is not None and runtime.is_main:
            self.val_loader = DataLoader(val_set, batch_size=batch_size, shuffle=False, num_workers=t.num_workers)
        self.batches_per_epoch = len(self.loader)
        total_steps = trainer.epochs * self.batches_per_epoch
        if t.max_steps:
            total_steps = min(total_steps, t.max_steps)
        parts = trainer.build(runtime.device, total_steps)
        self.model, self.optimizer, self.scheduler = parts.model, parts.optimizer, parts.scheduler
        self.scaler = grad_scaler(runtime)
        self.state = Progress()
        self.total_steps = self._resume(resume, total_steps) if resume is not None else total_steps
        if runtime.is_main:  # checkpoints must fit before the first step, not fail at the end of an epoch
            files.check_output(run_dir / "checkpoints", checkpoint_bytes(self.model), kind="folder")
        write_run_config(run_dir, resolved, runtime, trainer.command)
        self.net = wrap_model(self.model, runtime, find_unused_parameters=trainer.find_unused_parameters)
        self.criterion = parts.criterion
        self.log = RunLog(run_dir, runtime, purge_step=self.state.step + 1 if resume is not None else None)
        fingerprint = bag_fingerprint(bag) if runtime.is_main else ""
        self.meta = {"train_config": resolved, "bag": str(bag), "bag_fingerprint": fingerprint, "dataset": d.dataset,
                     "train_samples": len(train_set), "world_size": runtime.world_size}
        self.ckpt_dir = run_dir / "checkpoints"
        self.say(f"training {trainer.describe()} on {len(train_set)} {trainer.samples}, {runtime.world_size} process(es) "
                 f"on {runtime.device}{' with AMP' if runtime.amp else ''}; {self.total_steps} steps; run dir {run_dir}",
                 file=sys.stderr)
        if self.state.step >= self.total_steps:
            self.say(f"nothing to do: the run already finished its {self.total_steps} steps", file=sys.stderr)
        self.samples_seen, self.step_seconds = 0, 0.0  # training steps only (data, forward, backward, update)

    def _resume(self, resume: str | Path, total_steps: int) -> int:
        """Restore the training state; returns the schedule's total steps (a per-step schedule keeps the checkpoint's)."""
        path = resume_path(resume, self.run_dir)
        self.state = load_training_checkpoint(path, self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                                              scaler=self.scaler, kind=self.trainer.kind)
        stored = getattr(self.scheduler, "total_steps", None)  # OneCycleLR's length
        if stored is not None and stored != total_steps:
            self.say(f"note: the checkpoint's schedule has {stored} steps (this config gives {total_steps}); "
                     "keeping the checkpoint's", file=sys.stderr)
            total_steps = stored
        if self.runtime.rank > 0:  # the stored RNG state is rank 0's; other ranks keep streams of their own
            seed_everything(self.trainer.train.seed + self.runtime.rank + 1_000_003 * self.state.step)
        self.say(f"resumed from {path}: epoch {self.state.epoch + 1}, batch {self.state.batch}, step "
                 f"{self.state.step}/{total_steps}", file=sys.stderr)
        return total_steps

    def save_last(self, validation: dict[str, float] | None = None) -> None:
        if self.runtime.is_main:
            save_training_checkpoint(self.ckpt_dir / "last", self.model.state_dict(), self.trainer.checkpoint_config(),
                                     self.trainer.kind, {**self.meta, "val": validation or {}}, optimizer=self.optimizer,
                                     scheduler=self.scheduler, scaler=self.scaler, progress=self.state)

    def train(self) -> dict[str, Any]:
        history: list[dict[str, Any]] = []
        start = time.perf_counter()
        t, state = self.trainer.train, self.state
        end_step = self.total_steps if not t.stop_after_steps else min(self.total_steps, state.step + t.stop_after_steps)
        self.net.train()
        while state.step < end_step:
            self.train_epoch(end_step)
            epoch_done = state.batch >= self.batches_per_epoch
            if epoch_done:
                state.epoch, state.batch = state.epoch + 1, 0
                if self.trainer.scheduler_per_epoch:
                    self.scheduler.step()
            validation = self.validate(epoch_done) if self.val_loader is not None else None
            self.save_last(validation)
            self.log.plot(val_keys=self.trainer.plot_keys)
            history.append({"epoch": state.epoch, "step": state.step, "val": validation})
            barrier(self.runtime)
        self.log.close()
        return self.summary(history, time.perf_counter() - start)

    def train_epoch(self, end_step: int) -> None:
        """Batches of the epoch in progress until it ends or the step budget is spent."""
        trainer, t, state, runtime = self.trainer, self.trainer.train, self.state, self.runtime
        self.loader.sampler.set_epoch(state.epoch, skip=state.batch * trainer.batch_size)
        steps_left = min(self.batches_per_epoch - state.batch, end_step - state.step)
        bar = progress(self.loader, steps_left, f"epoch {state.epoch + 1}/{trainer.epochs}", runtime)
        epoch_start = time.perf_counter()
        for batch in bar:
            check_batch_finite(batch, state.step, trainer.finite_keys)
            loss, extra = trainer.loss(self.net, self.criterion, batch, state.step, runtime)
            check_loss_finite(loss, state.step, batch)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if t.clip_grad > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), t.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if not trainer.scheduler_per_epoch:
                self.scheduler.step()
            state.step += 1
            state.batch += 1
            self.samples_seen += int(batch["rgb"].shape[0])
            if runtime.is_main:
                bar.set_postfix(loss=f"{loss.item():.4f}")
                if state.step % t.log_every == 0 or state.step == 1:
                    scalars = {"loss": loss.item(), "lr": self.scheduler.get_last_lr()[-1],
                               **{k: float(v) for k, v in extra.items()}}
                    self.log.scalars("train", state.step, scalars, state.epoch)
            if t.checkpoint_every and state.step % t.checkpoint_every == 0 and state.step < end_step:
                self.save_last()
            if state.step >= end_step:
                break
        self.step_seconds += time.perf_counter() - epoch_start

    def validate(self, epoch_done: bool) -> dict[str, float]:
        """Validate, log, print and keep the best checkpoint (rank 0 only: the others have no val loader)."""
        trainer, state = self.trainer, self.state
        validation = trainer.validate(self.model, self.criterion, self.val_loader, self.runtime)
        self.log.scalars("val", state.step, validation, state.epoch)
        key = next(k for k in trainer.score_keys if k in validation)
        improved = validation[key] < state.best
        if improved:
            state.best = validation[key]
        shown = [k for k in trainer.shown_keys if k in validation]
        self.say(f"epoch {state.epoch if epoch_done else state.epoch + 1}: step {state.step}, val "
                 + ", ".join(f"{k} {validation[k]:.4f}" for k in shown) + (" (best)" if improved else ""), file=sys.stderr)
        if improved:
            trainer.save_best(self.model, self.ckpt_dir / "best",
                              {**self.meta, "val": validation, "epoch": state.epoch, "step": state.step})
        return validation

    def summary(self, history: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
        ckpt_dir, state = self.ckpt_dir, self.state
        rate = self.samples_seen * self.runtime.world_size / self.step_seconds if self.samples_seen else None
        summary = {"run_dir": str(self.run_dir), "steps": state.step, "epochs": state.epoch, "seconds": seconds,
                   "samples": self.trainer.samples, "train_samples_per_s": rate,
                   "best_val": state.best if math.isfinite(state.best) else None, "history": history,
                   "last": str(ckpt_dir / "last.safetensors"),
                   "best": str(ckpt_dir / "best.safetensors") if (ckpt_dir / "best.safetensors").exists() else None}
        if self.runtime.is_main:
            files.write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary

