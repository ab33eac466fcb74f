"""Pieces every trainer shares: seeding, device and AMP, DDP from torchrun's environment, loaders, progress, logs,
checkpoints with resume, and the NaN guard. Each trainer (avsnet.py, monodepth2.py) reads top to bottom and calls these.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from avs_depth_core.checkpoint import checkpoint_paths, load_checkpoint, load_checkpoint_extra, save_checkpoint
from avs_depth_core.config import dataclass_from_dict as config_from_dict

# ---------------------------------------------------------------------------------------------------------------------
# configuration sections


def dataclass_from_dict(cls: type, values: Mapping[str, Any] | None, section: str) -> Any:
    """Build dataclass `cls` from config section `section` (None = all defaults); unknown keys and wrong types are errors
    naming `section.key` (avs_depth_core.config)."""
    return config_from_dict(cls, values or {}, "config", prefix=f"{section}.")


def apply_overrides(config: dict[str, Any], assignments: Iterable[str]) -> dict[str, Any]:
    """Apply `section.key=value` strings (values parsed as YAML) to a nested config dict; returns a new dict."""
    import yaml

    out = json.loads(json.dumps(config))
    for text in assignments:
        if "=" not in text:
            raise ValueError(f"--set {text!r}: expected section.key=value, e.g. model.n_bins=32")
        path, raw = text.split("=", 1)
        parts = path.strip().split(".")
        if len(parts) < 2 or not all(parts):
            raise ValueError(f"--set {text!r}: the key must name its section, e.g. train.lr or model.n_bins")
        node = out
        for part in parts[:-1]:
            if part not in node:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ValueError(f"--set {text!r}: {part} is a value, not a section")
            node = node[part]
        node[parts[-1]] = yaml.safe_load(raw)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# seeding, device, AMP, distributed


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Runtime:
    """Where this process runs: its device, its rank among the torchrun processes, and whether AMP is on."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    amp: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def select_device(name: str | None = None) -> torch.device:
    """'cuda', 'cuda:1', 'cpu' or None (CUDA when available). Asking for CUDA without it is an error."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__})")
    return device


def setup_runtime(device: str | None = None, amp: bool = True) -> Runtime:
    """Single process, or DDP when torchrun set WORLD_SIZE > 1: nccl on CUDA (one GPU per local rank), gloo on CPU.

    AMP (fp16 autocast + GradScaler) is used only on CUDA and only when `amp` is true.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = select_device(device)
    if world_size > 1:
        if dev.type == "cuda":
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        else:
            # The CPU cores are shared by the local processes.
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Runtime(dev, rank, world_size, local_rank, amp=bool(amp and dev.type == "cuda"))


def teardown(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()


def wrap_model(model: nn.Module, runtime: Runtime, find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel under torchrun, the model itself otherwise."""
    if not runtime.distributed:
        return model
    ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)


def autocast(runtime: Runtime) -> torch.autocast:
    return torch.autocast(device_type=runtime.device.type, dtype=torch.float16, enabled=runtime.amp)


def grad_scaler(runtime: Runtime) -> torch.amp.GradScaler:
    return torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp)


# ---------------------------------------------------------------------------------------------------------------------
# data loading and progress


class SkipFirst(Sampler[int]):
    """Drops the first `skip` indices of a sampler's epoch, so a run resumed mid-epoch sees the rest of the same order."""

    def __init__(self, sampler: DistributedSampler, skip: int = 0) -> None:
        self.sampler = sampler
        self.skip = skip

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.sampler.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def make_loader(dataset: Dataset, batch_size: int, runtime: Runtime, *, shuffle: bool, seed: int, num_workers: int = 0,
                drop_last: bool = False) -> DataLoader:
    """A loader whose order depends only on (seed, epoch): DistributedSampler shards it over ranks (one rank: all of it).

    Call `loader.sampler.set_epoch(epoch, skip)` before each epoch.
    """
    if len(dataset) == 0:
        raise ValueError("dataset is empty: no samples to load")
    sampler = DistributedSampler(dataset, num_replicas=runtime.world_size, rank=runtime.rank, shuffle=shuffle, seed=seed,
                                 drop_last=drop_last)
    return DataLoader(dataset, batch_size=batch_size, sampler=SkipFirst(sampler), num_workers=num_workers,
                      drop_last=drop_last, pin_memory=runtime.device.type == "cuda", persistent_workers=num_workers > 0)


def progress(iterable: Iterable, total: int | None, desc: str, runtime: Runtime) -> Iterable:
    """tqdm with rate and ETA on the main rank; the plain iterable elsewhere."""
    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, leave=False, disable=not runtime.is_main)


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------------------------------
# NaN guard


def _stamps(batch: Mapping[str, Any]) -> list[int]:
    stamps = batch.get("stamp_ns")
    if stamps is None:
        return []
    return [int(s) for s in (stamps.tolist() if isinstance(stamps, torch.Tensor) else stamps)]


def check_batch_finite(batch: Mapping[str, Any], step: int | None, keys: Iterable[str]) -> None:
    """A NaN/inf in an input tensor is an error naming the key, the stamps of the offending samples and the training step
    (None outside training)."""
    for key in keys:
        value = batch.get(key)
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue
        bad = ~torch.isfinite(value.reshape(value.shape[0], -1)).all(dim=1)
        if bad.any():
            stamps = _stamps(batch)
            where = [stamps[i] for i in bad.nonzero().flatten().tolist()] if stamps else bad.nonzero().flatten().tolist()
            prefix = "" if step is None else f"step {step}: "
            raise ValueError(f"{prefix}batch['{key}'] holds NaN or inf for samples with stamp_ns {where}")


def check_loss_finite(loss: torch.Tensor, step: int, batch: Mapping[str, Any]) -> None:
    if not torch.isfinite(loss).all():
        raise ValueError(f"step {step}: loss is {loss.item()} on samples with stamp_ns {_stamps(batch)}; "
                         "inputs were finite, so training diverged (try a lower train.lr or train.clip_grad)")


# ---------------------------------------------------------------------------------------------------------------------
# logs: TensorBoard, CSV, training-curve PNG


class RunLog:
    """Scalars to TensorBoard (run_dir/tensorboard) and CSV (train_log.csv per step, val_log.csv per epoch), and the
    training curve PNG (run_dir/training_curve.png). Only the main rank writes; on resume the CSVs are appended to.
    """

    def __init__(self, run_dir: Path, runtime: Runtime, purge_step: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = runtime.is_main
        self.writer = None
        if self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=purge_step)
            if purge_step is not None:
                for name in ("train_log.csv", "val_log.csv"):
                    _truncate_csv(self.run_dir / name, purge_step)

    def scalars(self, kind: str, step: int, values: Mapping[str, float], epoch: int) -> None:
        """kind 'train' (per step) or 'val' (per epoch)."""
        if not self.enabled:
            return
        for name, value in values.items():
            self.writer.add_scalar(f"{kind}/{name}", value, step)
        path = self.run_dir / f"{kind}_log.csv"
        row = {"step": step, "epoch": epoch, **{k: float(v) for k, v in values.items()}}
        new = not path.is_file()
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)

    def plot(self, train_key: str = "loss", val_keys: Iterable[str] = ("abs_rel", "delta1")) -> Path | None:
        """Training loss per step (with a running mean) and validation metrics per epoch, as one PNG."""
        if not self.enabled:
            return None
        self.writer.flush()
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        train = read_csv(self.run_dir / "train_log.csv")
        val = read_csv(self.run_dir / "val_log.csv")
        val_keys = [k for k in val_keys if val and k in val[0]]
        fig, axes = plt.subplots(1, 1 + len(val_keys), figsize=(5 * (1 + len(val_keys)), 3.6), squeeze=False)
        ax = axes[0, 0]
        if train:
            steps = np.array([r["step"] for r in train])
            loss = np.array([r[train_key] for r in train])
            ax.plot(steps, loss, lw=0.6, alpha=0.5, label=train_key)
            k = len(loss) // 20
            if k > 1:
                ax.plot(steps[k - 1:], np.convolve(loss, np.ones(k) / k, mode="valid"), lw=1.5, label=f"running mean of {k}")
            ax.legend()
        ax.set(xlabel="step", title=f"train {train_key}")
        for ax, key in zip(axes[0, 1:], val_keys, strict=True):
            ax.plot([r["step"] for r in val], [r[key] for r in val], "o-")
            ax.set(xlabel="step", title=f"val {key}")
        for ax in axes[0]:
            ax.grid(alpha=0.3)
        fig.tight_layout()
        out = self.run_dir / "training_curve.png"
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_csv(path: Path) -> list[dict[str, float]]:
    if not Path(path).is_file():
        return []
    with Path(path).open(newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _truncate_csv(path: Path, from_step: int) -> None:
    """On resume, drop rows from `from_step` on: they were logged after the checkpoint and are logged again."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    # A row cut short by a kill has empty fields; it is dropped with the rest after the checkpoint.
    keep = [r for r in rows if all(v not in (None, "") for v in r.values()) and float(r["step"]) < from_step]
    with path.open("w", newline="") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(keep)


# ---------------------------------------------------------------------------------------------------------------------
# checkpoints and resume


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states in a form avs_depth_core.checkpoint stores without pickling."""
    np_state = np.random.get_state(legacy=False)
    np_state["state"] = {k: torch.from_numpy(np.asarray(v, dtype=np.int64)) for k, v in np_state["state"].items()}
    state = {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np_state = dict(state["numpy"])
    np_state["state"] = {k: v.numpy().astype(np.uint32) if k == "key" else int(v) for k, v in np_state["state"].items()}
    np.random.set_state(np_state)
    torch.set_rng_state(state["torch"].to(torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state["cuda"]])


@dataclass
class Progress:
    """Where training stands: `epoch` is the epoch in progress (0-based) and `batch` the batches of it already done;
    `step` counts optimiser steps over the whole run; `best` is the best validation score so far (lower is better)."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    best: float = math.inf


def save_training_checkpoint(path: Path, state_dict: Mapping[str, torch.Tensor], config: dict[str, Any], kind: str,
                             meta: dict[str, Any], *, optimizer: torch.optim.Optimizer, scheduler: Any,
                             scaler: torch.amp.GradScaler, progress: Progress) -> Path:
    """A loadable model checkpoint (<stem>.safetensors + <stem>.json) whose .extra.safetensors also holds what --resume needs:
    optimiser, scheduler, AMP scaler, progress and RNG states."""
    extra = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
             "progress": dict(vars(progress)), "rng": rng_state()}
    meta = {**meta, "epoch": progress.epoch, "step": progress.step}
    # save_checkpoint writes every file in full under a temporary name and then renames them into place, JSON last: a run
    # killed while saving keeps its previous checkpoint (only the back-to-back renames could be cut, a window of microseconds).
    return save_checkpoint(path, dict(state_dict), config, kind, meta, extra=extra)


def load_training_checkpoint(path: Path, model: nn.Module, *, optimizer: torch.optim.Optimizer, scheduler: Any,
                             scaler: torch.amp.GradScaler, kind: str) -> Progress:
    """Restore model, optimiser, scheduler, scaler and RNG from a checkpoint written by save_training_checkpoint."""
    state, _config, stored_kind, _meta = load_checkpoint(path)
    if stored_kind != kind:
        raise ValueError(f"{path}: --resume needs a {kind!r} checkpoint, this one is {stored_kind!r}")
    extra = load_checkpoint_extra(path)
    if extra is None or not {"optimizer", "scheduler", "progress"} <= set(extra):
        raise ValueError(f"{path}: holds no training state (optimizer, scheduler, progress); resume from a run's "
                         "checkpoints/last checkpoint, not an exported model")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit the configured model; resume with the run's config ({err})") from None
    try:
        optimizer.load_state_dict(extra["optimizer"])
    except ValueError as err:
        raise ValueError(f"{path}: optimizer state does not fit the configured model ({err})") from None
    scheduler.load_state_dict(extra["scheduler"])
    scaler.load_state_dict(extra.get("scaler") or {})
    if "rng" in extra:
        set_rng_state(extra["rng"])
    return Progress(**{k: type(getattr(Progress(), k))(v) for k, v in extra["progress"].items()})


def resume_path(resume: str | Path, run_dir: Path) -> Path:
    """--resume with no value means the run directory's last checkpoint; a directory means its checkpoints/last."""
    path = Path(run_dir if resume in ("", "last", True) else resume)
    if path.is_dir():
        path = path / "checkpoints" / "last" if (path / "checkpoints").is_dir() else path / "last"
    weights, json_path, _ = checkpoint_paths(path)
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path}: no checkpoint to resume from")
    return weights


def start_run(run_dir: Path, resolved: dict[str, Any], resume: str | Path | None, runtime: Runtime, command: str) -> None:
    """Refuse to start over an existing run unless resuming; rank 0 creates the run dir and saves the resolved config."""
    if resume is None and (run_dir / "checkpoints" / "last.json").is_file():
        raise ValueError(f"{run_dir}: already holds a run; add --resume to continue it, or choose another --out")
    if runtime.is_main:
        import yaml

        run_dir.mkdir(parents=True, exist_ok=True)
        header = f"# resolved configuration of this run ({command})\n"
        (run_dir / "config.yaml").write_text(header + yaml.safe_dump(resolved, sort_keys=False))


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
