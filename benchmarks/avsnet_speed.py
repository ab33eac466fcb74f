"""AVS-Net forward speed.

    .venv/bin/python benchmarks/avsnet_speed.py                      # Only-RGB vs RGB-Echo, CPU fp32 (+ CUDA when present)
    .venv/bin/python benchmarks/avsnet_speed.py --iters 3 --batch-sizes 1 --devices cpu
    .venv/bin/python benchmarks/avsnet_speed.py --paper-size --out R.json   # backends side by side (see below)

Default mode: Only-RGB (ZoeDepth) vs RGB-Echo at 256x512. Targets (H100): midas_small AVS-Net >= 200 frames/s at
batch 1 in fp16; the echo branch adds <= 15 % over Only-RGB. Timed: AVSNet.forward under torch.inference_mode (input checks
included), inputs already on the device; median of --iters. fp16-autocast keeps fp32 weights (what AVSNet.predict(fp16=True)
does); fp16 converts the weights to half.

--paper-size: the paper-size RGB-Echoes model (midas_small, 256x512) on a simulated frame, batch 1, rows
torch_reference (today's forward: ZoeDepth's literal final stage), torch_fast (ConditionalLogBinomial.expected_depth),
onnxruntime (the fast model exported by avs_depth_core.export, CPU provider) and onnxruntime_reference_head (the
reference exported, for the record), each with latency_ms, cpu_ms and max_abs_diff_m against torch_reference; with a GPU
also CUDA fp32 / fp16-autocast and ONNX Runtime CUDA / TensorRT rows. Rows are timed interleaved, one forward each per round
for --repeats rounds, so a load change on a shared machine hits every row alike; the speed-up is the median of per-round
ratios. Per-module times come from forward hooks (torch) and ONNX Runtime's profiler. Target: on 2 CPU cores the fastest
path >= 2.5x today's torch forward with outputs within 1e-3 m.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avs_depth_core.models.avsnet import AVSNet, AVSNetConfig

TARGET_FPS_FP16_B1 = 200.0
TARGET_ECHO_OVERHEAD = 0.15


def time_forward(model: AVSNet, rgb: torch.Tensor, echo: torch.Tensor | None, iters: int, warmup: int,
                 autocast: bool) -> list[float]:
    device = rgb.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode(), torch.autocast(device_type=device.type, dtype=torch.float16, enabled=autocast):
        for i in range(warmup + iters):
            sync()
            start = time.perf_counter()
            model(rgb, echo)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return times


def run(args: argparse.Namespace) -> list[dict]:
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if "cuda" in devices and not torch.cuda.is_available():
        raise SystemExit("--devices cuda: no CUDA device here")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    h, w = args.size
    rows = []
    header = (f"{'device':<6} {'precision':<14} {'batch':>5} {'variant':<9} {'latency ms':>11} {'p90 ms':>8} {'frames/s':>9} "
              f"{'echo +%':>8}")
    print(f"AVS-Net speed, backbone {args.backbone}, input {h}x{w}, echo {h}x{w}, median of {args.iters} "
          f"(warm-up {args.warmup}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if "cuda" in devices:
        print(f"GPU: {torch.cuda.get_device_name()}")
    print(header)
    print("-" * len(header))
    for device_name in devices:
        device = torch.device(device_name)
        precisions = ["fp32"] if device.type == "cpu" else ["fp32", "fp16-autocast", "fp16"]
        models = {}
        for use_echo in (False, True):
            torch.manual_seed(0)
            cfg = AVSNetConfig(backbone=args.backbone, image_size=(h, w), use_echo=use_echo, max_depth=30.0)
            models[use_echo] = AVSNet(cfg).to(device).eval()
        for precision in precisions:
            for batch in args.batch_sizes:
                rgb = torch.rand(batch, 3, h, w, device=device)
                echo = torch.rand(batch, 2, h, w, device=device)
                base = None
                for use_echo in (False, True):
                    model = models[use_echo]
                    x, e = rgb, echo if use_echo else None
                    if precision == "fp16":
                        model = model.half()
                        x, e = x.half(), (e.half() if e is not None else None)
                    times = time_forward(model, x, e, args.iters, args.warmup, autocast=precision == "fp16-autocast")
                    if precision == "fp16":
                        model.float()
                    median = statistics.median(times)
                    p90 = sorted(times)[min(len(times) - 1, int(0.9 * len(times)))]
                    overhead = None if base is None else median / base - 1.0
                    base = median if base is None else base
                    row = {"device": device_name, "precision": precision, "batch": batch,
                           "variant": "RGB-Echo" if use_echo else "Only-RGB", "latency_ms": 1e3 * median, "p90_ms": 1e3 * p90,
                           "fps": batch / median, "echo_overhead": overhead}
                    rows.append(row)
                    over = "" if overhead is None else f"{100 * overhead:+.1f}"
                    print(f"{device_name:<6} {precision:<14} {batch:>5} {row['variant']:<9} {row['latency_ms']:>11.2f} "
                          f"{row['p90_ms']:>8.2f} {row['fps']:>9.2f} {over:>8}", flush=True)
    cuda_fp16 = [r for r in rows if r["device"] == "cuda" and r["precision"].startswith("fp16") and r["batch"] == 1
                 and r["variant"] == "RGB-Echo"]
    if cuda_fp16 and args.backbone == "midas_small":
        best = max(cuda_fp16, key=lambda r: r["fps"])
        overhead = next(r["echo_overhead"] for r in rows if r["device"] == "cuda" and r["precision"] == best["precision"]
                        and r["batch"] == 1 and r["variant"] == "RGB-Echo")
        print(f"\ntargets (H100): RGB-Echo fp16 batch 1: {best['fps']:.0f} frames/s ({best['precision']}; target >= "
              f"{TARGET_FPS_FP16_B1:.0f}): {'met' if best['fps'] >= TARGET_FPS_FP16_B1 else 'NOT met'}; echo overhead "
              f"{100 * overhead:+.1f} % (target <= {100 * TARGET_ECHO_OVERHEAD:.0f} %): "
              f"{'met' if overhead <= TARGET_ECHO_OVERHEAD else 'NOT met'}")
    return rows


# ------------------------------------------------------------------------------------------------------ --paper-size
TARGET_SPEEDUP = 2.5
TARGET_DIFF_M = 1e-3


@dataclass
class Row:
    name: str
    device: str
    precision: str
    run: Callable[[], torch.Tensor]  # one batch-1 forward -> metric depth (B,1,H,W) on the host
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    max_abs_diff_m: float = float("nan")


def paper_inputs(model: AVSNet, frames: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Network inputs of simulated BV2 frames, through the shared input path (image_input, echo_input)."""
    from avs_depth_core.sim.world import SimWorld

    h, w = model.cfg.image_size
    sequence = SimWorld("bv2", seed, h, w).sequence(0)
    inputs = []
    for i in range(frames):
        f = sequence.frame(5 * i)
        rgb, _ = model.image_input(f.rgb)
        inputs.append((rgb, model.echo_input(f.echo, f.sample_rate, f.emission_offset)))
    return inputs


def module_times_torch(model: AVSNet, rgb: torch.Tensor, echo: torch.Tensor, iters: int = 3) -> dict[str, float]:
    """Median CPU ms per module over `iters` forwards, from forward hooks: visual, audio, fusion, head and its parts."""
    parts = {"visual (MiDaS)": model.visual, "audio (ResNet-18)": model.audio, "fusion": model.fusion, "head": model.head}
    parts.update({f"head.attractor{i}": a for i, a in enumerate(model.head.attractors)})
    parts.update({f"head.projector{i}": p for i, p in enumerate(model.head.projectors)})
    samples: dict[str, list[float]] = {name: [] for name in parts}
    starts: dict[str, float] = {}
    handles = []
    for name, module in parts.items():
        handles.append(module.register_forward_pre_hook(lambda m, a, n=name: starts.__setitem__(n, time.process_time())))
        handles.append(module.register_forward_hook(
            lambda m, a, o, n=name: samples[n].append(1e3 * (time.process_time() - starts[n]))))
    try:
        with torch.inference_mode():
            for _ in range(iters):
                model(rgb, echo)
    finally:
        for handle in handles:
            handle.remove()
    times = {name: statistics.median(v) for name, v in samples.items()}
    inner = sum(v for k, v in times.items() if k.startswith(("head.attractor", "head.projector")))
    times["head.final_stage (+ conv2, seed bins)"] = times["head"] - inner
    return times


def module_times_onnx(model_bytes: bytes, feeds: dict[str, Any], threads: int, iters: int = 3) -> dict[str, float]:
    """CPU-provider kernel ms per top-level module from ONNX Runtime's profiler (NCHWc layout reorders apart)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_free_dimension_override_by_name("batch", 1)  # as avs_depth_core.ort_session.onnx_session(batch=1)
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.gettempdir()) / "avsnet_speed_ort")
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    for _ in range(iters):
        session.run(None, feeds)
    trace = Path(session.end_profiling())
    groups: dict[str, float] = {}
    for event in json.loads(trace.read_text()):
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        scope = event["name"].split("/")  # "/visual/...", "/head/attractors.3/...", "/head/Resize_1", "Gelu"
        op = event["args"].get("op_name", "")
        key = scope[1] if len(scope) > 2 else ("layout reorders" if op.startswith("Reorder") else f"unscoped {op}")
        if key == "head":
            key = f"head.{scope[2]}" if len(scope) > 3 else "head (final stage, conv2, seed bins)"
        key = {"visual": "visual (MiDaS)", "audio": "audio (ResNet-18)"}.get(key, key)
        groups[key] = groups.get(key, 0.0) + event["dur"] / 1e3 / iters
    trace.unlink(missing_ok=True)
    return dict(sorted(groups.items(), key=lambda kv: -kv[1]))


def build_rows(model: AVSNet, rgb: torch.Tensor, echo: torch.Tensor, threads: int) -> tuple[list[Row], dict[str, bytes]]:
    from avs_depth_core.export import avsnet_plan, onnx_bytes
    from avs_depth_core.ort_session import PROVIDERS, import_onnxruntime, onnx_session

    reference = build_reference(model)

    def torch_row(name: str, net: AVSNet, device: str, precision: str) -> Row:
        x, e = rgb.to(device), echo.to(device)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

        def run() -> torch.Tensor:
            with torch.inference_mode(), torch.autocast(device, torch.float16, enabled=precision == "fp16-autocast"):
                out = net(x, e)["metric_depth"]
            sync()
            return out.float().cpu()
        return Row(name, device, precision, run)

    rows = [torch_row("torch_reference", reference, "cpu", "fp32"), torch_row("torch_fast", model, "cpu", "fp32")]
    exported = {"onnxruntime": onnx_bytes(avsnet_plan(model)),
                "onnxruntime_reference_head": onnx_bytes(avsnet_plan(reference))}
    feeds = {"rgb": rgb.numpy(), "echo": echo.numpy()}
    ort = import_onnxruntime()
    available = ort.get_available_providers()

    def ort_row(name: str, model_bytes: bytes, providers: list, device: str, precision: str) -> Row:
        session = onnx_session(model_bytes, providers, threads, batch=1)
        return Row(name, device, precision, lambda: torch.from_numpy(session.run(["metric_depth"], feeds)[0]))

    for name, model_bytes in exported.items():
        rows.append(ort_row(name, model_bytes, [PROVIDERS["cpu"]], "cpu", "fp32"))
    if torch.cuda.is_available():
        gpu_reference, gpu_fast = copy.deepcopy(reference).cuda(), copy.deepcopy(model).cuda()
        rows += [torch_row("torch_reference", gpu_reference, "cuda", "fp32"), torch_row("torch_fast", gpu_fast, "cuda", "fp32"),
                 torch_row("torch_fast", gpu_fast, "cuda", "fp16-autocast")]
    if PROVIDERS["cuda"] in available:
        rows.append(ort_row("onnxruntime", exported["onnxruntime"], [PROVIDERS["cuda"], PROVIDERS["cpu"]], "cuda", "fp32"))
    if PROVIDERS["tensorrt"] in available:
        trt = (PROVIDERS["tensorrt"], {"trt_fp16_enable": True})
        rows.append(ort_row("onnxruntime", exported["onnxruntime"], [trt, PROVIDERS["cuda"], PROVIDERS["cpu"]], "cuda",
                            "tensorrt-fp16"))
    return rows, exported


def run_paper_size(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    torch.manual_seed(args.seed)
    model = AVSNet.from_checkpoint(args.checkpoint) if args.checkpoint else AVSNet(AVSNetConfig()).eval()
    cfg = model.cfg
    if not cfg.use_echo:
        raise SystemExit(f"--checkpoint {args.checkpoint}: an Only-RGB model; --paper-size measures RGB-Echoes")
    inputs = paper_inputs(model, args.frames, args.seed)
    rgb, echo = inputs[0]
    weights = f"checkpoint {args.checkpoint}" if args.checkpoint else f"random weights (seed {args.seed})"
    print(f"paper-size AVS-Net: backbone {cfg.backbone}, input {cfg.image_size[0]}x{cfg.image_size[1]}, RGB-Echoes, "
          f"{weights}; {args.threads} threads; torch {torch.__version__}; load average "
          f"{' '.join(f'{v:.2f}' for v in load_start)}")
    print("exporting the fast and the reference model to ONNX (torchscript exporter) ...", flush=True)
    rows, exported = build_rows(model, rgb, echo, args.threads)
    for row in rows:  # warm-up, and the outputs against the CPU reference on every frame
        row.run()
    diffs = {id(r): 0.0 for r in rows}
    for x, e in inputs:
        rgb.copy_(x)
        echo.copy_(e)
        expected = rows[0].run()
        for row in rows:
            diffs[id(row)] = max(diffs[id(row)], float((row.run() - expected).abs().max()))
    for row in rows:
        row.max_abs_diff_m = diffs[id(row)]
    rgb.copy_(inputs[0][0])
    echo.copy_(inputs[0][1])
    progress = tqdm(range(args.repeats), desc="interleaved rounds", unit="round")
    for r in progress:
        order = rows[r % len(rows):] + rows[:r % len(rows)]  # rotate, so no row always runs first
        for row in order:
            c, w = time.process_time(), time.perf_counter()
            row.run()
            row.wall.append(1e3 * (time.perf_counter() - w))
            row.cpu.append(1e3 * (time.process_time() - c))
    print("per-module CPU ms (batch 1) ...", flush=True)
    modules = {"torch_reference": module_times_torch(build_reference(model), rgb, echo),
               "torch_fast": module_times_torch(model, rgb, echo),
               "onnxruntime": module_times_onnx(exported["onnxruntime"], {"rgb": rgb.numpy(), "echo": echo.numpy()},
                                                args.threads)}
    report = paper_report(rows, modules, args, load_start, os.getloadavg())
    print_paper_report(report)
    return report


def build_reference(model: AVSNet) -> AVSNet:
    reference = copy.deepcopy(model)
    reference.head.reference_forward = True
    return reference


def paper_report(rows: list[Row], modules: dict[str, dict[str, float]], args: argparse.Namespace,
                 load_start: tuple[float, ...], load_end: tuple[float, ...]) -> dict[str, Any]:
    out = []
    for row in rows:
        base = next(r for r in rows if r.name == "torch_reference" and r.device == row.device)
        ratios = [b / w for b, w in zip(base.wall, row.wall, strict=True)]
        cpu_ratios = [b / c for b, c in zip(base.cpu, row.cpu, strict=True)]
        out.append({
            "name": row.name, "device": row.device, "precision": row.precision, "batch": 1,
            "latency_ms": statistics.median(row.wall), "latency_p10_ms": _quantile(row.wall, 0.1),
            "latency_p90_ms": _quantile(row.wall, 0.9), "cpu_ms": statistics.median(row.cpu),
            "cpu_p10_ms": _quantile(row.cpu, 0.1), "cpu_p90_ms": _quantile(row.cpu, 0.9),
            "speedup": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios),
            "cpu_speedup": statistics.median(cpu_ratios), "fps": 1e3 / statistics.median(row.wall),
            "max_abs_diff_m": row.max_abs_diff_m})
    cpu_rows = [r for r in out if r["device"] == "cpu" and r["name"] != "torch_reference"]
    best = max(cpu_rows, key=lambda r: r["speedup"])
    return {"benchmark": "avsnet_speed --paper-size", "threads": args.threads, "repeats": args.repeats,
            "frames_compared": args.frames, "checkpoint": str(args.checkpoint) if args.checkpoint else None,
            "torch": torch.__version__, "onnxruntime": _ort_version(), "loadavg_start": list(load_start),
            "loadavg_end": list(load_end), "rows": out, "modules_cpu_ms": modules,
            "target": {"speedup": TARGET_SPEEDUP, "max_abs_diff_m": TARGET_DIFF_M, "best_cpu_row": best["name"],
                       "met": best["speedup"] >= TARGET_SPEEDUP and best["max_abs_diff_m"] <= TARGET_DIFF_M}}


def print_paper_report(report: dict[str, Any]) -> None:
    header = (f"{'row':<27} {'device':<6} {'precision':<14} {'latency ms':>10} {'p10-p90':>13} {'CPU ms':>8} "
              f"{'x ref (min-max)':>17} {'max |diff| m':>12}")
    print("\n" + header + "\n" + "-" * len(header))
    for r in report["rows"]:
        print(f"{r['name']:<27} {r['device']:<6} {r['precision']:<14} {r['latency_ms']:>10.1f} "
              f"{r['latency_p10_ms']:>6.0f}-{r['latency_p90_ms']:<6.0f} {r['cpu_ms']:>8.1f} "
              f"{r['speedup']:>6.2f} ({r['speedup_min']:.2f}-{r['speedup_max']:.2f}) {r['max_abs_diff_m']:>12.2e}")
    for name, times in report["modules_cpu_ms"].items():
        print(f"\nper module, {name} (CPU ms; hooks for torch, profiler kernels for ONNX Runtime):")
        for module, ms in times.items():
            print(f"  {module:<40} {ms:8.1f}")
    t = report["target"]
    best = next(r for r in report["rows"] if r["name"] == t["best_cpu_row"] and r["device"] == "cpu")
    print(f"\ntarget: >= {t['speedup']}x today's torch forward on {report['threads']} CPU threads, outputs within "
          f"{t['max_abs_diff_m']:g} m: {best['name']} {best['speedup']:.2f}x, {best['max_abs_diff_m']:.1e} m -> "
          f"{'met' if t['met'] else 'NOT met'}; load {report['loadavg_start'][0]:.2f} -> {report['loadavg_end'][0]:.2f}")
    gpu = [r for r in report["rows"] if r["device"] == "cuda"]
    if gpu:
        best_gpu = max(gpu, key=lambda r: r["fps"])
        print(f"GPU: best {best_gpu['name']} {best_gpu['precision']} {best_gpu['fps']:.0f} frames/s at batch 1 "
              f"(target >= {TARGET_FPS_FP16_B1:.0f})")


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ort_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="midas_small", help="visual backbone (midas_small, tiny, dpt_beit_l_384 ...)")
    parser.add_argument("--size", type=int, nargs=2, default=(256, 512), metavar=("H", "W"), help="input size (AVS-Net: 256 512)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--iters", type=int, default=5, help="timed forwards per setting (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--devices", nargs="+", choices=["cpu", "cuda"], help="default: cpu, and cuda when available")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    paper = parser.add_argument_group("--paper-size: backends side by side")
    paper.add_argument("--paper-size", action="store_true", help="compare torch reference / fast / ONNX Runtime")
    paper.add_argument("--out", type=Path, help="--paper-size: write the report as JSON here")
    paper.add_argument("--repeats", type=int, default=15, help="--paper-size: interleaved rounds (one forward per row)")
    paper.add_argument("--frames", type=int, default=3, help="--paper-size: simulated frames for max_abs_diff_m")
    paper.add_argument("--checkpoint", type=Path, help="--paper-size: an RGB-Echoes checkpoint (default: random weights)")
    paper.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.iters < 1 or args.warmup < 0 or args.repeats < 1 or args.frames < 1:
        parser.error("--iters, --repeats and --frames must be >= 1 and --warmup >= 0")
    if args.paper_size:
        args.threads = args.threads or 2
        report = run_paper_size(args)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2) + "\n")
            print(f"wrote {args.out}")
        return 0
    rows = run(args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
