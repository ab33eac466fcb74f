"""`avs-depth train`: train AVS-Net (supervised, default) or Monodepth2 (self-supervised) on a bag.

    avs-depth train --bag bv2/ [--config config/avsnet_bv2.yaml] [--no-echo] [--out runs/bv2] [--epochs 5] [--set model.n_bins=32]
    torchrun --nproc_per_node 4 -m avs_depth_core.cli train --bag bv2/ ...      # DistributedDataParallel, one process per GPU
    avs-depth train --bag bv2/ --out runs/bv2 --resume                           # continue from runs/bv2/checkpoints/last

The config is a YAML with `model:`, `train:` and `data:` sections (config/avsnet_*.yaml); command-line options override it
and every key is validated with an error naming it. The resolved config is written to <out>/config.yaml; resuming a run
reads that file unless --config is given.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import time
from pathlib import Path
from typing import Any

import yaml

from avs_depth_core.config import apply_overrides, read_sections

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
# --model -> (trainer module, its training function, the config it reads by default)
TRAINERS = {"avsnet": ("avs_depth_core.train.avsnet", "train_avsnet", "avsnet_bv2.yaml"),
            "monodepth2": ("avs_depth_core.train.monodepth2", "train_monodepth2", "monodepth2.yaml")}
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", required=True, type=Path, help="rosbag2 folder with images, depth and echoes (and sequences)")
    parser.add_argument("--model", choices=tuple(TRAINERS), default="avsnet",
                        help="avsnet: supervised metric depth (default); monodepth2: self-supervised relative depth")
    parser.add_argument("--config", default=None,
                        help="YAML config (path or name in config/); default avsnet_bv2.yaml or monodepth2.yaml")
    parser.add_argument("--out", type=Path, default=None, help="run directory (default runs/<model>-<date-time>)")
    parser.add_argument("--no-echo", action="store_true", help="Only-RGB baseline (sets model.use_echo=false)")
    parser.add_argument("--epochs", type=int, default=None, help="overrides train.epochs")
    parser.add_argument("--batch-size", type=int, default=None, help="overrides train.batch_size (per process)")
    parser.add_argument("--lr", type=float, default=None, help="overrides train.lr (the head's rate; ZoeDepth groups scale it)")
    parser.add_argument("--seed", type=int, default=None, help="overrides train.seed")
    parser.add_argument("--num-workers", type=int, default=None, help="overrides train.num_workers (DataLoader workers)")
    parser.add_argument("--max-steps", type=int, default=None, help="overrides train.max_steps: stop after N optimiser steps")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any config key, value parsed as YAML (repeatable), e.g. --set model.n_bins=32")
    parser.add_argument("--resume", nargs="?", const="last", default=None, metavar="CKPT",
                        help="continue a run: a checkpoint written with training state, or (no value) <out>/checkpoints/last")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1 (default auto: CUDA when available)")


def load_config(path: Path) -> dict[str, Any]:
    """A training config file as {"model", "train", "data"} (a flat file's keys are the model section's)."""
    return read_sections(yaml.safe_load(path.read_text()) or {}, str(path), flat="model")


def cli_overrides(args: argparse.Namespace) -> list[str]:
    """The dedicated options as `section.key=value` assignments, applied before --set."""
    pairs = {"train.epochs": args.epochs, "train.batch_size": args.batch_size, "train.lr": args.lr, "train.seed": args.seed,
             "train.num_workers": args.num_workers, "train.max_steps": args.max_steps}
    out = [f"{k}={v}" for k, v in pairs.items() if v is not None]
    if args.no_echo:
        out.append("model.use_echo=false")
    return out


def resolve_run_dir(args: argparse.Namespace) -> Path:
    if args.out is not None:
        return args.out
    if args.resume not in (None, "last"):
        resume = Path(args.resume)
        # runs/NAME/checkpoints/last(.safetensors) -> runs/NAME
        parent = resume if resume.is_dir() else resume.parent
        return parent.parent if parent.name == "checkpoints" else parent
    if args.resume == "last":
        raise ValueError("--resume without a checkpoint needs --out RUN_DIR (the run to continue)")
    return Path("runs") / f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}"


def run(args: argparse.Namespace) -> int:
    if not args.bag.exists():
        raise FileNotFoundError(f"{args.bag}: bag not found")
    if args.no_echo and args.model != "avsnet":
        raise ValueError(f"--no-echo applies to --model avsnet; {args.model} never uses the echo")
    module_name, function, default_config = TRAINERS[args.model]
    run_dir = resolve_run_dir(args)
    if args.config is None and args.resume is not None and (run_dir / "config.yaml").is_file():
        config_path = run_dir / "config.yaml"  # a resumed run keeps its own configuration
    else:
        config_path = find_config(args.config or default_config)
    config = apply_overrides(load_config(config_path), [*cli_overrides(args), *args.overrides])
    train = getattr(importlib.import_module(module_name), function)
    summary = train(config, args.bag, run_dir, resume=args.resume, device=args.device)
    if int(os.environ.get("RANK", "0")) == 0:
        best = f", best {summary['best']}" if summary["best"] else ""
        rate = summary["train_samples_per_s"]
        speed = f" ({rate:.1f} {summary['samples']}/s in training steps)" if rate and math.isfinite(rate) else ""
        print(f"trained {summary['steps']} steps in {summary['seconds']:.1f} s{speed}; checkpoints: last {summary['last']}{best}")
    return 0
