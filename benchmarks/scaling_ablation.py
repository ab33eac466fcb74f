"""Table 2 on a simulated scale-ambiguous world: a relative depth model made metric with no scaling, with the Only-RGB
AVS-Net's scale and with the RGB-Echoes AVS-Net's scale (the AVS-Net paper's scaling ablation), and a Monodepth2 trained
with the RGB-Echoes AVS-Net's depth as a scale-aware pseudo-label, used as metres without scaling.

    .venv/bin/python benchmarks/scaling_ablation.py --quick [--preset bv1] [--seed S] [--out R.json] [--work DIR]

1. `avs-depth simulate --scale-ambiguous`: every sequence is one scene scaled by a log-uniform factor in [0.5, 2] (camera
   path included, intrinsics unchanged), so an image holds no absolute-scale cue while depth and echo delays scale.
   Splits are by sequence: the test scenes and their scales are never seen in training.
2. Training, in two lanes that run side by side (one CPU thread each), on the training sequences:
   lane 1: `avs-depth train --model monodepth2` (a subprocess) on the training sequences' frame triples;
   lane 2: AVS-Net RGB-Echoes, then Only-RGB, with the CPU recipe of benchmarks/echo_scale_ablation.py (same trainer,
   data, seed and steps; they differ only in use_echo);
   and once the RGB-Echoes AVS-Net is trained, the echo-supervised Monodepth2 (`avs-depth train --model monodepth2` with
   train.echo_supervision on that checkpoint, train/echo_supervision.py defaults, and model.echo_input stft: the DepthNet
   reads the echo and scales its depth by it; ECHO_SUPERVISED_OVERRIDES) as a
   further subprocess, so for a while three processes share the two cores.
   With --work DIR, a finished run of the same setting is reused instead of trained again (delete it to retrain).
3. `evaluate-scaling` on the test sequences (avs_depth_core.evaluation.echo_scaling.evaluate_scaling), printed as
   markdown for every model; --out R.json gets the rows (evaluation.echo_scaling.ablation_rows) none, rgb, rgb_echo
   (Monodepth2 median-scaled by nothing, the Only-RGB and the RGB-Echoes AVS-Net), echo_supervised (the echo-supervised
   DepthNet with the echo as input, no scaling), gt_median (Monodepth2 scaled by the ground truth's median: its shape)
   and constant_gt_median (a constant map scaled the same way: no shape at all), each with the seven metrics,
   scale_log_error = mean |log(median(pred) / median(gt))|, scale_factor_log_error = mean |log| ratio of the row's scale
   to the GT-median scale, and fallbacks; R.details.json the setting, timings, every model's rows and the training summaries.

The paper reports RGB-Echoes scaling ahead of RGB scaling for all six relative models (about +0.07 to +0.09 delta1), and
both far ahead of no scaling. Here the scale of an image is unknowable from RGB alone by construction: a scale known only
up to a log-uniform factor of 4 puts the ratio within 1.25 for about ln(1.25^2)/ln(4) = 0.32 of the frames, whatever the
shape, while the echo's delays carry the scale.

CPU-sized setting (deviations from the paper, each stated): 64x128 images at 2 Hz, rendered with 4 x 4 samples per
pixel (`simulate --supersample 4`: one nearest texel per pixel aliases, and the photometric loss then barely tells the
true depth from a constant one) and with the camera's attitude recorded (`simulate --imu`); Monodepth2 (ResNet-18 at a quarter
of its channel width, from random initialisation: no ImageNet weights offline) on triples 0.5 s apart (frame_interval 1 at
2 Hz; the paper's 20 frames are a camera-rate choice, and 2 s of motion with turns of up to 60 degrees proved too hard to
learn from scratch in this budget), Adam lr 3e-4, depth units [0.01, 10] (see MONODEPTH2_OVERRIDES), batch 12, 16
epochs with StepLR at 12 (Monodepth2's 20 and 15, shortened), and the rotation between frames from the IMU
(model.pose_prior imu; PoseNet predicts the translation): from random initialisation PoseNet never learnt the 3-5 degree
turns per frame pair in this budget, and without them DepthNet learnt no shape (benchmarks/monodepth2_diagnostics.py,
README); AVS-Net as in echo_scale_ablation.py. Compare the gt_median row with constant_gt_median to see how much shape
Monodepth2 learnt. The scaled rows share its shape, so their differences come from the scale alone.
--quick takes about 20 minutes on 2 otherwise idle CPU cores (budget 30; each run's CPU time is printed, and a wall
clock or a CPU time per core over 30 minutes is warned about; on a shared machine the wall-clock time is longer).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from echo_scale_ablation import config_for  # noqa: E402

from avs_depth_core.cli import main as avs_depth  # noqa: E402
from avs_depth_core.data.datasets import SupervisedBagDataset  # noqa: E402
from avs_depth_core.evaluation.echo_scaling import (  # noqa: E402
    ABLATION_ROWS,
    ablation_rows,
    evaluate_scaling,
    load_avsnets,
    markdown_table,
)
from avs_depth_core.relative import RelativeDepthModel  # noqa: E402
from avs_depth_core.sim.presets import get_preset  # noqa: E402
from avs_depth_core.train.avsnet import train_avsnet  # noqa: E402

# The robot's camera and IMU (benchmarks/monodepth2_diagnostics.py found why Monodepth2 learnt no shape here without
# them): supersample 4 averages 4 x 4 samples per pixel like a real sensor's pixel area (one nearest texel per pixel
# aliases: true depth then beats a constant depth by only 1.4x in photometric error, 1.9x at 4x); imu records the
# camera's attitude, which model.pose_prior imu gives PoseNet (it never learnt the turns of 2.7-4.8 degrees per pair).
CAMERA = {"supersample": 4, "imu": True}
# Per setting: the simulated bag, the Monodepth2 run and the AVS-Net runs.
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        # 120 sequences (90 for training, 1800 frames): at 60 Monodepth2 learnt too little shape on bv1 (GT-median delta1
        # 0.05-0.10 above a constant map, 0.13-0.16 at 120; README "Table 2").
        "sim": {"sequences": 120, "frames": 20, "splits": [0.75, 0.0, 0.25], "height": 64, "width": 128, "rate_hz": 2.0,
                **CAMERA},
        # 24 epochs (lr step at 18) and decoder widths at half Monodepth2's [16..256] (here [8..128], twice the
        # encoder-width fraction) on bv1 (session 11, Monodepth2 alone, GT-median delta1 over a constant map): seed 202
        # +0.133 (16 epochs) -> +0.145 (24) / +0.143 (decoder) -> +0.160 (both); seed 101 +0.160 -> +0.208. Not: the
        # full decoder [16..256] (+0.125), 96x192 frames (+0.108 at 16 epochs, 2.5x CPU). The echo-supervised run keeps
        # 16 epochs (echo_supervised), which its criterion does not need more of, to stay inside the 30 minutes.
        "monodepth2": {"frame_interval": 1, "encoder_width": 16, "num_epochs": 24, "scheduler_step_size": 18,
                       "decoder_channels": [8, 16, 32, 64, 128], "pose_prior": "imu"},
        "echo_supervised": {"num_epochs": 16, "scheduler_step_size": 12},
        "avsnet": {"steps": 800},
    },
    # Only checks that the script runs end to end in about a minute; its numbers mean nothing.
    "smoke": {
        "sim": {"sequences": 8, "frames": 6, "splits": [0.75, 0.0, 0.25], "height": 64, "width": 128, "rate_hz": 2.0,
                **CAMERA},
        "monodepth2": {"frame_interval": 1, "encoder_width": 8, "num_epochs": 1, "scheduler_step_size": 1,
                       "pose_prior": "imu"},
        "avsnet": {"steps": 2},
    },
    "full": {
        "sim": {"sequences": 200, "frames": 30, "splits": [0.75, 0.0, 0.25], "height": 64, "width": 128, "rate_hz": 2.0,
                **CAMERA},
        "monodepth2": {"frame_interval": 1, "encoder_width": 32, "num_epochs": 20, "scheduler_step_size": 15,
                       "pose_prior": "imu"},
        "avsnet": {"steps": 4000},
    },
}
# Deviations from config/monodepth2.yaml for a small network trained from random initialisation on CPU.
MONODEPTH2_OVERRIDES = {
    # Monodepth2's 1e-4 is for an ImageNet-initialised encoder; from random initialisation 3e-4 learns faster and stays
    # stable (1e-3 collapsed to a constant disparity in trials).
    "learning_rate": 3e-4,
    # Depth units: PoseNet's translations start near 0.01 (its x0.01 output scale); with Monodepth2's [0.1, 100] range the
    # initial depth (0.2 units, sigmoid 0.5) then implies ten times too little parallax for 0.5 s of indoor motion and the
    # disparity saturates at its maximum. [0.01, 10] starts at a plausible parallax; the output is relative either way.
    "min_depth": 0.01,
    "max_depth": 10.0,
    "batch_size": 12,  # Monodepth2
}
# The echo-supervised DepthNet (train/echo_supervision.py, its config defaults) predicts metres, so its range must hold
# the scenes' (up to 30 m): Monodepth2's own [0.1, 100] instead of the relative run's [0.01, 10]. model.echo_input stft:
# the DepthNet reads the echo (the teacher's STFT features) and predicts a per-image log scale from it; without it an
# RGB-only DepthNet in this scale-ambiguous world can only learn the training scenes' typical scale (README).
ECHO_SUPERVISED_OVERRIDES = {"min_depth": 0.1, "max_depth": 100.0, "echo_input": "stft"}
MODEL_NAMES = {"monodepth2": "monodepth2", "constant": "constant (reference)", "echo_supervised": "echo_supervised"}
QUICK_BUDGET_S = 30 * 60  # the budget per preset on 2 cores


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the 20-minute CPU setting (default: the full setting)")
    p.add_argument("--smoke", action="store_true", help="a setting of about a minute that only checks the script runs")
    p.add_argument("--preset", default="bv1", help="simulator preset (bv1: offices, 12 m; bv2: halls, 30 m)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated world and of training")
    p.add_argument("--out", type=Path, default=None, help="write the three rows as JSON here (and R.details.json beside it)")
    p.add_argument("--work", type=Path, default=None,
                   help="bag, caches and runs (default runs/scaling_ablation/<preset>-seed<S>-<setting>); "
                        "finished runs are reused")
    p.add_argument("--avsnet-steps", type=int, default=None, help="override the AVS-Net optimiser steps of the setting")
    p.add_argument("--md2-epochs", type=int, default=None, help="override the Monodepth2 epochs of the setting")
    p.add_argument("--sequences", type=int, default=None,
                   help="override the simulated sequences of the setting (the splits stay 75 %% training, 25 %% test)")
    p.add_argument("--md2-set", dest="md2_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a Monodepth2 model key for both Monodepth2 runs, after the setting's (e.g. frame_interval=2)")
    p.add_argument("--figures", type=int, default=0, metavar="N", help="also write N Fig.-5 PNGs to <work>/figures")
    return p.parse_args(argv)


def parse_md2_overrides(items: list[str]) -> dict[str, Any]:
    """--md2-set KEY=VALUE items -> {key: YAML value}; a key Monodepth2Config does not have is an error."""
    from dataclasses import fields

    from avs_depth_core.models.monodepth2 import Monodepth2Config

    known = {f.name for f in fields(Monodepth2Config)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise SystemExit(f"--md2-set {item!r}: expected KEY=VALUE with KEY a Monodepth2 model key "
                             f"(config/monodepth2.yaml model:), e.g. frame_interval=2")
        out[key] = yaml.safe_load(value)
    return out


def simulate(bag: Path, preset: str, seed: int, s: dict[str, Any], world: str = "--scale-ambiguous") -> float:
    """`avs-depth simulate` of setting s into bag (world: --scale-ambiguous here, --dynamic for the dynamic ablation)."""
    start = time.perf_counter()
    code = avs_depth(["simulate", "--preset", preset, "--sequences", str(s["sequences"]), "--frames", str(s["frames"]),
                      "--seed", str(seed), "--out", str(bag), "--height", str(s["height"]), "--width", str(s["width"]),
                      "--rate", str(s["rate_hz"]), world, "--splits", *map(str, s["splits"]),
                      "--supersample", str(s.get("supersample", 1)), *(["--imu"] if s.get("imu") else [])])
    if code != 0:
        raise SystemExit(f"simulation failed (exit {code})")
    return time.perf_counter() - start


def ensure_bag(work: Path, preset: str, seed: int, sim: dict[str, Any], world: str = "--scale-ambiguous") -> float | None:
    """<work>/bag simulated with `sim` (seconds) or reused (None) when <work>/bag_key.json holds the same world settings;
    a bag of other settings, or one without the key (a work folder from before it), stops the run instead of being
    reused."""
    bag, bag_key = work / "bag", work / "bag_key.json"
    key = {"preset": preset, "seed": seed, **sim}
    if bag.exists() and bag_key.is_file() and json.loads(bag_key.read_text()) == key:
        print(f"reusing {bag}", file=sys.stderr)
        return None
    if bag.exists():
        raise SystemExit(f"{bag} was simulated with other settings than {key} (see {bag_key}); remove it and the runs "
                         f"beside it, or use another --work")
    seconds = simulate(bag, preset, seed, sim, world)
    bag_key.write_text(json.dumps(key))
    return seconds


def monodepth2_config(preset: str, seed: int, setting: dict[str, Any], cache: Path) -> dict[str, Any]:
    sim, md2 = setting["sim"], dict(setting["monodepth2"])
    width = md2.pop("encoder_width")
    # Monodepth2's decoder widths [16, 32, 64, 128, 256] at the encoder's fraction of 64 channels, at least 4.
    decoder = [max(4, c * width // 64) for c in (16, 32, 64, 128, 256)]
    model = {"height": sim["height"], "width": sim["width"], "encoder_width": width, "decoder_channels": decoder,
             **MONODEPTH2_OVERRIDES, **md2}
    return {"model": model,
            "train": {"seed": seed, "num_workers": 0, "validate": False, "log_every": 25},
            # Monodepth2 never reads the echo, but the bag cache decodes it; a clipped one (a box right at the speaker)
            # is then dropped and counted instead of stopping the run.
            "data": {"max_depth": get_preset(preset).max_depth, "cache_dir": str(cache), "skip_bad": True}}


def echo_supervised_config(config: dict[str, Any], teacher: Path,
                           overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The relative run's config with echo supervision by the RGB-Echoes AVS-Net at `teacher` (ECHO_SUPERVISED_OVERRIDES,
    then the setting's own `overrides` of the model keys)."""
    out = json.loads(json.dumps(config))
    out["model"].update({**ECHO_SUPERVISED_OVERRIDES, **(overrides or {})})
    out["train"]["echo_supervision"] = {"checkpoint": str(teacher)}
    return out


def finished(run_dir: Path, key: dict[str, Any]) -> bool:
    """A run of this exact setting completed earlier (its key file matches and it wrote summary.json)."""
    key_file = run_dir / "benchmark_key.json"
    return (run_dir / "summary.json").is_file() and key_file.is_file() and \
        json.loads(key_file.read_text()) == json.loads(json.dumps(key))


def clear_run(run_dir: Path) -> None:
    """An unfinished or differently configured run is started afresh (the trainers refuse to overwrite a run)."""
    if run_dir.exists():
        print(f"removing {run_dir}: not a finished run of this setting", file=sys.stderr)
        shutil.rmtree(run_dir)


def start_monodepth2(bag: Path, run_dir: Path, config: dict[str, Any], key: dict[str, Any]) -> subprocess.Popen | None:
    """Lane 1: `avs-depth train --model monodepth2` in a single-threaded subprocess; None when a finished run is reused."""
    if finished(run_dir, key):
        print(f"reusing {run_dir}", file=sys.stderr)
        return None
    clear_run(run_dir)
    run_dir.mkdir(parents=True)
    config_path = run_dir.parent / f"{run_dir.name}_benchmark.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    log = (run_dir.parent / f"{run_dir.name}_train.log").open("w")
    cmd = [sys.executable, "-m", "avs_depth_core.cli", "train", "--model", "monodepth2", "--bag", str(bag), "--config",
           str(config_path), "--out", str(run_dir), "--device", "cpu"]
    print(f"lane 1: {' '.join(cmd[2:])} (log {log.name})", file=sys.stderr)
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def train_avsnets(bag: Path, work: Path, preset: str, seed: int, s: dict[str, Any], steps: int, key: dict[str, Any],
                  after_rgb_echo: Callable[[], None] | None = None) -> dict[str, dict[str, Any]]:
    """Lane 2: RGB-Echoes then Only-RGB AVS-Net in this process (one thread); `after_rgb_echo` runs once the RGB-Echoes
    checkpoint is there (it starts the echo-supervised Monodepth2, which learns from it)."""
    summaries = {}
    for name, use_echo in (("rgb_echo", True), ("rgb", False)):
        if name == "rgb" and after_rgb_echo is not None:
            after_rgb_echo()
        run_dir = work / f"run_avsnet_{name}"
        run_key = {**key, "use_echo": use_echo}
        if finished(run_dir, run_key):
            print(f"reusing {run_dir}", file=sys.stderr)
            summaries[name] = json.loads((run_dir / "summary.json").read_text())
            continue
        clear_run(run_dir)
        config = config_for(preset, seed, s, steps, use_echo, work / "cache", [])
        cpu = time.process_time()
        summaries[name] = train_avsnet(config, bag, run_dir, device="cpu")
        summaries[name]["cpu_seconds"] = time.process_time() - cpu
        (run_dir / "summary.json").write_text(json.dumps(summaries[name], indent=2) + "\n")
        (run_dir / "benchmark_key.json").write_text(json.dumps(run_key))
    return summaries


def wait_monodepth2(proc: subprocess.Popen | None, run_dir: Path, key: dict[str, Any]) -> dict[str, Any]:
    """A Monodepth2 lane's summary, with the subprocess's CPU seconds (kept in the run folder for reuse)."""
    if proc is not None:
        before = os.times()  # children's CPU counts only once waited for: the difference is this one's
        code = proc.wait()
        if code != 0:
            raise SystemExit(f"Monodepth2 training failed (exit {code}); see {run_dir.parent / (run_dir.name + '_train.log')}")
        usage = os.times()
        cpu = usage.children_user + usage.children_system - before.children_user - before.children_system
        (run_dir / "benchmark_cpu.json").write_text(json.dumps({"cpu_seconds": cpu}))
        (run_dir / "benchmark_key.json").write_text(json.dumps(key))
    summary = json.loads((run_dir / "summary.json").read_text())
    cpu_file = run_dir / "benchmark_cpu.json"
    summary["cpu_seconds"] = json.loads(cpu_file.read_text())["cpu_seconds"] if cpu_file.is_file() else math.nan
    return summary


def train_all(args: argparse.Namespace, work: Path, bag: Path, setting: dict[str, Any], sim_key: dict[str, Any],
              timings: dict[str, float]) -> dict[str, Any]:
    """Lane 1: Monodepth2, then (once lane 2's RGB-Echoes AVS-Net exists) the echo-supervised Monodepth2; lane 2: the
    AVS-Nets. Returns the summaries and the Monodepth2 configs."""
    md2_dir, echo_dir = work / "run_monodepth2", work / "run_monodepth2_echo_supervised"
    md2_config = monodepth2_config(args.preset, args.seed, setting, work / "cache")
    md2_key = {**sim_key, "config": md2_config}
    echo_config = echo_supervised_config(md2_config, work / "run_avsnet_rgb_echo" / "checkpoints" / "last",
                                         setting.get("echo_supervised"))
    echo_key = {**sim_key, "config": echo_config, "teacher": {**setting["avsnet"], "use_echo": True}}
    t0 = time.perf_counter()
    proc = start_monodepth2(bag, md2_dir, md2_config, md2_key)
    echo_proc: list[subprocess.Popen | None] = []
    avsnets = train_avsnets(bag, work, args.preset, args.seed, setting["sim"], setting["avsnet"]["steps"],
                            {**sim_key, **setting["avsnet"]},
                            after_rgb_echo=lambda: echo_proc.append(start_monodepth2(bag, echo_dir, echo_config, echo_key)))
    timings["lane2_avsnet_s"] = time.perf_counter() - t0
    monodepth2 = wait_monodepth2(proc, md2_dir, md2_key)
    timings["lane1_monodepth2_s"] = time.perf_counter() - t0
    echo_supervised = wait_monodepth2(echo_proc[0] if echo_proc else None, echo_dir, echo_key)
    timings["echo_supervised_monodepth2_s"] = time.perf_counter() - t0
    timings["train_wall_s"] = time.perf_counter() - t0
    return {"monodepth2": monodepth2, "echo_supervised": echo_supervised, "avsnets": avsnets, "md2_config": md2_config,
            "echo_config": echo_config, "md2_dir": md2_dir, "echo_dir": echo_dir}


def evaluate(args: argparse.Namespace, work: Path, bag: Path, trained: dict[str, Any]
             ) -> tuple[dict[str, dict[str, dict[str, Any]]], Any]:
    """evaluate_scaling on the test split: Monodepth2 (relative), a constant map and the echo-supervised DepthNet."""
    device = torch.device("cpu")
    echo_net, rgb_net = load_avsnets(work / "run_avsnet_rgb_echo" / "checkpoints" / "last",
                                     work / "run_avsnet_rgb" / "checkpoints" / "last", device)
    # A constant map as a further "relative model": its GT-median row is the no-shape baseline for Monodepth2's.
    relative = {MODEL_NAMES["monodepth2"]: RelativeDepthModel.monodepth2(trained["md2_dir"] / "checkpoints" / "last", device),
                MODEL_NAMES["constant"]: RelativeDepthModel.from_callable(lambda x: torch.ones_like(x[:, :1]), "depth",
                                                                          name="constant"),
                MODEL_NAMES["echo_supervised"]: RelativeDepthModel.monodepth2(trained["echo_dir"] / "checkpoints" / "last",
                                                                              device)}
    if not relative[MODEL_NAMES["echo_supervised"]].is_metric:
        raise SystemExit(f"{trained['echo_dir']}: the echo-supervised checkpoint does not say depth_units metres")
    cfg = echo_net.cfg
    test = SupervisedBagDataset(bag, split="test", image_size=cfg.image_size, max_depth=cfg.max_depth, echo_size=cfg.echo_size,
                                stft=cfg.stft, speed_of_sound=cfg.speed_of_sound, sample_rate=cfg.sample_rate,
                                cache_dir=work / "cache", skip_bad=True, verbose=False)
    figure_indices = tuple(round(i * (len(test) - 1) / max(1, args.figures - 1)) for i in range(args.figures))
    results, records = evaluate_scaling(test, relative, echo_net, rgb_net, device, cfg.min_depth, cfg.max_depth,
                                        batch_size=16, figure_indices=figure_indices)
    if records:
        from avs_depth_core.evaluation.echo_scaling import save_scaling_figure

        for rec in records:
            save_scaling_figure(work / "figures" / f"{rec['index']:05d}.png", rec, "monodepth2", cfg.min_depth, cfg.max_depth)
    return results, cfg


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    setting = json.loads(json.dumps(SETTINGS[name]))
    if args.avsnet_steps:
        setting["avsnet"]["steps"] = args.avsnet_steps
    if args.md2_epochs:
        setting["monodepth2"]["num_epochs"] = args.md2_epochs
    setting["monodepth2"].update(parse_md2_overrides(args.md2_overrides))
    if args.sequences:
        setting["sim"]["sequences"] = args.sequences
    work = args.work or ROOT / "runs" / "scaling_ablation" / f"{args.preset}-seed{args.seed}-{name}"
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    bag = work / "bag"
    sim_key = {"preset": args.preset, "seed": args.seed, **setting["sim"]}
    simulated = ensure_bag(work, args.preset, args.seed, setting["sim"])
    if simulated is not None:
        timings["simulate_s"] = simulated
    trained = train_all(args, work, bag, setting, sim_key, timings)
    t0 = time.perf_counter()
    results, _ = evaluate(args, work, bag, trained)
    timings["evaluate_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started
    cpu = {"lane1_monodepth2_cpu_s": trained["monodepth2"]["cpu_seconds"],
           "echo_supervised_monodepth2_cpu_s": trained["echo_supervised"]["cpu_seconds"],
           "lane2_avsnet_cpu_s": sum(s.get("cpu_seconds", math.nan) for s in trained["avsnets"].values()),
           "main_process_cpu_s": time.process_time()}
    rows = ablation_rows(results, MODEL_NAMES["monodepth2"], constant=MODEL_NAMES["constant"],
                         echo_supervised=MODEL_NAMES["echo_supervised"])
    details = {"preset": args.preset, "seed": args.seed, "setting": name, **setting,
               "test_images": results[MODEL_NAMES["monodepth2"]]["none"]["images"],
               "monodepth2_config": trained["md2_config"], "echo_supervised_config": trained["echo_config"],
               "timings": {k: round(v, 1) for k, v in timings.items()}, "cpu_times": {k: round(v, 1) for k, v in cpu.items()},
               "delta1_gain_echo_over_rgb": rows["rgb_echo"]["delta1"] - rows["rgb"]["delta1"],
               "delta1_gain_echo_supervised_over_rgb": rows["echo_supervised"]["delta1"] - rows["rgb"]["delta1"],
               "delta1_gain_shape_over_constant": rows["gt_median"]["delta1"] - rows["constant_gt_median"]["delta1"],
               # the echo-supervised DepthNet's own shape (its depth scaled by the GT median), beside its metres
               "echo_supervised_gt_median": results[MODEL_NAMES["echo_supervised"]]["gt_median"],
               "all_rows": results, "monodepth2_summary": trained["monodepth2"],
               "echo_supervised_summary": trained["echo_supervised"], "avsnet_summaries": trained["avsnets"],
               "work": str(work)}
    return {"rows": rows, "table": markdown_table(results), "details": details}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    d = result["details"]
    sim, md2 = d["sim"], d["monodepth2_config"]["model"]
    print(f"\nScaling ablation (Table 2): preset {d['preset']}, seed {d['seed']}, {d['setting']} setting, {sim['sequences']} "
          f"sequences x {sim['frames']} frames at {sim['height']}x{sim['width']}, {d['test_images']} test images from held-out "
          f"sequences; relative model Monodepth2 ({md2['num_epochs']} epochs, {d['monodepth2_summary']['steps']} steps), "
          f"AVS-Net {d['avsnet']['steps']} steps each")
    print(result["table"])
    print(f"delta1 gains: RGB-Echoes over RGB scaling {d['delta1_gain_echo_over_rgb']:+.3f}; echo-supervised DepthNet "
          f"(unscaled) over RGB scaling {d['delta1_gain_echo_supervised_over_rgb']:+.3f}; Monodepth2's shape over a "
          f"constant map (both GT-median scaled) {d['delta1_gain_shape_over_constant']:+.3f}")
    shape = d["echo_supervised_gt_median"]
    print(f"echo-supervised DepthNet's shape (GT-median scaled): abs_rel {shape['abs_rel']:.3f}, delta1 {shape['delta1']:.3f}")
    print("scale_log_error (mean |log(median(pred) / median(gt))|): " +
          ", ".join(f"{row} {result['rows'][row]['scale_log_error']:.3f}" for row in ABLATION_ROWS))
    print("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in d["timings"].items()))
    print("CPU time: " + ", ".join(f"{k} {v:.0f} s" for k, v in d["cpu_times"].items()))
    # The Monodepth2, echo-supervised and AVS-Net runs overlap, so the budget is checked on the wall clock and on the
    # CPU time of every process spread over the 2 cores (what an idle 2-core machine would need).
    cpu_over_cores = sum(d["cpu_times"].values()) / 2
    if args.quick and max(d["timings"]["total_s"], cpu_over_cores) > QUICK_BUDGET_S:
        print(f"warning: --quick took {d['timings']['total_s']:.0f} s wall and {cpu_over_cores:.0f} s of CPU per core, "
              f"over its {QUICK_BUDGET_S} s budget", file=sys.stderr)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result["rows"], indent=2) + "\n")
        details_path = args.out.with_name(args.out.stem + ".details.json")
        details_path.write_text(json.dumps(d, indent=2, default=str) + "\n")
        print(f"wrote {args.out} and {details_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
