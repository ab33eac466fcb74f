"""AVS-Net checkpoints on bags, one Table-1 row per checkpoint x bag (AVS-Net paper, Table 1); `avs-depth evaluate`.

    avs-depth evaluate --bag bv2/ --checkpoint runs/bv2/checkpoints/best runs/bv2-rgb/checkpoints/best --out results/
    avs-depth evaluate --bag bv1/ --checkpoint runs/bv2/checkpoints/best          # zero-shot: trained on BV2, tested on BV1

Each bag is read with the checkpoint's own input settings (image size, echo window and STFT). Metrics: valid pixels are
min_depth < gt < max_depth (default: the checkpoint's depth range, min 1e-3 m, so in effect 0 < gt < max_depth as
the AVS-Net paper evaluates; --max-depth for another dataset's clip). The ground truth stays at the resolution it was
recorded at (--gt-resolution native, the default; BatVision V2: 1280x720) and the prediction is resized to it bilinearly
with pixel centres aligned (align_corners=False, Monodepth2's trainer; metrics.resize_prediction) and clamped to the range;
--gt-resolution network instead compares at the network's input size with the depth nearest-resized as in training.
Every metric is averaged per image over the images with valid pixels. Native ground truth needs one depth size per bag (so
a batch stacks); a bag mixing sizes is an error naming the frame.
Next to the seven metrics: scale_log_error, the mean |log(median(pred) / median(gt))| (how far the overall scale is
off); results.json also breaks every row down by the images' ground-truth median depth ("by_gt_median": buckets with
edges metrics.GT_MEDIAN_EDGES, each with its image count and metrics), so one sees at which distances the scale fails.
Writes <out>/results.json and <out>/results.md, and with --figures N the first N images of every row as PNGs.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from avs_depth_core import files
from avs_depth_core.evaluation import HEADERS, REPORT_METRICS, checkpoint_label, evaluate_model

GT_RESOLUTIONS = ("native", "network")


@dataclass(frozen=True)
class DepthEvalOptions:
    """How `evaluate_checkpoints` reads the bags and scores them (the command-line defaults)."""

    split: str = "test"
    figures: int = 0  # the first N images of every row as PNGs
    batch_size: int = 8
    num_workers: int = 0
    min_depth: float | None = None  # evaluation range (None: the checkpoint's)
    max_depth: float | None = None
    cache_dir: Path | None = None  # bag cache folder (None: $AVS_DEPTH_CACHE)
    tolerance_s: float = 0.05  # echo-frame pairing tolerance
    gt_resolution: str = "native"  # native: metrics at the ground truth's recorded resolution; network: at the input size


def evaluate_row(model: Any, checkpoint: Path, bag: Path, options: DepthEvalOptions, device: torch.device,
                 out: Path) -> dict[str, Any]:
    from avs_depth_core.data.datasets import SupervisedBagDataset
    from avs_depth_core.evaluation.regions import RegionAccumulator, RegionSource
    from avs_depth_core.visualise import save_prediction_figure

    o, cfg = options, model.cfg
    min_depth = cfg.min_depth if o.min_depth is None else o.min_depth
    max_depth = cfg.max_depth if o.max_depth is None else o.max_depth
    gt_resolution = o.gt_resolution
    dataset = SupervisedBagDataset.for_model(bag, o.split, cfg, tolerance_s=o.tolerance_s, cache_dir=o.cache_dir,
                                             depth_size="native" if gt_resolution == "native" else None)
    loader = DataLoader(dataset, batch_size=o.batch_size, shuffle=False, num_workers=o.num_workers)
    label = checkpoint_label(checkpoint)
    figure_dir = out / "figures" / f"{label.replace('/', '_')}__{bag.name}"
    saved: list[str] = []
    # Bags with instance maps (simulate --dynamic) are scored by region too; others exactly as before.
    source = RegionSource.from_bag(bag, dataset.cache.array("stamps")[dataset.slots])
    regions = RegionAccumulator(min_depth, max_depth) if source is not None else None

    def on_batch(batch: dict[str, Any], pred: torch.Tensor, per_image: torch.Tensor) -> None:
        if regions is not None:
            for i in range(pred.shape[0]):
                source.update(regions, pred[i], batch["depth"][i], int(batch["stamp_ns"][i]))
        if o.figures > 0:
            figures(batch, pred, per_image)

    def figures(batch: dict[str, Any], pred: torch.Tensor, per_image: torch.Tensor) -> None:
        for i in range(pred.shape[0]):
            if len(saved) >= o.figures:
                return
            title = f"{label} on {bag.name} [{o.split}] stamp {int(batch['stamp_ns'][i])}: abs_rel {per_image[i, 0]:.3f}"
            path = save_prediction_figure(figure_dir / f"{len(saved):04d}_{int(batch['stamp_ns'][i])}.png", batch["rgb"][i],
                                          batch["depth"][i], pred[i], min_depth, max_depth, title)
            saved.append(str(path))

    result = evaluate_model(model, loader, device, min_depth, max_depth, desc=f"{label} on {bag.name}",
                            on_batch=on_batch if o.figures > 0 or regions is not None else None)
    extra = {"regions": regions.summary()} if regions is not None else {}
    return {"checkpoint": str(checkpoint), "label": label, "input": "RGB-Echoes" if cfg.use_echo else "Only-RGB",
            "bag": str(bag), "split": o.split, "min_depth": min_depth, "max_depth": max_depth,
            "gt_resolution": gt_resolution, "gt_size": list(dataset.depth_size), "images": result.images,
            "skipped_no_valid_gt": result.skipped, "seconds": round(result.seconds, 3), "metrics": result.metrics,
            "by_gt_median": result.by_gt_median, "figures": saved, **extra}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = ["Model", "Input", "Test bag", *(HEADERS[m] for m in REPORT_METRICS), "Images"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        values = [f"{r['metrics'][m]:.3f}" for m in REPORT_METRICS]
        lines.append("| " + " | ".join([r["label"], r["input"], f"{Path(r['bag']).name} [{r['split']}]", *values,
                                        str(r["images"])]) + " |")
    skipped = sum(r["skipped_no_valid_gt"] for r in rows)
    lines.append("")
    sizes = sorted({(r["gt_resolution"], "x".join(map(str, r["gt_size"][::-1]))) for r in rows})
    lines.append(f"Metrics averaged per image over the images with valid ground truth (min_depth < gt < max_depth; "
                 f"{skipped} image(s) without any skipped); predictions resized bilinearly to the ground truth's resolution "
                 f"({', '.join(f'{size} {kind}' for kind, size in sizes)}) and clamped to the depth range.")
    lines += ["", "By the images' ground-truth median depth:", "", "| Model | Test bag | GT median | Images | "
              f"{HEADERS['scale_log_error']} | {HEADERS['abs_rel']} | {HEADERS['delta1']} |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        for b in r.get("by_gt_median", []):
            lo, hi = b["gt_median_m"]
            span = f"{lo:g}-{hi:g} m" if hi is not None else f">= {lo:g} m"
            lines.append(f"| {r['label']} | {Path(r['bag']).name} | {span} | {b['images']} | {b['scale_log_error']:.3f} | "
                         f"{b['abs_rel']:.3f} | {b['delta1']:.3f} |")
    with_regions = [r for r in rows if "regions" in r]
    if with_regions:
        from avs_depth_core.evaluation.regions import markdown_regions, region_table_header

        lines += ["", "By region (bags with instance maps; dynamic = moving objects of at least 0.5 % of the image; "
                  "relative = median-scaled per image, metric = as predicted):", "", *region_table_header()]
        for r in with_regions:
            lines += markdown_regions(f"{r['label']} ({r['input']}) on {Path(r['bag']).name}", r["regions"])
    return "\n".join(lines) + "\n"


def evaluate_checkpoints(checkpoints: list[Path], bags: list[Path], out: Path, options: DepthEvalOptions = DepthEvalOptions(),
                         device: str | torch.device | None = None) -> tuple[list[dict[str, Any]], str]:
    """One Table-1 row per checkpoint x bag; writes <out>/results.json and <out>/results.md. -> (rows, markdown table)."""
    from avs_depth_core.device import resolve_device
    from avs_depth_core.models.avsnet import AVSNet

    if options.figures < 0 or options.batch_size < 1:
        raise ValueError("--figures must be >= 0 and --batch-size >= 1")
    if options.gt_resolution not in GT_RESOLUTIONS:
        raise ValueError(f"gt_resolution {options.gt_resolution!r}: choose from {GT_RESOLUTIONS}")
    for bag in bags:
        if not bag.exists():
            raise FileNotFoundError(f"{bag}: bag not found")
    files.sweep_temporaries(out.parent)
    # Before any work: results and figures must fit where they go (a full or read-only disk fails now, not at the end).
    files.check_output(out, (len(checkpoints) * len(bags) * options.figures + 2) * files.FIGURE_BYTES, kind="folder")
    device = resolve_device(device)
    rows = []
    with files.staged_outputs(out) as staging:
        for checkpoint in checkpoints:
            model = AVSNet.from_checkpoint(checkpoint, device)
            for bag in bags:
                rows.append(evaluate_row(model, checkpoint, bag, options, device, staging))
                r = rows[-1]
                r["figures"] = [str(out / Path(p).relative_to(staging)) for p in r["figures"]]
                print(f"{r['label']} on {bag.name}: " + ", ".join(f"{m} {r['metrics'][m]:.4f}" for m in REPORT_METRICS),
                      file=sys.stderr)
        table = markdown_table(rows)
        (staging / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
        (staging / "results.md").write_text(table)
    return rows, table
