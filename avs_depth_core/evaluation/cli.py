"""`avs-depth evaluate`: AVS-Net checkpoints on bags, one Table-1 row per checkpoint x bag (AVS-Net paper, Table 1).

    avs-depth evaluate --bag bv2/ --checkpoint runs/bv2/checkpoints/best runs/bv2-rgb/checkpoints/best --out results/
    avs-depth evaluate --bag bv1/ --checkpoint runs/bv2/checkpoints/best          # zero-shot: trained on BV2, tested on BV1

Each bag is read with the checkpoint's own input settings (image size, echo window and STFT). Metrics: valid pixels are
min_depth < gt < max_depth (default: the checkpoint's depth range, min 1e-3 m, so in effect 0 < gt < max_depth as
method_spec section 8 states; --max-depth for another dataset's clip). The ground truth stays at the resolution it was
recorded at (--gt-resolution native, the default; BatVision V2: 1280x720) and the prediction is resized to it bilinearly
with pixel centres aligned (align_corners=False, Monodepth2's trainer; metrics.resize_prediction) and clamped to the range;
--gt-resolution network instead compares at the network's input size with the depth nearest-resized as in training.
Every metric is averaged per image over the images with valid pixels. Native ground truth needs one depth size per bag (so
a batch stacks); a bag mixing sizes is an error naming the frame.
Writes <out>/results.json and <out>/results.md, and with --figures N the first N images of every row as PNGs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from avs_depth_core.device import resolve_device
from avs_depth_core.evaluation import TABLE_METRICS, evaluate_model

GT_RESOLUTIONS = ("native", "network")
HEADERS = {"abs_rel": "Abs Rel ↓", "sq_rel": "Sq Rel ↓", "rmse": "RMSE ↓", "rmse_log": "RMSE log ↓",
           "delta1": "δ<1.25 ↑", "delta2": "δ<1.25² ↑", "delta3": "δ<1.25³ ↑"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", nargs="+", required=True, type=Path, help="one or more rosbag2 folders")
    parser.add_argument("--checkpoint", nargs="+", required=True, type=Path, help="one or more AVS-Net checkpoints")
    parser.add_argument("--split", default="test", help="train, val, test or all (default test)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="folder for results.json, results.md, figures/")
    parser.add_argument("--figures", type=int, default=0, metavar="N", help="save the first N images of every row as PNGs")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when available)")
    parser.add_argument("--min-depth", type=float, default=None, help="evaluation range (default: the checkpoint's)")
    parser.add_argument("--max-depth", type=float, default=None, help="evaluation range (default: the checkpoint's)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="bag cache folder (default $AVS_DEPTH_CACHE)")
    parser.add_argument("--tolerance", type=float, default=0.05, help="echo-frame pairing tolerance in seconds")
    parser.add_argument("--gt-resolution", choices=GT_RESOLUTIONS, default="native",
                        help="native: metrics at the ground truth's recorded resolution, the prediction resized to it "
                             "(default); network: at the network's input size, the depth nearest-resized as in training")


def checkpoint_label(path: Path) -> str:
    """runs/NAME/checkpoints/best(.safetensors) -> NAME/best; anything else -> its stem."""
    stem = path.name.removesuffix(".safetensors").removesuffix(".json")
    parent = path.parent
    return f"{parent.parent.name}/{stem}" if parent.name == "checkpoints" and parent.parent.name else stem


def evaluate_row(model: Any, checkpoint: Path, bag: Path, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from avs_depth_core.data.datasets import SupervisedBagDataset
    from avs_depth_core.visualise import save_prediction_figure

    cfg = model.cfg
    min_depth = cfg.min_depth if args.min_depth is None else args.min_depth
    max_depth = cfg.max_depth if args.max_depth is None else args.max_depth
    gt_resolution = args.gt_resolution
    dataset = SupervisedBagDataset(bag, split=args.split, image_size=cfg.image_size, max_depth=cfg.max_depth,
                                   echo_size=cfg.echo_size, stft=cfg.stft, speed_of_sound=cfg.speed_of_sound,
                                   sample_rate=cfg.sample_rate, tolerance_s=args.tolerance, cache_dir=args.cache_dir,
                                   depth_size="native" if gt_resolution == "native" else None)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False, num_workers=args.num_workers)
    label = checkpoint_label(checkpoint)
    figure_dir = args.out / "figures" / f"{label.replace('/', '_')}__{bag.name}"
    saved: list[str] = []

    def figures(batch: dict[str, Any], pred: torch.Tensor, per_image: torch.Tensor) -> None:
        for i in range(pred.shape[0]):
            if len(saved) >= args.figures:
                return
            title = f"{label} on {bag.name} [{args.split}] stamp {int(batch['stamp_ns'][i])}: abs_rel {per_image[i, 0]:.3f}"
            path = save_prediction_figure(figure_dir / f"{len(saved):04d}_{int(batch['stamp_ns'][i])}.png", batch["rgb"][i],
                                          batch["depth"][i], pred[i], min_depth, max_depth, title)
            saved.append(str(path))

    result = evaluate_model(model, loader, device, min_depth, max_depth, desc=f"{label} on {bag.name}",
                            on_batch=figures if args.figures > 0 else None)
    return {"checkpoint": str(checkpoint), "label": label, "input": "RGB-Echoes" if cfg.use_echo else "Only-RGB",
            "bag": str(bag), "split": args.split, "min_depth": min_depth, "max_depth": max_depth,
            "gt_resolution": gt_resolution, "gt_size": list(dataset.depth_size), "images": result.images,
            "skipped_no_valid_gt": result.skipped, "seconds": round(result.seconds, 3), "metrics": result.metrics,
            "figures": saved}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = ["Model", "Input", "Test bag", *(HEADERS[m] for m in TABLE_METRICS), "Images"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        values = [f"{r['metrics'][m]:.3f}" for m in TABLE_METRICS]
        lines.append("| " + " | ".join([r["label"], r["input"], f"{Path(r['bag']).name} [{r['split']}]", *values,
                                        str(r["images"])]) + " |")
    skipped = sum(r["skipped_no_valid_gt"] for r in rows)
    lines.append("")
    sizes = sorted({(r["gt_resolution"], "x".join(map(str, r["gt_size"][::-1]))) for r in rows})
    lines.append(f"Metrics averaged per image over the images with valid ground truth (min_depth < gt < max_depth; "
                 f"{skipped} image(s) without any skipped); predictions resized bilinearly to the ground truth's resolution "
                 f"({', '.join(f'{size} {kind}' for kind, size in sizes)}) and clamped to the depth range.")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from avs_depth_core.models.avsnet import AVSNet

    if args.figures < 0 or args.batch_size < 1:
        raise ValueError("--figures must be >= 0 and --batch-size >= 1")
    for bag in args.bag:
        if not bag.exists():
            raise FileNotFoundError(f"{bag}: bag not found")
    device = resolve_device(args.device)
    rows = []
    for checkpoint in args.checkpoint:
        model = AVSNet.from_checkpoint(checkpoint, device)
        for bag in args.bag:
            rows.append(evaluate_row(model, checkpoint, bag, args, device))
            r = rows[-1]
            print(f"{r['label']} on {bag.name}: " + ", ".join(f"{m} {r['metrics'][m]:.4f}" for m in TABLE_METRICS),
                  file=sys.stderr)
    table = markdown_table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / "results.md").write_text(table)
    print(table)
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}", file=sys.stderr)
    return 0
