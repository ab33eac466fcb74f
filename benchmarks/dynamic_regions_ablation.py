"""Mined supervision for dynamic regions (Nguyen et al., CVPR 2024) with the echo aligning object scale, on the simulated
dynamic world: Monodepth2 before and after retraining on the mined pseudo labels, by region.

    .venv/bin/python benchmarks/dynamic_regions_ablation.py --quick --preset P --seed S --out R.json [--work DIR]

1. `avs-depth simulate --dynamic` (120 sequences of 10 frames at 2 Hz, 64x128; moving objects with the camera, along the axis,
   crossing; static ones of the same kinds), split by sequence; with scaling_ablation.py's camera (4x supersampled
   frames, the IMU attitude topic) so that stage 1 can use model.pose_prior imu (issue 9: it then learns shape).
2. Two lanes side by side (one CPU thread each): the stage-1 Monodepth2 (`avs-depth train --model monodepth2`, the
   CPU recipe of benchmarks/scaling_ablation.py) and the RGB-Echoes AVS-Net (benchmarks/echo_scale_ablation.py's
   recipe) on the training sequences.
3. `avs-depth mine-labels` on the training triples (train/mining.py: residual flow by block matching, dynamic instances
   by the paper's rules on the world's instance maps (`--regions`), object scale by the echo with the ground-contact
   gate, pseudo labels in metres). Object depth: `object_depth=pseudo_metric` (the echo map Mp inside the objects; the
   mining default `scene`, R's shape, is `--mine object_depth=scene`): measured better on both bv2 seeds (README).
4. Retraining (their stage 4): `avs-depth train --model monodepth2 --dynamic-labels --init <stage 1>` for the setting's
   stage4_epochs, and beside it in the other lane the same continuation without labels (`continued`: what the extra
   epochs alone do). Three deviations from their recipe, measured (README) and options: stage 1's lr (their lr x 0.1 is
   `--stage4-lr-factor 0.1`); every labelled pixel in the term (their kept range, `--label-range prediction`, lets the
   DepthNet lower the term by pushing the objects out of the range: on oracle labels the batch term fell while the term
   over every labelled pixel rose); and the same term on the static scene, whose label is stage 1's own depth, with
   weight 0.1 (`--static-weight 0`: theirs; without it the objects' gain came with a static regression on bv2 seed 303).
5. Rows on the test sequences (each with all / static / dynamic, the seven metrics and scale_log_error;
   dynamic = moving instances of at least 0.5 % of the image): `relative` = median-scaled per image with one ratio from
   all valid pixels (their protocol), `echo_scaled` = scaled by median(Mp) / median(R) (AVS-Net eq. 3, metres), for
   `baseline` (stage 1), `mined` and `continued`; `object_scale`: the alignment's object-scale error against the
   ground truth (mine-labels' summary: median |log beta_echo / s_t - log beta*| over objects, by motion case, beside
   the ground-contact scale's and the learned DSA's (`measure_dsa`: trained on the static instances, B.6, not used for
   the labels unless `--mine object_scale=dsa`), B.10); `criteria`: the issue's done-when checks.
   --figures N writes <work>/figures/*.png (image, moving-object masks, GT, baseline and mined depth with error maps).

Done when (issue 15): mined dynamic Abs Rel <= 0.8 x baseline's, static Abs Rel <= 1.02 x baseline's (relative
protocol), in at most 30 minutes per preset on 2 CPU cores. cpu_s of every step is in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import echo_scale_ablation as esa  # noqa: E402
import scaling_ablation as sa  # noqa: E402

from avs_depth_core.evaluation.regions import (  # noqa: E402
    REGION_METRICS,
    RegionAccumulator,
    RegionSource,
)
from avs_depth_core.losses.dynamic import LABEL_RANGES  # noqa: E402
from avs_depth_core.sim.presets import get_preset  # noqa: E402
from avs_depth_core.train.avsnet import train_avsnet  # noqa: E402
from avs_depth_core.train.mining import MiningConfig, mine_labels  # noqa: E402

SETTINGS: dict[str, dict[str, Any]] = {
    # 120 sequences of 10 frames (was 40 of 20: 1.5x the frames, three times the objects): on perfect labels the
    # retrained DepthNet reached only 0.875 x stage 1 on bv1's test objects after fitting the training ones to 0.625 x,
    # so what it lacked was objects to generalise from; bv1 seed 202's dynamic ratio 0.924 (40 x 20) -> 0.876 (80 x 10)
    # -> 0.821 (120 x 10), README.
    "quick": {"sim": {"sequences": 120, "frames": 10, "splits": [0.75, 0.0, 0.25], "height": 64, "width": 128, "rate_hz": 2.0,
                      **sa.CAMERA},
              # Issue 9's wider Monodepth2 (decoder [8..128], half Monodepth2's widths; 18 epochs, was 12 and [4..64]):
              # bv1 seed 202's dynamic ratio 0.988 -> 0.924 on the old world.
              "monodepth2": {"frame_interval": 1, "encoder_width": 16, "num_epochs": 18, "scheduler_step_size": 9,
                             "decoder_channels": [8, 16, 32, 64, 128], "pose_prior": "imu"},
              # 2400 AVS-Net steps (was 800): Mp is the objects' label, and 3x the steps cut the labels' dynamic Abs Rel
              # 0.28-0.33 -> 0.18 on bv2 (README); the AVS-Net lane (~12 min) is the longer of the two.
              "stage4_epochs": 8, "avsnet_steps": 2400},
    "smoke": {"sim": {"sequences": 6, "frames": 6, "splits": [0.67, 0.0, 0.33], "height": 64, "width": 128, "rate_hz": 2.0,
                      **sa.CAMERA},
              "monodepth2": {"frame_interval": 1, "encoder_width": 8, "num_epochs": 1, "scheduler_step_size": 1,
                             "pose_prior": "imu"},
              "stage4_epochs": 1, "avsnet_steps": 2},
}
THEIR_STAGE4_LR_FACTOR = 0.1  # their stage 4: Adam 2e-5 after stage 1's 2e-4 (B.7)
# The retraining recipe of both settings (ours, see the module docstring): stage 1's lr, every labelled pixel, Mp inside
# the objects, the static scene held at stage 1's depth with weight STATIC_WEIGHT.
STAGE4_LR_FACTOR = 1.0
LABEL_RANGE = "none"
# measure_dsa: the learned DSA is trained beside the echo's scale so that `object_scale` holds both errors (B.10).
MINING_DEFAULTS = ("object_depth=pseudo_metric", "measure_dsa=true")
STATIC_WEIGHT = 0.1
QUICK_BUDGET_S = 30 * 60
FIGURE_MAX_SHARE = 0.3  # figures show frames with moving objects on at most this share of the image (see evaluate)
ROWS = ("baseline", "mined", "continued")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the 30-minute CPU setting")
    p.add_argument("--smoke", action="store_true", help="about a minute; only checks the script runs")
    p.add_argument("--preset", default="bv1", help="simulator preset (bv1: offices, 12 m; bv2: halls, 30 m)")
    p.add_argument("--seed", type=int, default=0, help="seed of the world and of training")
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    p.add_argument("--work", type=Path, default=None, help="bag, caches and runs (default runs/dynamic_regions/<preset>-seed<S>-"
                   "<setting>); finished runs of the same setting are reused")
    p.add_argument("--regions", default="instances", choices=("instances", "oracle", "motion"),
                   help="dynamic regions for the labels (mine-labels regions)")
    p.add_argument("--mine", dest="mine_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="further mine-labels settings (train/mining.py MiningConfig and thresholds), after "
                        f"the benchmark's {list(MINING_DEFAULTS)}")
    p.add_argument("--sequences", type=int, default=None, help="override the simulated sequences (README: 40, 80, 120)")
    p.add_argument("--frames", type=int, default=None, help="override the frames per sequence")
    p.add_argument("--md2-epochs", type=int, default=None, help="override the stage-1 epochs")
    p.add_argument("--md2-set", dest="md2_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a Monodepth2 model key of stage 1 (and so of the retraining), e.g. decoder_channels=[8,16,32,64,128]")
    p.add_argument("--stage4-epochs", type=int, default=None, help="override the retraining epochs")
    p.add_argument("--stage4-lr-factor", type=float, default=STAGE4_LR_FACTOR,
                   help=f"retraining lr / stage-1 lr (theirs {THEIR_STAGE4_LR_FACTOR})")
    p.add_argument("--weight", type=float, default=None, help="dynamic label loss weight (default their 0.1)")
    p.add_argument("--raw-l1", action="store_true", help="their dynamic L1 in the DepthNet's units (normalise false)")
    p.add_argument("--label-range", default=LABEL_RANGE, choices=LABEL_RANGES,
                   help="labels the retraining's term keeps (train.dynamic_labels.label_range; prediction = theirs)")
    p.add_argument("--mask-photometric", action="store_true",
                   help="leave the labelled moving objects out of the retraining's photometric loss "
                        "(train.dynamic_labels.mask_photometric)")
    p.add_argument("--static-weight", type=float, default=STATIC_WEIGHT,
                   help="weight of the label term on the static scene, stage 1's own depth there "
                        "(train.dynamic_labels.static_weight; 0 = theirs)")
    p.add_argument("--avsnet-steps", type=int, default=None, help="override the AVS-Net steps")
    p.add_argument("--no-control", action="store_true", help="skip the `continued` row (retraining without labels)")
    p.add_argument("--figures", type=int, default=0, metavar="N", help="write N figure PNGs to <work>/figures")
    return p.parse_args(argv)


def train_avsnet_lane(bag: Path, work: Path, preset: str, seed: int, s: dict[str, Any], steps: int) -> dict[str, Any]:
    """The RGB-Echoes AVS-Net (echo_scale_ablation's recipe), reused when finished with the same setting."""
    run_dir = work / "run_avsnet_rgb_echo"
    config = esa.config_for(preset, seed, s, steps, True, work / "cache", esa.RECIPE_OVERRIDES)
    key = {"config": config, "bag": str(bag)}
    if sa.finished(run_dir, key):
        print(f"reusing {run_dir}", file=sys.stderr)
        return json.loads((run_dir / "summary.json").read_text())
    sa.clear_run(run_dir)
    cpu = time.process_time()
    summary = train_avsnet(config, bag, run_dir, device="cpu")
    summary["cpu_seconds"] = time.process_time() - cpu
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (run_dir / "benchmark_key.json").write_text(json.dumps(key))
    return summary


def stage4_config(stage1: dict[str, Any], labels: Path | None, init: Path, epochs: int, lr_factor: float,
                  label_settings: dict[str, Any]) -> dict[str, Any]:
    """Stage 1's config continued from its weights: lr x lr_factor, `epochs`, with the labels and label_settings
    (train.dynamic_labels keys) or without both (labels None: the control)."""
    out = json.loads(json.dumps(stage1))
    model = out["model"]
    model.update({"num_epochs": epochs, "learning_rate": model["learning_rate"] * lr_factor,
                  "scheduler_step_size": max(epochs, 1) * 10})
    out["train"]["seed"] = out["train"]["seed"] + 1  # another data order than stage 1's
    dyn: dict[str, Any] = {"init_checkpoint": str(init)}
    if labels is not None:
        dyn.update({"labels": str(labels), **label_settings})
    out["train"]["dynamic_labels"] = dyn
    return out


@torch.inference_mode()
def evaluate(bag: Path, avsnet: Path, models: dict[str, Path], max_depth: float, figures: int,
             figure_dir: Path, cache: Path | None = None) -> dict[str, Any]:
    """Rows by region under the relative and echo-scaled protocols on the test split; figures of the frames with the
    largest dynamic share up to FIGURE_MAX_SHARE (beyond it the objects fill the view and the median scaling is theirs)."""
    from avs_depth_core.data.datasets import SupervisedBagDataset
    from avs_depth_core.evaluation.dynamic_figure import save_dynamic_figure
    from avs_depth_core.models.avsnet import AVSNet
    from avs_depth_core.relative import RelativeDepthModel
    from avs_depth_core.scaling import apply_scale, recover_scale_batch

    echo_net = AVSNet.from_checkpoint(avsnet, "cpu").eval()
    cfg = echo_net.cfg
    dataset = SupervisedBagDataset.for_model(bag, "test", cfg, skip_bad=True, cache_dir=cache)
    source = RegionSource.from_bag(bag, dataset.cache.array("stamps")[dataset.slots])
    if source is None:
        raise ValueError(f"{bag}: no instance maps (simulate with --dynamic)")
    nets = {name: RelativeDepthModel.monodepth2(path, "cpu") for name, path in models.items()}
    accs = {name: RegionAccumulator(cfg.min_depth, max_depth) for name in nets}
    kept: list[tuple[float, dict[str, Any]]] = []
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=False)
    for batch in loader:
        rgb, gt = batch["rgb"], batch["depth"]
        mp = echo_net(rgb, batch["echo"])["metric_depth"].float()
        preds = {}
        for name, net in nets.items():
            rel = net(rgb).float()
            scales = recover_scale_batch(rel, mp, "median", min_depth=cfg.min_depth, max_depth=cfg.max_depth, min_pixels=100,
                                         fallback="unit")
            preds[name] = apply_scale(rel, scales, min_output=cfg.min_depth)
            for i in range(rgb.shape[0]):
                source.update(accs[name], preds[name][i], gt[i], int(batch["stamp_ns"][i]))
        for i in range(rgb.shape[0]):
            frame = source.frames.get(int(batch["stamp_ns"][i]))
            if frame is None or frame.instances is None or figures <= 0:
                continue
            moving = frame.moving_ids()
            share = float(np.isin(frame.instances, list(moving)).mean()) if moving else 0.0
            kept.append((share, {"stamp": int(batch["stamp_ns"][i]), "rgb": rgb[i], "gt": gt[i, 0], "instances": frame.instances,
                                 "moving": moving, "preds": {n: p[i, 0] for n, p in preds.items()}}))
            kept = sorted(kept, key=lambda x: (x[0] > FIGURE_MAX_SHARE, -x[0]))[:figures]
    paths = []
    for share, rec in kept:
        g = rec["gt"].numpy()
        valid = (g > cfg.min_depth) & (g < max_depth)
        shown = {}
        for name in ("baseline", "mined"):
            if name in rec["preds"]:
                p = rec["preds"][name].numpy()
                shown[name] = p * (np.median(g[valid]) / np.median(p[valid])) if valid.any() else p  # median-scaled
        paths.append(str(save_dynamic_figure(figure_dir / f"dynamic_{rec['stamp']}.png", rec["rgb"], rec["gt"],
                                             rec["instances"], rec["moving"], shown, min_depth=cfg.min_depth,
                                             max_depth=max_depth,
                                             title=f"{bag.name} test, stamp {rec['stamp']}, moving share {share:.1%} "
                                                   f"(median-scaled)")))
    rows = {}
    for name, acc in accs.items():
        s = acc.summary()
        rows[name] = {"relative": s["relative"], "echo_scaled": s["metric"], "by_motion": s["by_motion"],
                      "images": s["images"], "dynamic_fraction": s["dynamic_fraction"]}
    return {"rows": rows, "figures": paths, "test_frames": len(dataset)}


def criteria(rows: dict[str, Any]) -> dict[str, Any]:
    b, m = rows["baseline"]["relative"], rows["mined"]["relative"]
    dyn_ratio = m["dynamic"]["abs_rel"] / b["dynamic"]["abs_rel"]
    static_ratio = m["static"]["abs_rel"] / b["static"]["abs_rel"]
    return {"dynamic_abs_rel_ratio": dyn_ratio, "dynamic_met": bool(dyn_ratio <= 0.8),
            "static_abs_rel_ratio": static_ratio, "static_met": bool(static_ratio <= 1.02)}


def table(rows: dict[str, Any]) -> str:
    keys = ("abs_rel", "rmse", "delta1")
    lines = ["| row | protocol | " + " | ".join(f"{r} {k}" for r in ("all", "static", "dynamic") for k in keys) + " |",
             "|---|---|" + "---|" * 9]
    for name, row in rows.items():
        for protocol in ("relative", "echo_scaled"):
            cells = [f"{row[protocol][r][k]:.3f}" for r in ("all", "static", "dynamic") for k in keys]
            lines.append(f"| {name} | {protocol} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    name = "smoke" if args.smoke else "quick"
    s = json.loads(json.dumps(SETTINGS[name]))
    for key in ("sequences", "frames"):
        if getattr(args, key) is not None:
            s["sim"][key] = getattr(args, key)
    if args.md2_epochs is not None:
        s["monodepth2"]["num_epochs"] = args.md2_epochs
    s["monodepth2"].update(sa.parse_md2_overrides(args.md2_overrides))
    stage4_epochs = args.stage4_epochs or s["stage4_epochs"]
    steps = args.avsnet_steps or s["avsnet_steps"]
    work = args.work or ROOT / "runs" / "dynamic_regions" / f"{args.preset}-seed{args.seed}-{name}"
    work.mkdir(parents=True, exist_ok=True)
    max_depth = get_preset(args.preset).max_depth
    start, cpu0, timings = time.perf_counter(), time.process_time(), {}
    bag = work / "bag"
    # bag_key.json guards the bag: a work folder of the 40 x 20 world (before session 12) is not reused.
    simulated = sa.ensure_bag(work, args.preset, args.seed, s["sim"], world="--dynamic")
    if simulated is not None:
        timings["simulate_s"] = simulated
    # Lane 1 (subprocess): stage-1 Monodepth2; lane 2 (here): the RGB-Echoes AVS-Net.
    md2_setting = {"sim": s["sim"], "monodepth2": s["monodepth2"]}
    stage1_cfg = sa.monodepth2_config(args.preset, args.seed, md2_setting, work / "cache")
    stage1_dir = work / "run_stage1"
    stage1_key = {"config": stage1_cfg, "bag": str(bag)}
    t0 = time.perf_counter()
    proc = sa.start_monodepth2(bag, stage1_dir, stage1_cfg, stage1_key)
    avsnet_summary = train_avsnet_lane(bag, work, args.preset, args.seed, {**s["sim"], "splits": s["sim"]["splits"]}, steps)
    stage1_summary = sa.wait_monodepth2(proc, stage1_dir, stage1_key)
    timings["stage1_and_avsnet_s"] = time.perf_counter() - t0
    stage1 = stage1_dir / "checkpoints" / "last"
    avsnet = work / "run_avsnet_rgb_echo" / "checkpoints" / "last"
    # Mining.
    t0 = time.perf_counter()
    mining_cfg = MiningConfig.from_assignments([f"regions={args.regions}", *MINING_DEFAULTS, *args.mine_overrides])
    mine_tag = "".join("_" + o.replace("=", "-") for o in args.mine_overrides)  # variants never replace the default's
    labels = work / f"labels_{args.regions}{mine_tag}.npz"
    mined_summary = mine_labels(bag, stage1, avsnet, labels, mining_cfg, max_depth=max_depth, cache_dir=work / "cache")
    timings["mine_s"] = time.perf_counter() - t0
    # Retraining with the labels (lane 1) and without them (lane 2, the control), side by side.
    t0 = time.perf_counter()
    # Variants of the retraining recipe get run folders of their own, so they never replace the default's.
    tag = ("" if args.stage4_lr_factor == STAGE4_LR_FACTOR else f"_lr{args.stage4_lr_factor:g}") + \
        ("" if stage4_epochs == s["stage4_epochs"] else f"_ep{stage4_epochs}")
    mined_tag = tag + ("" if args.weight is None else f"_w{args.weight:g}") + ("_raw" if args.raw_l1 else "") + \
        ("_maskphoto" if args.mask_photometric else "") + \
        ("" if args.label_range == LABEL_RANGE else f"_range{args.label_range}") + \
        ("" if args.static_weight == STATIC_WEIGHT else f"_static{args.static_weight:g}")
    runs = {"mined": (labels, work / f"run_mined_{args.regions}{mine_tag}{mined_tag}")}
    if not args.no_control:
        runs["continued"] = (None, work / f"run_continued{tag}")
    label_settings = {"normalise": not args.raw_l1, "mask_photometric": args.mask_photometric,
                      "label_range": args.label_range, "static_weight": args.static_weight,
                      **({} if args.weight is None else {"weight": args.weight})}
    procs = {}
    for row, (lab, run_dir) in runs.items():
        cfg = stage4_config(stage1_cfg, lab, stage1, stage4_epochs, args.stage4_lr_factor, label_settings)
        key = {"config": cfg, "bag": str(bag), "labels_mtime": labels.stat().st_mtime if lab else None}
        procs[row] = (sa.start_monodepth2(bag, run_dir, cfg, key), run_dir, key)
    summaries = {row: sa.wait_monodepth2(*procs[row]) for row in procs}
    timings["stage4_s"] = time.perf_counter() - t0
    # Evaluation.
    t0 = time.perf_counter()
    models = {"baseline": stage1, **{row: run_dir / "checkpoints" / "last" for row, (_, run_dir) in runs.items()}}
    result = evaluate(bag, avsnet, models, max_depth, args.figures, work / "figures", work / "cache")
    timings["evaluate_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - start
    cpu = {"this_process_s": time.process_time() - cpu0, "stage1_s": stage1_summary.get("cpu_seconds"),
           "avsnet_s": avsnet_summary.get("cpu_seconds"), "mine_s": mined_summary["cpu_seconds"],
           **{f"stage4_{row}_s": summ.get("cpu_seconds") for row, summ in summaries.items()}}
    mined_public = {k: v for k, v in mined_summary.items() if k != "config"}
    out = {"setup": {"preset": args.preset, "seed": args.seed, "setting": name, **s, "stage4_epochs": stage4_epochs,
                     "stage4_lr_factor": args.stage4_lr_factor, "avsnet_steps": steps, "mining": mining_cfg.to_dict(),
                     "weight": args.weight, "normalise": not args.raw_l1, "mask_photometric": args.mask_photometric,
                     "label_range": args.label_range, "static_weight": args.static_weight, "work": str(work)},
           "rows": result["rows"], "object_scale": mined_public, "criteria": criteria(result["rows"]),
           "figures": result["figures"], "timings": timings, "cpu": cpu, "metrics": list(REGION_METRICS),
           "test_frames": result["test_frames"]}
    print(table(result["rows"]))
    shown = ("objects", "by_motion", "label_dynamic_abs_rel", "scene_dynamic_abs_rel")
    print(json.dumps({"criteria": out["criteria"], "object_scale": {k: mined_public[k] for k in shown},
                      "timings": timings, "cpu": cpu}, indent=2, default=float))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2, default=float) + "\n")
    if args.quick and timings["total_s"] > QUICK_BUDGET_S:
        print(f"warning: --quick took {timings['total_s']:.0f} s wall, over its {QUICK_BUDGET_S} s budget (shared CPU?)",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
