"""Pixel-wise echo rescale maps (TR2M with echoes) against AVS-Net's one global factor, on a simulated scale-ambiguous world.

    .venv/bin/python benchmarks/rescale_maps_ablation.py --quick --preset P --seed S --out R.json [--work DIR] [--figures N]

1. The world and the AVS-Nets of benchmarks/echo_scale_ablation.py's quick recipe (its functions, not a copy):
   `avs-depth simulate --scale-ambiguous` (960 scenes x 1 frame at 64x128, split by scene), then `avs-depth train`
   twice, RGB-Echoes and Only-RGB, with the same trainer, data, seed and steps. The Only-RGB network is the relative
   model R (the live demo's): trained on a world whose scale an image cannot tell, it has shape but no scale. The
   RGB-Echoes network gives the pseudo-metric map Mp, the echo tokens and the global scale.
   With --relative monodepth2, R is instead a self-supervised Monodepth2 trained by `avs-depth train --model monodepth2`
   on scaling_ablation.py's world of 20-frame sequences (that script's quick recipe), the image features still the
   Only-RGB AVS-Net's.
2. `avs-depth train --model rescale` (config/rescale.yaml with HEAD_OVERRIDES) twice on the training scenes: the head
   with echoes (`pixel_maps`) and the same head without them (`pixel_maps_rgb`: one learned constant token, TR2M's
   fitted constant anchor instead of the echo's global scale, no echo-derived guidance).
3. Rows on the test scenes, each with the seven Table-1 metrics and scale_log_error (per-image averages, valid
   min_depth < gt < max_depth, at the network's 64x128): `global_median` (R scaled by median(Mp) / median(R),
   avs_depth_core.scaling "median", today's RGB-Echoes scaling), `pixel_maps`, `pixel_maps_rgb`, and for reference
   `avsnet_rgb_echo` (Mp itself). --loss-ablation adds heads trained without each loss term.
   --figures N writes <work>/figures/*.png: image, GT, R, global-median result, pixel-maps result, A, B, error maps.

Done-when of the feature: pixel_maps Abs Rel <= 0.85 x global_median's and pixel_maps delta1 above both other rows, in
at most 30 minutes per preset on 2 CPU cores. cpu_s (this process's CPU time) is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import echo_scale_ablation as esa  # noqa: E402

from avs_depth_core.config import apply_overrides  # noqa: E402
from avs_depth_core.evaluation.rescale_maps import global_median, score  # noqa: E402
from avs_depth_core.models.rescale_head import EchoRescaleHead  # noqa: E402
from avs_depth_core.rescale import FrontendConfig, RescaleFrontend, frame_dataset, precompute, predict_set  # noqa: E402
from avs_depth_core.sim.presets import get_preset  # noqa: E402
from avs_depth_core.train.avsnet import train_avsnet  # noqa: E402
from avs_depth_core.train.rescale import train_rescale  # noqa: E402

SETTINGS = {
    # echo_scale_ablation's quick AVS-Net recipe on the 960 scenes and at the 1500 steps its figures were measured with
    # (the echo ablation's 3840 scenes x 4000 steps would not fit this benchmark's 30 minutes); the heads train for
    # head_steps (batch 8, ~7 epochs).
    "quick": {**esa.SETTINGS["quick"], "sequences": 960, "steps": 1500, "head_steps": 600},
    "smoke": {"sequences": 24, "frames": 1, "splits": (0.7, 0.05, 0.25), "height": 64, "width": 128, "steps": 2,
              "head_steps": 2},
}
# The heads' recipe on top of config/rescale.yaml (both rows): no validation (the last checkpoint is scored).
# lr 3e-3 instead of config/rescale.yaml's 1e-4: in 600 CPU steps 1e-3 left the head at its global start (bv1 seed 0
# dev world, 480 scenes: test Abs Rel 0.221 vs 0.217 global), 3e-3 reached 0.185.
HEAD_OVERRIDES = ["train.validate=false", "train.num_workers=0", "train.log_every=50", "train.lr=3e-3"]
# The head with echoes: the echo tokens, the RGB-Echoes global scale as its anchor, and the echo network's map and R's
# relative disparity as guidance for the heads (a deviation option; TR2M has no second depth map).
ECHO_HEAD = ["model.use_echo=true", "model.anchor=global", "model.guidance=[relative, pseudo_metric]"]
# The same head without echoes: one learned constant token, TR2M's fitted constant anchor, R's disparity as guidance.
RGB_HEAD = ["model.use_echo=false", "model.anchor=fitted", "model.guidance=[relative]"]
# --loss-ablation: the echo head without one term each (weights of config/rescale.yaml otherwise).
LOSS_ABLATION = {"no_pseudo": ["train.w_tp=0"], "no_contrast": ["train.w_soc_image=0", "train.w_soc_pixel=0"],
                 "no_smoothness": ["train.w_es=0"], "gt_only": ["train.w_tp=0", "train.w_soc_image=0",
                                                            "train.w_soc_pixel=0", "train.w_es=0"]}
ROW_NAMES = {"global_median": "R x median(Mp)/median(R) (AVS-Net, global)", "pixel_maps": "rescale maps, echoes",
             "pixel_maps_rgb": "rescale maps, no echoes", "avsnet_rgb_echo": "RGB-Echoes AVS-Net itself (Mp, reference)"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the 30-minute CPU setting")
    p.add_argument("--smoke", action="store_true", help="seconds; only checks the script runs (numbers mean nothing)")
    p.add_argument("--preset", default="bv1", help="simulator preset (bv1: offices, 12 m; bv2: halls, 30 m)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated world and of training")
    p.add_argument("--out", type=Path, default=None, help="write the rows (and the setup) as JSON here")
    p.add_argument("--work", type=Path, default=None, help="bag, cache and runs (default: a temporary folder); "
                   "finished AVS-Net runs of the same setting are reused")
    p.add_argument("--relative", choices=("avsnet_rgb", "monodepth2"), default="avsnet_rgb", help="the relative model R")
    p.add_argument("--head-steps", type=int, default=None, help="override the heads' optimiser steps")
    p.add_argument("--avsnet-steps", type=int, default=None, help="override the AVS-Nets' optimiser steps")
    p.add_argument("--sequences", type=int, default=None, help="override the simulated scenes")
    p.add_argument("--loss-ablation", action="store_true", help="also train the echo head without each loss term")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="further overrides for both heads (after HEAD_OVERRIDES and ECHO_HEAD / RGB_HEAD)")
    p.add_argument("--figures", type=int, default=0, metavar="N", help="write N figure PNGs to <work>/figures")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as echo_scale_ablation)")
    return p.parse_args(argv)


def train_avsnets(work: Path, bag: Path, preset: str, seed: int, s: dict[str, Any], steps: int,
                  timings: dict[str, float]) -> dict[str, Path]:
    """RGB-Echoes and Only-RGB AVS-Net with echo_scale_ablation's quick recipe; a finished run of the same setting is
    reused (its key file matches)."""
    out = {}
    for name, use_echo in (("rgb_echo", True), ("rgb", False)):
        run_dir = work / f"run_avsnet_{name}"
        config = esa.config_for(preset, seed, s, steps, use_echo, work / "cache", esa.RECIPE_OVERRIDES)
        key = json.loads(json.dumps({"config": config, "bag": str(bag)}))
        key_file = run_dir / "benchmark_key.json"
        if (run_dir / "summary.json").is_file() and key_file.is_file() and json.loads(key_file.read_text()) == key:
            print(f"reusing {run_dir}", file=sys.stderr)
        else:
            if run_dir.exists():
                shutil.rmtree(run_dir)
            t0 = time.perf_counter()
            train_avsnet(config, bag, run_dir, device="cpu")
            timings[f"train_avsnet_{name}_s"] = time.perf_counter() - t0
            key_file.write_text(json.dumps(key))
        out[name] = run_dir / "checkpoints" / "last"
    return out


def train_monodepth2(work: Path, preset: str, seed: int, timings: dict[str, float], name: str) -> tuple[Path, Path]:
    """--relative monodepth2: scaling_ablation.py's world of setting `name` (quick: sequences of 20 frames) and its
    Monodepth2 recipe."""
    import scaling_ablation as sa

    setting = sa.SETTINGS[name]
    bag = work / f"{preset}_seed{seed}_md2world_bag"
    if not bag.exists():
        timings["simulate_md2world_s"] = sa.simulate(bag, preset, seed, setting["sim"])
    run_dir = work / "run_monodepth2"
    config = sa.monodepth2_config(preset, seed, setting, work / "cache")
    key = {"config": config, "bag": str(bag)}
    t0 = time.perf_counter()
    sa.wait_monodepth2(sa.start_monodepth2(bag, run_dir, config, key), run_dir, key)
    timings["train_monodepth2_s"] = time.perf_counter() - t0
    return bag, run_dir / "checkpoints" / "last"


def head_config(frontend: dict[str, Any], max_depth: float, seed: int, steps: int, cache: Path,
                extra: list[str]) -> dict[str, Any]:
    base = yaml.safe_load((ROOT / "config" / "rescale.yaml").read_text())
    base["model"]["frontend"].update(frontend)
    overrides = [f"model.frontend.max_depth={max_depth}", f"data.max_depth={max_depth}", f"train.seed={seed}",
                 f"train.max_steps={steps}", "train.epochs=1000", f"data.cache_dir={cache}", "data.skip_bad=true",
                 *HEAD_OVERRIDES, *extra]
    return apply_overrides(base, overrides)


def save_figures(folder: Path, test: Any, rows: dict[str, torch.Tensor], maps: dict[str, torch.Tensor], count: int,
                 max_depth: float) -> list[str]:
    """Per test image: image, GT, R, the global-median and pixel-maps results, A and B, and both abs-rel error maps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avs_depth_core.visualise import to_numpy_image

    folder.mkdir(parents=True, exist_ok=True)
    t = test.tensors
    saved = []
    for i in range(min(count, len(test))):
        gt = t["depth"][i, 0]
        valid = (gt > 1e-3) & (gt < max_depth)
        vmax = float(gt[valid].max()) if valid.any() else max_depth
        panels = [("image", to_numpy_image(t["rgb"][i]), None), ("ground truth (m)", gt, "magma_r"),
                  ("R (Only-RGB AVS-Net, m)", t["relative"][i, 0], "magma_r"),
                  ("global median (m)", rows["global_median"][i, 0], "magma_r"),
                  ("pixel maps, echoes (m)", rows["pixel_maps"][i, 0], "magma_r"),
                  ("scale map A (1/m)", maps["scale_map"][i, 0], "viridis"),
                  ("shift map B (1/m)", maps["shift_map"][i, 0], "viridis")]
        errors = {}
        for key in ("global_median", "pixel_maps"):
            e = ((rows[key][i, 0] - gt).abs() / gt.clamp_min(1e-3))
            errors[key] = torch.where(valid, e, torch.full_like(e, float("nan")))
        panels += [(f"abs rel error, global ({float(errors['global_median'][valid].mean()):.3f})",
                    errors["global_median"], "inferno"),
                   (f"abs rel error, pixel maps ({float(errors['pixel_maps'][valid].mean()):.3f})",
                    errors["pixel_maps"], "inferno")]
        fig, axes = plt.subplots(3, 3, figsize=(12, 6.5))
        for ax, (title, value, cmap) in zip(axes.flat, panels, strict=True):
            if cmap is None:
                ax.imshow(value)
            else:
                v = value.numpy() if isinstance(value, torch.Tensor) else value
                if cmap == "magma_r":
                    im = ax.imshow(v, cmap=cmap, vmin=0, vmax=vmax)
                elif cmap == "inferno":
                    im = ax.imshow(v, cmap=cmap, vmin=0, vmax=0.5)
                else:
                    im = ax.imshow(v, cmap=cmap)
                fig.colorbar(im, ax=ax, fraction=0.025)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        fig.tight_layout()
        path = folder / f"rescale_maps_{i:03d}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        saved.append(str(path))
    return saved


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    setting = dict(SETTINGS["smoke" if args.smoke else "quick"])
    if args.sequences:
        setting["sequences"] = args.sequences
    avsnet_steps = args.avsnet_steps or setting["steps"]
    head_steps = args.head_steps or setting["head_steps"]
    work = args.work or Path(tempfile.mkdtemp(prefix="rescale_maps_ablation_"))
    work.mkdir(parents=True, exist_ok=True)
    max_depth, min_depth = get_preset(args.preset).max_depth, 1e-3
    started, cpu_started = time.perf_counter(), time.process_time()
    timings: dict[str, float] = {}
    try:
        bag = work / f"{args.preset}_seed{args.seed}_{setting['sequences']}x{setting['frames']}_bag"
        if not bag.exists():
            timings["simulate_s"] = esa.simulate(bag, args.preset, args.seed, setting)
        nets = train_avsnets(work, bag, args.preset, args.seed, setting, avsnet_steps, timings)
        frontend = {"relative": "avsnet_rgb", "relative_checkpoint": str(nets["rgb"]),
                    "echo_checkpoint": str(nets["rgb_echo"])}
        if args.relative == "monodepth2":
            _, md2 = train_monodepth2(work, args.preset, args.seed, timings, "smoke" if args.smoke else "quick")
            frontend.update(relative="monodepth2", relative_checkpoint=str(md2), features_checkpoint=str(nets["rgb"]))
        heads = {"pixel_maps": ECHO_HEAD + args.overrides, "pixel_maps_rgb": RGB_HEAD + args.overrides}
        if args.loss_ablation:
            heads.update({f"pixel_maps_{k}": ECHO_HEAD + args.overrides + v for k, v in LOSS_ABLATION.items()})
        summaries = {}
        for name, extra in heads.items():
            run_dir = work / f"run_{name}"
            if run_dir.exists():
                shutil.rmtree(run_dir)
            config = head_config(frontend, max_depth, args.seed, head_steps, work / "cache", extra)
            t0 = time.perf_counter()
            summaries[name] = train_rescale(config, bag, run_dir, device="cpu")
            timings[f"train_{name}_s"] = time.perf_counter() - t0
        # The test scenes through the frozen networks once (the same front end every head was trained on).
        t0 = time.perf_counter()
        fe = RescaleFrontend(FrontendConfig.from_dict({**frontend, "max_depth": max_depth}))
        frames = frame_dataset(bag, "test", fe, max_depth, cache_dir=str(work / "cache"), skip_bad=True)
        test = precompute(frames, fe, min_depth, max_depth, flipped=False)
        gt = test.tensors["depth"]
        preds = {"global_median": global_median(test.tensors["relative"], test.tensors["pseudo_metric"], min_depth, max_depth)}
        maps = {}
        for name in heads:
            head, _ = EchoRescaleHead.from_checkpoint(work / f"run_{name}" / "checkpoints" / "last")
            out = predict_set(head, test)
            preds[name] = out["metric_depth"]
            if name == "pixel_maps":
                maps = out
        preds["avsnet_rgb_echo"] = test.tensors["pseudo_metric"]
        rows, per_image = {}, {}
        for name, pred in preds.items():
            rows[name], per_image[name] = score(pred, gt, min_depth, max_depth)
        timings["evaluate_s"] = time.perf_counter() - t0
        figures = save_figures(work / "figures", test, preds, maps, args.figures, max_depth) if args.figures else []
        timings["total_s"] = time.perf_counter() - started
        timings["cpu_s"] = time.process_time() - cpu_started
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    g, p, r = rows["global_median"], rows["pixel_maps"], rows["pixel_maps_rgb"]
    done = {"abs_rel_ratio": p["abs_rel"] / g["abs_rel"], "abs_rel_ok": p["abs_rel"] <= 0.85 * g["abs_rel"],
            "delta1_ok": p["delta1"] > max(g["delta1"], r["delta1"])}
    setup = {"preset": args.preset, "seed": args.seed, "relative": args.relative, "setting": "smoke" if args.smoke else "quick",
             **{k: list(v) if isinstance(v, tuple) else v for k, v in setting.items()}, "avsnet_steps": avsnet_steps,
             "head_steps": head_steps, "echo_head": ECHO_HEAD + args.overrides, "rgb_head": RGB_HEAD + args.overrides,
             "test_images": len(test), "torch_threads": torch.get_num_threads(),
             "timings": {k: round(v, 1) for k, v in timings.items()}, "done_when": done, "figures": figures,
             "head_train_samples_per_s": {k: s.get("train_samples_per_s") for k, s in summaries.items()},
             "images_with_nan_metric": {k: int(torch.isnan(v[:, 0]).sum()) for k, v in per_image.items()}}
    return {**rows, "setup": setup}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    rows = {k: v for k, v in result.items() if k != "setup"}
    print(esa.table(rows, names={}, first_column="Row"))
    s = result["setup"]
    print(f"done when: pixel_maps abs_rel / global_median = {s['done_when']['abs_rel_ratio']:.3f} "
          f"(<= 0.85: {s['done_when']['abs_rel_ok']}), delta1 above both: {s['done_when']['delta1_ok']}")
    print(f"timings: {s['timings']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(math.isfinite(v) for row in rows.values() for v in row.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
