"""Relative depth models made metric by AVS-Net's scale (AVS-Net paper, Table 2 and Fig. 5); `avs-depth evaluate-scaling`.

    avs-depth evaluate-scaling --bag bv1/ --relative runs/md2/checkpoints/best --avsnet runs/bv1/checkpoints/best \
        --avsnet-rgb runs/bv1-rgb/checkpoints/best --out results/scaling --figures 4

For every relative or zero-shot model (Monodepth2 checkpoints via --relative, TorchScript files via --relative-torchscript,
Only-RGB AVS-Nets as zero-shot metric models via --zero-shot-avsnet) the test frames are scored in three rows:
  none      the model's depth as it is (relative models: their own units; an echo-supervised Monodepth2, whose checkpoint
            says depth_units "metres": metres, no median step), clamped to the evaluation range;
  rgb       scaled per image by the Only-RGB AVS-Net:    M = R * median(Mp_rgb) / median(R)   (paper eq. 3)
  rgb_echo  scaled per image by the RGB-Echoes AVS-Net:  M = R * median(Mp_echo) / median(R)
plus a reference row gt_median (Monodepth2's evaluation protocol: the scale from the ground truth's median), which shows
how much of the error is the relative model's shape rather than its scale. Every row carries scale_log_error, the mean
|log(median(pred) / median(gt))| over valid pixels (metrics.py), and scale_factor_log_error, the mean |log| ratio of the
row's scale factor to the GT-median row's (0 for the reference row by construction).

Frames: the split's frames that have a paired echo and depth (SupervisedBagDataset at the RGB-Echoes AVS-Net's input
size, echo window and STFT; frames left out are counted in the JSON). The relative models see that image, resized to
their own input size and back. Medians: over the pixels where R is finite and > 0 and Mp lies strictly inside the AVS-Net's
depth range (scaling.recover_scale, median_over="shared"). Metrics: valid = min_depth < gt < max_depth (default: the
AVS-Net's range), predictions resized to the ground truth's resolution (the cache's nearest-resized depth at the input
size) and clamped to the range, the seven Table-2 metrics averaged per image (avs_depth_core.metrics, as `avs-depth
evaluate`).

Bad input: a relative model that returns a wrong shape, NaN, inf or negative depth is an error naming the model;
a frame whose scale cannot be recovered (too few usable pixels, a zero or NaN median) either stops the run naming the
frame (--fallback raise) or, by default, is scored with scale 1 (its unscaled relative depth) and counted in the row's
"fallbacks"; no NaN map ever reaches the metrics.
Writes <out>/scaling.json and <out>/scaling.md, and with --figures N, N PNGs per relative model in Fig. 5's layout.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from avs_depth_core import files
from avs_depth_core.device import resolve_device
from avs_depth_core.evaluation import HEADERS, REPORT_METRICS, check_batch, checkpoint_label
from avs_depth_core.evaluation.regions import RegionAccumulator, RegionSource, markdown_regions, region_table_header
from avs_depth_core.files import save_figure
from avs_depth_core.metrics import MetricAccumulator
from avs_depth_core.models.monodepth2 import check_echo_features
from avs_depth_core.relative import RelativeDepthModel
from avs_depth_core.scaling import ScaleError, ScaleResult, apply_scale, recover_scale_batch

ROWS = ("none", "rgb", "rgb_echo")
REFERENCE_ROW = "gt_median"
ROW_LABELS = {"none": "No", "rgb": "RGB", "rgb_echo": "RGB-Echoes", REFERENCE_ROW: "GT median (reference)"}
FALLBACKS = ("unit", "raise")


@dataclass(frozen=True)
class RelativeSources:
    """The relative (or zero-shot) models to scale: Monodepth2 checkpoints, TorchScript files, Only-RGB AVS-Nets."""

    monodepth2: tuple[Path, ...] = ()
    torchscript: tuple[Path, ...] = ()
    torchscript_output: str = "depth"  # what the TorchScript models return: depth or disparity (inverted, 1/d)
    torchscript_size: tuple[int, int] | None = None  # their input size (None: the evaluation image size)
    zero_shot_avsnet: tuple[Path, ...] = ()


@dataclass(frozen=True)
class ScalingEvalOptions:
    """How `evaluate_scaling_on_bag` reads the bag and scores it (the command-line defaults)."""

    split: str = "test"
    figures: int = 0  # frames (evenly spaced over the split) per relative model as PNGs in Fig. 5's layout
    min_depth: float | None = None  # evaluation range (None: the AVS-Net's)
    max_depth: float | None = None
    min_pixels: int = 100  # fewest usable pixels for a scale; fewer is a fallback
    fallback: str = "unit"  # a frame without a usable scale: scored unscaled and counted (unit), or an error (raise)
    batch_size: int = 8
    num_workers: int = 0
    cache_dir: Path | None = None
    tolerance_s: float = 0.05  # echo-frame pairing tolerance
    skip_bad: bool = False  # skip and count frames whose messages cannot be used instead of stopping


@dataclass
class _Row:
    """Running metrics of one (relative model, scaling) pair."""

    acc: MetricAccumulator
    fallbacks: int = 0
    fallback_examples: list[str] = field(default_factory=list)
    log_scale_errors: list[float] = field(default_factory=list)  # |log(scale / scale of the GT-median row)| per image
    scales: list[float] = field(default_factory=list)
    regions: Any = None  # evaluation.regions.RegionAccumulator for bags with instance maps

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.acc.compute()) if self.acc.count else {}
        out.update({"images": self.acc.count, "skipped_no_valid_gt": self.acc.skipped, "fallbacks": self.fallbacks,
                    "fallback_examples": self.fallback_examples,
                    "scale_factor_log_error": float(np.mean(self.log_scale_errors)) if self.log_scale_errors else math.nan,
                    "scale_median": float(np.median(self.scales)) if self.scales else math.nan})
        if self.regions is not None:
            out["regions"] = self.regions.summary()
        return out


def load_avsnets(avsnet: Path, avsnet_rgb: Path, device: torch.device) -> tuple[Any, Any]:
    """The two scale sources, with the variant checked: --avsnet fuses echoes, --avsnet-rgb does not."""
    from avs_depth_core.models.avsnet import AVSNet

    echo_net = AVSNet.from_checkpoint(avsnet, device).eval()
    if not echo_net.cfg.use_echo:
        raise ValueError(f"--avsnet {avsnet}: an Only-RGB checkpoint (use_echo false); --avsnet needs the RGB-Echoes model, "
                         f"the Only-RGB one goes to --avsnet-rgb")
    rgb_net = AVSNet.from_checkpoint(avsnet_rgb, device).eval()
    if rgb_net.cfg.use_echo:
        raise ValueError(f"--avsnet-rgb {avsnet_rgb}: an RGB-Echoes checkpoint (use_echo true); --avsnet-rgb needs the "
                         f"Only-RGB model (avs-depth train --no-echo)")
    return echo_net, rgb_net


def load_relative_models(sources: RelativeSources, device: torch.device) -> dict[str, RelativeDepthModel]:
    models: dict[str, RelativeDepthModel] = {}

    def add(name: str, model: RelativeDepthModel) -> None:
        label, n = name, 2
        while label in models:
            label, n = f"{name} ({n})", n + 1
        models[label] = model

    for path in sources.monodepth2:
        add(f"monodepth2 {checkpoint_label(path)}", RelativeDepthModel.monodepth2(path, device))
    for path in sources.torchscript:
        size = tuple(sources.torchscript_size) if sources.torchscript_size else None
        add(f"torchscript {path.name}", RelativeDepthModel.from_torchscript(path, sources.torchscript_output, input_size=size,
                                                                             device=device))
    for path in sources.zero_shot_avsnet:
        add(f"avsnet-rgb {checkpoint_label(path)}", RelativeDepthModel.avsnet_rgb(path, device))
    if not models:
        raise ValueError("no relative model: give --relative CKPT (Monodepth2), --relative-torchscript FILE and/or "
                         "--zero-shot-avsnet CKPT")
    return models


def _resize(depth: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(depth.shape[-2:]) == tuple(size):
        return depth
    return F.interpolate(depth, size=size, mode="bilinear", align_corners=False)


def _scales(relative: torch.Tensor, pseudo: torch.Tensor, row: str, model: str, stamps: list[int], min_depth: float,
            max_depth: float, min_pixels: int, fallback: str) -> list[ScaleResult]:
    try:
        return recover_scale_batch(relative, pseudo, "median", min_depth=min_depth, max_depth=max_depth,
                                   min_pixels=min_pixels, fallback=fallback)
    except ScaleError as err:
        raise ValueError(f"{model}, {ROW_LABELS[row]} scaling, frames with stamp_ns {stamps}: {err} "
                         f"(--fallback unit scores such frames unscaled and counts them)") from None


@torch.inference_mode()
def evaluate_scaling(dataset: Any, relatives: dict[str, RelativeDepthModel], echo_net: Any, rgb_net: Any,
                     device: torch.device, min_depth: float, max_depth: float, *, batch_size: int = 8, num_workers: int = 0,
                     min_pixels: int = 100, fallback: str = "unit", figure_indices: tuple[int, ...] = (),
                     progress: bool = True, regions: Any = None
                     ) -> tuple[dict[str, dict[str, dict[str, Any]]], list[dict[str, Any]]]:
    """Table-2 rows for every relative model on `dataset` (SupervisedBagDataset items at echo_net's input size).

    Returns ({model: {row: metrics (scale_log_error among them) + images, fallbacks, scale_factor_log_error,
    scale_median}}, figure records for the items at
    figure_indices: rgb, gt, and per model the unscaled, rgb-scaled and rgb_echo-scaled maps).
    regions: an evaluation.regions.RegionSource (bags with instance maps): every row also gets "regions", its errors by
    region (all / static / dynamic) under the relative (median-scaled) and metric (the row's scale) protocols and per object.
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {list(FALLBACKS)}, got {fallback!r}")
    size = tuple(echo_net.cfg.image_size)
    for name, model in relatives.items():
        if model.needs_echo:
            check_echo_features(model.echo_features, echo_net.cfg, name)
    rows = {name: {row: _Row(MetricAccumulator(min_depth, max_depth),
                             regions=None if regions is None else RegionAccumulator(min_depth, max_depth))
                   for row in (*ROWS, REFERENCE_ROW)} for name in relatives}
    wanted = set(figure_indices)
    figures: list[dict[str, Any]] = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    seen = 0
    for batch in tqdm(loader, desc="evaluate-scaling", dynamic_ncols=True, leave=False, disable=not progress):
        check_batch(batch)
        rgb, gt = batch["rgb"].to(device), batch["depth"].to(device)
        stamps = [int(s) for s in batch["stamp_ns"]]
        pseudo = {"rgb_echo": echo_net(rgb, batch["echo"].to(device))["metric_depth"].float()}
        rgb_in = rgb if tuple(rgb_net.cfg.image_size) == size else F.interpolate(
            rgb, size=tuple(rgb_net.cfg.image_size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        pseudo["rgb"] = _resize(rgb_net(rgb_in, None)["metric_depth"].float(), size)
        valid = (gt > min_depth) & (gt < max_depth)
        picked = [i for i in range(rgb.shape[0]) if seen + i in wanted]
        records = [{"index": seen + i, "stamp_ns": stamps[i], "rgb": rgb[i].cpu(), "gt": gt[i, 0].cpu(), "models": {}}
                   for i in picked]
        for name, model in relatives.items():
            # an echo-input Monodepth2 reads the RGB-Echoes AVS-Net's echo features (load_relative_models checks they match)
            relative = _resize(model(rgb, batch["echo"].to(device) if model.needs_echo else None).float(), gt.shape[-2:])
            # Reference scale from the ground truth (Monodepth2 evaluate_depth.py); NaN where a frame has no valid depth.
            gt_scales = recover_scale_batch(relative, gt, "median", mask=valid, min_depth=min_depth, max_depth=max_depth,
                                            min_pixels=1, fallback="nan")
            preds = {}
            for row in (*ROWS, REFERENCE_ROW):
                if row == "none":
                    scales = [ScaleResult(1.0, math.nan, math.nan, 0, "none")] * rgb.shape[0]
                elif row == REFERENCE_ROW:
                    scales = [s if s.ok else ScaleResult(1.0, math.nan, math.nan, 0, "median", fallback=s.fallback)
                              for s in gt_scales]
                else:
                    cfg = (echo_net if row == "rgb_echo" else rgb_net).cfg
                    scales = _scales(relative, _resize(pseudo[row], gt.shape[-2:]), row, name, stamps, cfg.min_depth,
                                     cfg.max_depth, min_pixels, fallback)
                pred = apply_scale(relative, scales, min_output=min_depth)
                state = rows[name][row]
                per_image = state.acc.update(pred, gt)
                if state.regions is not None:
                    for i in range(pred.shape[0]):
                        regions.update(state.regions, pred[i], gt[i], stamps[i])
                for i, (s, ref) in enumerate(zip(scales, gt_scales, strict=True)):
                    if row != REFERENCE_ROW and s.fallback is not None:
                        state.fallbacks += 1
                        if len(state.fallback_examples) < 5:
                            state.fallback_examples.append(f"stamp_ns {stamps[i]}: {s.fallback}")
                    if torch.isfinite(per_image[i, 0]):
                        state.scales.append(s.scale)
                        if ref.ok:
                            state.log_scale_errors.append(abs(math.log(s.scale / ref.scale)))
                preds[row] = pred
            for rec, i in zip(records, picked, strict=True):
                rec["models"][name] = {row: preds[row][i, 0].cpu() for row in ROWS}
        figures += records
        seen += rgb.shape[0]
    results = {name: {row: state.summary() for row, state in model_rows.items()} for name, model_rows in rows.items()}
    for name, model_rows in results.items():
        if not model_rows["none"]["images"]:
            raise ValueError(f"{name}: no frame had valid ground truth in ({min_depth}, {max_depth}) "
                             f"({model_rows['none']['skipped_no_valid_gt']} skipped)")
    return results, figures


# The scaling ablation's Table 2 (benchmarks/scaling_ablation.py): the relative model's rows, an echo-supervised DepthNet
# used as metres, and two GT-median references: the relative model's (its shape) and a constant map's (no shape at all).
ABLATION_ROWS = (*ROWS, "echo_supervised", "gt_median", "constant_gt_median")
ABLATION_KEYS = (*REPORT_METRICS, "scale_factor_log_error", "fallbacks")


def ablation_rows(results: dict[str, dict[str, dict[str, Any]]], relative: str, constant: str | None = None,
                  echo_supervised: str | None = None, keys: tuple[str, ...] = ABLATION_KEYS) -> dict[str, dict[str, Any]]:
    """evaluate_scaling's results -> {row: {key: value}} in ABLATION_ROWS order: none, rgb, rgb_echo and gt_median of
    model `relative`; echo_supervised = model `echo_supervised`'s unscaled row; constant_gt_median = model `constant`'s
    GT-median row. Rows whose model is not given are left out; a named model missing from `results` is an error."""
    picks = {row: (relative, row) for row in ROWS}
    if echo_supervised is not None:
        picks["echo_supervised"] = (echo_supervised, "none")
    picks["gt_median"] = (relative, REFERENCE_ROW)
    if constant is not None:
        picks["constant_gt_median"] = (constant, REFERENCE_ROW)
    missing = sorted({model for model, _ in picks.values()} - set(results))
    if missing:
        raise ValueError(f"ablation rows: no results for model(s) {missing}; evaluated: {sorted(results)}")
    return {row: {k: results[model][source][k] for k in keys} for row, (model, source) in picks.items()}


def markdown_table(results: dict[str, dict[str, dict[str, Any]]], caption: str = "") -> str:
    head = ["Model", "Scaling", *(HEADERS[m] for m in REPORT_METRICS), "Images", "Fallbacks"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, model_rows in results.items():
        for row in (*ROWS, REFERENCE_ROW):
            r = model_rows[row]
            fallbacks = "-" if row == REFERENCE_ROW else str(r["fallbacks"])
            lines.append("| " + " | ".join([name, ROW_LABELS[row], *(f"{r[m]:.3f}" for m in REPORT_METRICS), str(r["images"]),
                                            fallbacks]) + " |")
    if caption:
        lines += ["", caption]
    return "\n".join(lines) + "\n"


def save_scaling_figure(path: Path, record: dict[str, Any], model: str, min_depth: float, max_depth: float,
                        max_error: float = 0.5) -> Path:
    """Fig. 5 layout, one frame: RGB | ground truth | unscaled | RGB-scaled | RGB-Echoes-scaled | error of each scaled map.

    Ground truth and the two scaled maps share one colour scale (metres); the unscaled map, in its model's own units,
    has its own; errors are |pred - gt| / gt on valid pixels; invalid pixels are grey."""
    import matplotlib.pyplot as plt

    from avs_depth_core.visualise import DEPTH_CMAP, ERROR_CMAP, INVALID_RGB, to_numpy_image, to_numpy_map

    gt = to_numpy_map(record["gt"])
    maps = {row: to_numpy_map(v) for row, v in record["models"][model].items()}
    valid = np.isfinite(gt) & (gt > min_depth) & (gt < max_depth)
    metric_values = np.concatenate([gt[valid], maps["rgb"].ravel(), maps["rgb_echo"].ravel()])
    vmax = float(np.percentile(metric_values, 99)) if metric_values.size else max_depth
    raw = maps["none"]
    raw_lo, raw_hi = (float(np.percentile(raw, 1)), float(np.percentile(raw, 99))) if raw.size else (0.0, 1.0)
    grey = tuple(np.array(INVALID_RGB) / 255.0)
    depth_cmap = plt.get_cmap(DEPTH_CMAP).with_extremes(bad=grey)
    error_cmap = plt.get_cmap(ERROR_CMAP).with_extremes(bad=grey)

    def error(pred: np.ndarray) -> tuple[np.ndarray, float, float]:
        e = np.where(valid, np.abs(pred - gt) / np.where(valid, gt, 1.0), np.nan)
        ratio = np.maximum(pred / np.where(valid, gt, 1.0), np.where(valid, gt, 1.0) / np.maximum(pred, 1e-9))
        d1 = float((ratio[valid] < 1.25).mean()) if valid.any() else math.nan
        return e, float(np.nanmean(e)) if valid.any() else math.nan, d1

    fig, axes = plt.subplots(2, 4, figsize=(17, 5.2))
    (ax_rgb, ax_gt, ax_rgb_scaled, ax_echo_scaled), (ax_raw, ax_note, ax_rgb_err, ax_echo_err) = axes
    ax_rgb.imshow(to_numpy_image(record["rgb"]))
    ax_rgb.set_title("RGB")
    im = ax_gt.imshow(np.where(valid, gt, np.nan), cmap=depth_cmap, vmin=0.0, vmax=vmax)
    ax_gt.set_title("ground truth")
    ax_raw.imshow(raw, cmap=depth_cmap, vmin=raw_lo, vmax=max(raw_hi, raw_lo + 1e-6))
    ax_raw.set_title(f"unscaled (own units, {raw_lo:.3g}-{raw_hi:.3g})")
    notes, last = [], None
    for row, ax_map, ax_err in (("rgb", ax_rgb_scaled, ax_rgb_err), ("rgb_echo", ax_echo_scaled, ax_echo_err)):
        e, abs_rel, d1 = error(maps[row])
        ax_map.imshow(maps[row], cmap=depth_cmap, vmin=0.0, vmax=vmax)
        ax_map.set_title(f"{ROW_LABELS[row]}-scaled")
        last = ax_err.imshow(e, cmap=error_cmap, vmin=0.0, vmax=max_error)
        ax_err.set_title(f"error, {ROW_LABELS[row]}-scaled")
        notes.append(f"{ROW_LABELS[row]}-scaled:\n  AbsRel {abs_rel:.3f}, δ<1.25 {d1:.2f}")
    ax_note.text(0.0, 0.5, "\n".join(notes) + "\n\ngrey: invalid ground truth", va="center", fontsize=10)
    fig.colorbar(im, ax=[ax_gt, ax_rgb_scaled, ax_echo_scaled], fraction=0.02, label="depth (m)")
    fig.colorbar(last, ax=[ax_rgb_err, ax_echo_err], fraction=0.02, label="|pred - gt| / gt")
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle(f"{model}, frame {record['index']} (stamp_ns {record['stamp_ns']})")
    try:
        return save_figure(fig, path, dpi=90, bbox_inches="tight")
    finally:
        plt.close(fig)


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None, so the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def evaluate_scaling_on_bag(bag: Path, avsnet: Path, avsnet_rgb: Path, sources: RelativeSources, out: Path,
                            options: ScalingEvalOptions = ScalingEvalOptions(),
                            device: str | torch.device | None = None) -> tuple[dict[str, Any], str]:
    """Table 2 for `bag`: writes <out>/scaling.json, <out>/scaling.md and the figures. -> (report, markdown table)."""
    from avs_depth_core.data.datasets import SupervisedBagDataset

    o = options
    if o.figures < 0 or o.batch_size < 1 or o.min_pixels < 1:
        raise ValueError("--figures must be >= 0, --batch-size and --min-pixels >= 1")
    if not bag.exists():
        raise FileNotFoundError(f"{bag}: bag not found")
    files.sweep_temporaries(out.parent)
    n_models = len(sources.monodepth2) + len(sources.torchscript) + len(sources.zero_shot_avsnet)
    files.check_output(out, (n_models * o.figures + 2) * files.FIGURE_BYTES, kind="folder")  # before any work
    device = resolve_device(device)
    start = time.perf_counter()
    echo_net, rgb_net = load_avsnets(avsnet, avsnet_rgb, device)
    relatives = load_relative_models(sources, device)
    cfg = echo_net.cfg
    min_depth = cfg.min_depth if o.min_depth is None else o.min_depth
    max_depth = cfg.max_depth if o.max_depth is None else o.max_depth
    if not 0 <= min_depth < max_depth:
        raise ValueError(f"need 0 <= --min-depth < --max-depth, got {min_depth}, {max_depth}")
    dataset = SupervisedBagDataset.for_model(bag, o.split, cfg, tolerance_s=o.tolerance_s, cache_dir=o.cache_dir,
                                             skip_bad=o.skip_bad)
    n = len(dataset)
    indices = tuple(sorted({int(round(x)) for x in np.linspace(0, n - 1, min(o.figures, n))})) if o.figures else ()
    source = RegionSource.from_bag(bag, dataset.cache.array("stamps")[dataset.slots])
    results, records = evaluate_scaling(dataset, relatives, echo_net, rgb_net, device, min_depth, max_depth,
                                        batch_size=o.batch_size, num_workers=o.num_workers, min_pixels=o.min_pixels,
                                        fallback=o.fallback, figure_indices=indices, regions=source)
    caption = (f"{bag.name} [{o.split}], {n} frames with echo and depth; metrics averaged per image over valid "
               f"pixels ({min_depth:g} < gt < {max_depth:g} m), predictions clamped to that range. Scale: per-image median "
               f"ratio (AVS-Net eq. 3); fallbacks = frames without a usable scale, scored unscaled. GT median is Monodepth2's "
               f"ground-truth median scaling, for reference.")
    table = markdown_table(results, caption)
    if source is not None:  # a dynamic bag: errors by region, every row under both protocols
        lines = ["", "By region (dynamic = moving objects of at least 0.5 % of the image; relative = median-scaled per "
                 "image, metric = the row's own scale):", "", *region_table_header()]
        for name, model_rows in results.items():
            for row, r in model_rows.items():
                lines += markdown_regions(f"{name} {ROW_LABELS.get(row, row)}", r["regions"])
        table += "\n".join(lines) + "\n"
    report = {"bag": str(bag), "split": o.split, "frames": n, "excluded": dataset.report,
              "min_depth": min_depth, "max_depth": max_depth, "avsnet": str(avsnet), "avsnet_rgb": str(avsnet_rgb),
              "scale": {"method": "median", "median_over": "shared", "min_pixels": o.min_pixels, "fallback": o.fallback},
              "models": results, "figures": [], "seconds": round(time.perf_counter() - start, 3)}
    with files.staged_outputs(out) as staging:
        for name in relatives:
            for rec in records:
                rel = Path("figures") / f"{_slug(name)}_{rec['index']:05d}_{rec['stamp_ns']}.png"
                save_scaling_figure(staging / rel, rec, name, min_depth, max_depth)
                report["figures"].append(str(out / rel))
        (staging / "scaling.json").write_text(json.dumps(_json_safe(report), indent=2, allow_nan=False) + "\n")
        (staging / "scaling.md").write_text(table)
    return report, table
