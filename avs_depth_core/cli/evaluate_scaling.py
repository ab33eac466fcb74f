"""`avs-depth evaluate-scaling`: relative depth models made metric by AVS-Net's scale, AVS-Net paper Table 2 and Fig. 5
(avs_depth_core.evaluation.echo_scaling).

    avs-depth evaluate-scaling --bag bv1/ --relative runs/md2/checkpoints/best --avsnet runs/bv1/checkpoints/best \
        --avsnet-rgb runs/bv1-rgb/checkpoints/best --out results/scaling --figures 4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from avs_depth_core.evaluation.echo_scaling import (
    FALLBACKS,
    RelativeSources,
    ScalingEvalOptions,
    evaluate_scaling_on_bag,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", required=True, type=Path, help="rosbag2 folder with images, depth, echoes and a test split")
    parser.add_argument("--relative", nargs="+", default=[], type=Path, metavar="CKPT",
                        help="Monodepth2 checkpoint(s) (avs-depth train --model monodepth2)")
    parser.add_argument("--relative-torchscript", nargs="+", default=[], type=Path, metavar="FILE",
                        help="other relative/zero-shot models as TorchScript files: rgb (B,3,h,w) in [0,1] -> (B,1,h,w)")
    parser.add_argument("--torchscript-output", choices=("depth", "disparity"), default="depth",
                        help="what the TorchScript models return; disparity is inverted (1/d, see scaling.disparity_to_depth)")
    parser.add_argument("--torchscript-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="input size of the TorchScript models (default: the evaluation image size)")
    parser.add_argument("--zero-shot-avsnet", nargs="+", default=[], type=Path, metavar="CKPT",
                        help="Only-RGB AVS-Net checkpoints used as zero-shot metric models (their 'No' row is metric)")
    parser.add_argument("--avsnet", required=True, type=Path, help="RGB-Echoes AVS-Net checkpoint (use_echo true)")
    parser.add_argument("--avsnet-rgb", required=True, type=Path, help="Only-RGB AVS-Net checkpoint (use_echo false)")
    parser.add_argument("--split", default="test", help="train, val, test or all (default test)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="folder for scaling.json, scaling.md, figures/")
    parser.add_argument("--figures", type=int, default=0, metavar="N",
                        help="N frames (evenly spaced over the split) per relative model as PNGs in the layout of Fig. 5")
    parser.add_argument("--min-depth", type=float, default=None, help="evaluation range (default: the AVS-Net's)")
    parser.add_argument("--max-depth", type=float, default=None, help="evaluation range (default: the AVS-Net's)")
    parser.add_argument("--min-pixels", type=int, default=100,
                        help="fewest usable pixels for a scale; fewer is a fallback (default 100)")
    parser.add_argument("--fallback", choices=FALLBACKS, default="unit",
                        help="a frame without a usable scale: score it unscaled and count it (unit, default) or stop (raise)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1 (default auto: CUDA when available)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="bag cache folder (default $AVS_DEPTH_CACHE)")
    parser.add_argument("--tolerance", type=float, default=0.05, help="echo-frame pairing tolerance in seconds")
    parser.add_argument("--rescale-head", nargs="+", default=[], type=Path, metavar="CKPT",
                        help="also score these rescale heads (avs-depth train --model rescale; scaling method pixelwise) "
                             "against the global median of their own relative model, into <out>/pixelwise.json")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip and count frames whose messages cannot be used (e.g. a clipped echo) instead of stopping")


def run(args: argparse.Namespace) -> int:
    sources = RelativeSources(monodepth2=tuple(args.relative), torchscript=tuple(args.relative_torchscript),
                              torchscript_output=args.torchscript_output,
                              torchscript_size=tuple(args.torchscript_size) if args.torchscript_size else None,
                              zero_shot_avsnet=tuple(args.zero_shot_avsnet))
    options = ScalingEvalOptions(split=args.split, figures=args.figures, min_depth=args.min_depth, max_depth=args.max_depth,
                                 min_pixels=args.min_pixels, fallback=args.fallback, batch_size=args.batch_size,
                                 num_workers=args.num_workers, cache_dir=args.cache_dir, tolerance_s=args.tolerance,
                                 skip_bad=args.skip_bad)
    report, table = evaluate_scaling_on_bag(args.bag, args.avsnet, args.avsnet_rgb, sources, args.out, options, args.device)
    saved = report["figures"]
    print(table)
    if args.rescale_head:
        import json

        from avs_depth_core.evaluation.rescale_maps import ROWS, evaluate_rescale_head

        cache = str(args.cache_dir) if args.cache_dir else None
        heads = [evaluate_rescale_head(ckpt, args.bag, args.split, min_depth=args.min_depth or 1e-3,
                                       max_depth=args.max_depth, cache_dir=cache, skip_bad=args.skip_bad,
                                       device=args.device or "cpu") for ckpt in args.rescale_head]
        for h in heads:
            for row in ROWS:
                print(f"{h['checkpoint']} {row}: " + ", ".join(f"{k} {v:.3f}" for k, v in h[row].items()))
        (args.out / "pixelwise.json").write_text(json.dumps(heads, indent=2) + "\n")
    print(f"wrote {args.out / 'scaling.json'} and {args.out / 'scaling.md'}"
          + (f" and {len(saved)} figures in {args.out / 'figures'}" if saved else ""), file=sys.stderr)
    return 0
