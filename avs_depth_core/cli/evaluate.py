"""`avs-depth evaluate`: AVS-Net checkpoints on bags, one Table-1 row per checkpoint x bag (avs_depth_core.evaluation.depth).

    avs-depth evaluate --bag bv2/ --checkpoint runs/bv2/checkpoints/best runs/bv2-rgb/checkpoints/best --out results/
    avs-depth evaluate --bag bv1/ --checkpoint runs/bv2/checkpoints/best          # zero-shot: trained on BV2, tested on BV1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from avs_depth_core.evaluation.depth import GT_RESOLUTIONS, DepthEvalOptions, evaluate_checkpoints


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", nargs="+", required=True, type=Path, help="one or more rosbag2 folders")
    parser.add_argument("--checkpoint", nargs="+", required=True, type=Path, help="one or more AVS-Net checkpoints")
    parser.add_argument("--split", default="test", help="train, val, test or all (default test)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="folder for results.json, results.md, figures/")
    parser.add_argument("--figures", type=int, default=0, metavar="N", help="save the first N images of every row as PNGs")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1 (default auto: CUDA when available)")
    parser.add_argument("--min-depth", type=float, default=None, help="evaluation range (default: the checkpoint's)")
    parser.add_argument("--max-depth", type=float, default=None, help="evaluation range (default: the checkpoint's)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="bag cache folder (default $AVS_DEPTH_CACHE)")
    parser.add_argument("--tolerance", type=float, default=0.05, help="echo-frame pairing tolerance in seconds")
    parser.add_argument("--gt-resolution", choices=GT_RESOLUTIONS, default="native",
                        help="native: metrics at the ground truth's recorded resolution, the prediction resized to it "
                             "(default); network: at the network's input size, the depth nearest-resized as in training")


def run(args: argparse.Namespace) -> int:
    options = DepthEvalOptions(split=args.split, figures=args.figures, batch_size=args.batch_size,
                               num_workers=args.num_workers, min_depth=args.min_depth, max_depth=args.max_depth,
                               cache_dir=args.cache_dir, tolerance_s=args.tolerance, gt_resolution=args.gt_resolution)
    _, table = evaluate_checkpoints(args.checkpoint, args.bag, args.out, options, args.device)
    print(table)
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}", file=sys.stderr)
    return 0
