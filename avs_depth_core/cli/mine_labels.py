"""`avs-depth mine-labels`: dynamic-region pseudo labels for retraining Monodepth2 (Nguyen et al., CVPR 2024), object
scale aligned by the echo (avs_depth_core.train.mining).

    avs-depth mine-labels --bag dyn/ --depth runs/md2/checkpoints/last --avsnet runs/avsnet/checkpoints/last \
        --out labels.npz [--set regions=oracle] [--set flow_threshold=1.0] [--split train] \
        [--set object_scale=dsa|echo] [--set gate=ground|echo_dsa|none] [--set dsa.epochs=10]
    avs-depth train --model monodepth2 --bag dyn/ --dynamic-labels labels.npz --init runs/md2/checkpoints/last ...

Prints the summary (objects, accepted by the gate, median object-scale errors against the ground truth where the bag
has it) and writes it beside the labels as <out>.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from avs_depth_core.train.mining import MiningConfig, mine_labels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", required=True, type=Path, help="rosbag2 with frames, echoes (and instance maps)")
    parser.add_argument("--depth", required=True, type=Path, help="stage-1 Monodepth2 checkpoint (with its PoseNet)")
    parser.add_argument("--avsnet", required=True, type=Path, help="RGB-Echoes AVS-Net checkpoint (Mp: the object scale)")
    parser.add_argument("--out", required=True, type=Path, help="labels file (.npz) for train --dynamic-labels")
    parser.add_argument("--split", default="train", help="the triples to label (default train)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a MiningConfig or threshold key (regions, object_depth, object_scale, gate, "
                             "flow_threshold, ...; the learned DSA's as dsa.KEY)")
    parser.add_argument("--cache-dir", default=None, help="dataset cache (default $AVS_DEPTH_CACHE or ~/.cache/avs_depth)")
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    if not args.bag.exists():
        raise FileNotFoundError(f"{args.bag}: bag not found")
    cfg = MiningConfig.from_assignments([*args.overrides, f"split={args.split}"])
    summary = mine_labels(args.bag, args.depth, args.avsnet, args.out, cfg, cache_dir=args.cache_dir, device=args.device,
                          progress=True)
    text = json.dumps(summary, indent=2, default=float)
    Path(f"{args.out}.json").write_text(text + "\n")
    print(text)
    return 0
