"""Training state in checkpoints: what --resume restores (optimiser, scheduler, AMP scaler, progress, RNG streams)."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from avs_depth_core.checkpoint import checkpoint_paths, load_checkpoint, load_checkpoint_extra, save_checkpoint


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
        problems = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
        first = problems[0].rstrip(".") if problems else str(err).splitlines()[0]
        first = first if len(first) <= 160 else first[:160] + "..."
        raise ValueError(f"{path}: weights do not fit the configured model ({len(problems)} problem(s), first: {first}); "
                         "resume with the run's own config (omit --config and --set model.*)") from None
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


