"""Does acoustic domain randomisation help the echo branch transfer to a real recording, and what does it cost on the
simulator? AVS-Net RGB-Echoes trained twice with the same recipe, budget and seed, once on the plain simulated world
and once on the same world with `--randomise-acoustics` (same scenes, paths and images; only the echoes differ).

    .venv/bin/python benchmarks/acoustic_randomisation_ablation.py --quick [--seed S] [--work DIR] [--out results.json]

1. `avs-depth simulate --preset bv2 --scale-ambiguous` (or --preset bv1) twice (plain; --randomise-acoustics with
   config/sim_acoustics.yaml).
2. `avs-depth train` (config/avsnet_bundled.yaml, the bundled model's recipe, at the images' 64x128; the last checkpoint).
3. Each model on the held-out test sequences of both worlds (Table-1 metrics) and on the real BatVision V2 sample
   (benchmarks/real_sample_transfer.py: median(pred) / median(gt); its depth is only read to score).
--quick is the CPU setting of benchmarks/echo_scale_ablation.py (80 sequences x 12 frames, 600 steps).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from real_sample_transfer import SAMPLE  # noqa: E402
from real_sample_transfer import run as transfer  # noqa: E402

from avs_depth_core.cli import main as avs_depth  # noqa: E402
from avs_depth_core.config import apply_overrides  # noqa: E402
from avs_depth_core.evaluation import evaluate_model  # noqa: E402
from avs_depth_core.models.avsnet import AVSNet  # noqa: E402
from avs_depth_core.train.avsnet import build_dataset, resolve_config, train_avsnet  # noqa: E402

SETTINGS = {
    "quick": {"sequences": 80, "frames": 12, "splits": (0.7, 0.05, 0.25), "height": 64, "width": 128, "steps": 600},
    "full": {"sequences": 200, "frames": 20, "splits": (0.7, 0.05, 0.25), "height": 64, "width": 128, "steps": 6000},
}
METRICS = ("abs_rel", "rmse", "delta1")
WORLDS = {"plain": [], "randomised": ["--randomise-acoustics"]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the CPU setting (default: the full setting)")
    p.add_argument("--preset", default="bv2", help="simulator preset (bv2: halls, 30 m; bv1: offices, 12 m)")
    p.add_argument("--seed", type=int, default=0, help="seed of both worlds and of training")
    p.add_argument("--steps", type=int, default=None, help="override the optimiser steps of the setting")
    p.add_argument("--work", type=Path, default=None, help="keep bags, caches and runs here (default: a temporary folder)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="further config overrides for both runs (e.g. model.echo_range_profile=true)")
    return p.parse_args(argv)


def simulate(bag: Path, preset: str, seed: int, s: dict[str, Any], extra: list[str]) -> None:
    if bag.exists():
        return
    code = avs_depth(["simulate", "--preset", preset, "--scale-ambiguous", "--sequences", str(s["sequences"]),
                      "--frames", str(s["frames"]), "--seed", str(seed), "--height", str(s["height"]),
                      "--width", str(s["width"]), "--splits", *map(str, s["splits"]), "--out", str(bag), *extra])
    if code != 0:
        raise SystemExit(f"simulation failed (exit {code})")


def config_for(seed: int, s: dict[str, Any], steps: int, cache: Path, extra: list[str]) -> dict[str, Any]:
    base = yaml.safe_load((ROOT / "config" / "avsnet_bundled.yaml").read_text())
    return apply_overrides(base, [f"model.image_size=[{s['height']}, {s['width']}]", "model.echo_size=null",
                                  f"train.seed={seed}", f"train.max_steps={steps}", "train.epochs=1000",
                                  "train.validate=false", "train.num_workers=0", "train.log_every=50",
                                  f"data.cache_dir={cache}", *extra])


def evaluate(checkpoint: Path, bag: Path, config: dict[str, Any]) -> dict[str, float]:
    model_cfg, _, data_cfg = resolve_config(config)
    model = AVSNet.from_checkpoint(checkpoint, "cpu")
    test = build_dataset(bag, "test", model_cfg, data_cfg, verbose=False)
    result = evaluate_model(model, DataLoader(test, batch_size=16), torch.device("cpu"), data_cfg.min_depth,
                            data_cfg.max_depth, desc="test")
    return {m: float(result.metrics[m]) for m in METRICS}


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    setting = dict(SETTINGS["quick" if args.quick else "full"])
    steps = args.steps or setting["steps"]
    work = args.work or Path(tempfile.mkdtemp(prefix="acoustic_randomisation_"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    try:
        bags = {world: work / f"{args.preset}_{world}_seed{args.seed}" for world in WORLDS}
        for world, extra in WORLDS.items():
            simulate(bags[world], args.preset, args.seed, setting, extra)
        for world in WORLDS:
            config = config_for(args.seed, setting, steps, work / f"cache_{world}", args.overrides)
            tag = "".join(f"_{o.replace('=', '-')}" for o in args.overrides)
            run_dir = work / f"run_{args.preset}_{world}{tag}"
            checkpoint = run_dir / "checkpoints" / "last"
            if not (run_dir / "checkpoints" / "last.safetensors").exists():
                shutil.rmtree(run_dir, ignore_errors=True)
                train_avsnet(config, bags[world], run_dir, device="cpu")
            tests = {f"test_{other}": evaluate(checkpoint, bags[other],
                                               config_for(args.seed, setting, steps, work / f"cache_{other}",
                                                          args.overrides))
                     for other in WORLDS}
            (real,) = transfer(argparse.Namespace(checkpoint=[checkpoint], sample=SAMPLE, index="47", emission_offset=[0]))
            results[world] = {**tests, "real_sample": real}
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    setup = {"preset": args.preset, "overrides": args.overrides, "seed": args.seed, "quick": args.quick, **setting,
             "steps": steps, "total_s": round(time.perf_counter() - started, 1)}
    return {"results": results, "setup": setup}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = run(args)
    print("| trained on | plain test delta1 | plain test abs_rel | randomised test delta1 | randomised test abs_rel | "
          "real sample median ratio | real delta1 median-scaled |")
    print("|---|---|---|---|---|---|---|")
    for world, r in out["results"].items():
        print(f"| {world} | {r['test_plain']['delta1']:.3f} | {r['test_plain']['abs_rel']:.3f} | "
              f"{r['test_randomised']['delta1']:.3f} | {r['test_randomised']['abs_rel']:.3f} | "
              f"{r['real_sample']['ratio']:.3f} | {r['real_sample']['delta1_median_scaled']:.3f} |")
    print(f"setup: {json.dumps(out['setup'])}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
