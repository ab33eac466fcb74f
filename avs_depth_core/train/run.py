"""Which trainer, which config, which run directory: what `avs-depth train` (cli/train.py) needs from the library.

The config is a YAML with `model:`, `train:` and `data:` sections (config/*.yaml), found by path or by name in config/
(or an installed share/avs_depth_ros/config/); assignments (`section.key=value`) override it and every key is validated
with an error naming it. A resumed run reads its own <run>/config.yaml unless another config is named.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from avs_depth_core.config import apply_overrides, read_sections, read_yaml_file

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
# model -> (trainer module, its training function, the config it reads by default)
TRAINERS = {"avsnet": ("avs_depth_core.train.avsnet", "train_avsnet", "avsnet_bv2.yaml"),
            "monodepth2": ("avs_depth_core.train.monodepth2", "train_monodepth2", "monodepth2.yaml"),
            "rescale": ("avs_depth_core.train.rescale", "train_rescale", "rescale.yaml")}
DEFAULT_CONFIGS = {model: default for model, (_, _, default) in TRAINERS.items()}


def find_config(name: str | Path) -> Path:
    """A config path as given, else by name in the source tree's config/ or an installed share/avs_depth_ros/config/."""
    path = Path(name)
    if path.is_file():
        return path
    names = [path.name] if path.suffix in (".yaml", ".yml") else [path.name + ".yaml", path.name]
    folders = [CONFIG_DIR] + [Path(p) / "share" / "avs_depth_ros" / "config"
                              for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    for folder in folders:
        for n in names:
            if (folder / n).is_file():
                return folder / n
    raise FileNotFoundError(f"{name}: config not found (looked in the working directory and {', '.join(map(str, folders))})")


def load_config(path: Path) -> dict[str, Any]:
    """A training config file as {"model", "train", "data"} (a flat file's keys are the model section's)."""
    return read_sections(read_yaml_file(path) or {}, str(path), flat="model")


def run_dir_for(model: str, out: Path | None, resume: str | Path | None) -> Path:
    """`out`, else the run a resumed checkpoint belongs to, else runs/<model>-<date-time>. resume "last" = the run's last."""
    if out is not None:
        return Path(out)
    if resume not in (None, "last"):
        resume = Path(resume)
        # runs/NAME/checkpoints/last(.safetensors) -> runs/NAME
        parent = resume if resume.is_dir() else resume.parent
        return parent.parent if parent.name == "checkpoints" else parent
    if resume == "last":
        raise ValueError("--resume without a checkpoint needs --out RUN_DIR (the run to continue)")
    return Path("runs") / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def config_for_run(model: str, config: str | Path | None, run_dir: Path, resume: str | Path | None,
                   assignments: Iterable[str] = ()) -> dict[str, Any]:
    """The config a run trains with: `config` (path or name; default the model's), or a resumed run's own config.yaml
    when none is named, with `assignments` applied."""
    if model not in TRAINERS:
        raise ValueError(f"model {model!r}: choose from {', '.join(TRAINERS)}")
    if config is None and resume is not None and (run_dir / "config.yaml").is_file():
        config_path = run_dir / "config.yaml"  # a resumed run keeps its own configuration
    else:
        config_path = find_config(config or DEFAULT_CONFIGS[model])
    return apply_overrides(load_config(config_path), assignments)


def train(model: str, config: dict[str, Any], bag: str | Path, run_dir: str | Path, *, resume: str | Path | None = None,
          device: str | None = None) -> dict[str, Any]:
    """Train `model` ("avsnet", "monodepth2" or "rescale") with a resolved config dict; returns the trainer's summary."""
    if not Path(bag).exists():
        raise FileNotFoundError(f"{bag}: bag not found")
    module_name, function, _ = TRAINERS[model]
    return getattr(importlib.import_module(module_name), function)(config, bag, run_dir, resume=resume, device=device)
