"""`avs-depth train`: train AVS-Net (supervised, default) or Monodepth2 (self-supervised) on a bag (avs_depth_core.train).

    avs-depth train --bag bv2/ [--config config/avsnet_bv2.yaml] [--no-echo] [--out runs/bv2] [--epochs 5] [--set model.n_bins=32]
    torchrun --nproc_per_node 4 -m avs_depth_core.cli train --bag bv2/ ...      # DistributedDataParallel, one process per GPU
    avs-depth train --bag bv2/ --out runs/bv2 --resume                           # continue from runs/bv2/checkpoints/last
    avs-depth train --model monodepth2 --bag dyn/ --dynamic-labels labels.npz --init runs/md2/checkpoints/last   # mined labels

The config is a YAML with `model:`, `train:` and `data:` sections (config/*.yaml); command-line options override it
and every key is validated with an error naming it. The resolved config is written to <out>/config.yaml; resuming a run
reads that file unless --config is given.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from avs_depth_core.train.run import TRAINERS, config_for_run, run_dir_for, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", required=True, type=Path, help="rosbag2 folder with images, depth and echoes (and sequences)")
    parser.add_argument("--model", choices=tuple(TRAINERS), default="avsnet",
                        help="avsnet: supervised metric depth (default); monodepth2: self-supervised relative depth; "
                             "rescale: pixel-wise rescale maps on frozen AVS-Nets (config/rescale.yaml)")
    parser.add_argument("--config", default=None,
                        help="YAML config (path or name in config/); default avsnet_bv2.yaml, monodepth2.yaml or rescale.yaml")
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
    parser.add_argument("--echo-supervision", default=None, metavar="CKPT",
                        help="monodepth2: add the pseudo-metric depth of this RGB-Echoes AVS-Net checkpoint as a scale-aware "
                             "loss term, so the DepthNet predicts metres (sets train.echo_supervision.checkpoint)")
    parser.add_argument("--dynamic-labels", default=None, metavar="LABELS.npz",
                        help="monodepth2: retrain with the dynamic-region pseudo labels of `avs-depth mine-labels` (Nguyen et "
                             "al. 2024, stage 4; sets train.dynamic_labels.labels)")
    parser.add_argument("--init", default=None, metavar="CKPT",
                        help="monodepth2 with --dynamic-labels: start from this stage-1 checkpoint's DepthNet and PoseNet "
                             "(sets train.dynamic_labels.init_checkpoint)")


def option_assignments(args: argparse.Namespace) -> list[str]:
    """The dedicated options as `section.key=value` assignments, applied before --set."""
    pairs = {"train.epochs": args.epochs, "train.batch_size": args.batch_size, "train.lr": args.lr, "train.seed": args.seed,
             "train.num_workers": args.num_workers, "train.max_steps": args.max_steps}
    out = [f"{k}={v}" for k, v in pairs.items() if v is not None]
    if args.no_echo:
        out.append("model.use_echo=false")
    if args.echo_supervision is not None:
        out.append(f"train.echo_supervision.checkpoint={json.dumps(str(args.echo_supervision))}")  # quoted: always a string
    if args.dynamic_labels is not None:
        out.append(f"train.dynamic_labels.labels={json.dumps(str(args.dynamic_labels))}")
    if args.init is not None:
        out.append(f"train.dynamic_labels.init_checkpoint={json.dumps(str(args.init))}")
    return out


def run(args: argparse.Namespace) -> int:
    if not args.bag.exists():
        raise FileNotFoundError(f"{args.bag}: bag not found")
    if args.no_echo and args.model != "avsnet":
        raise ValueError(f"--no-echo applies to --model avsnet; {args.model} never uses the echo")
    if args.echo_supervision is not None and args.model != "monodepth2":
        raise ValueError(f"--echo-supervision applies to --model monodepth2, not {args.model}")
    if (args.dynamic_labels is not None or args.init is not None) and args.model != "monodepth2":
        raise ValueError(f"--dynamic-labels and --init apply to --model monodepth2, not {args.model}")
    if args.init is not None and args.dynamic_labels is None:
        raise ValueError("--init starts the retraining on --dynamic-labels; give both")
    run_dir = run_dir_for(args.model, args.out, args.resume)
    config = config_for_run(args.model, args.config, run_dir, args.resume, [*option_assignments(args), *args.overrides])
    summary = train(args.model, config, args.bag, run_dir, resume=args.resume, device=args.device)
    if int(os.environ.get("RANK", "0")) == 0:
        best = f", best {summary['best']}" if summary["best"] else ""
        rate = summary["train_samples_per_s"]
        speed = f" ({rate:.1f} {summary['samples']}/s in training steps)" if rate and math.isfinite(rate) else ""
        print(f"trained {summary['steps']} steps in {summary['seconds']:.1f} s{speed}; checkpoints: last {summary['last']}{best}")
    return 0
