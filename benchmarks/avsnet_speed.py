"""AVS-Net forward speed: Only-RGB (ZoeDepth) vs RGB-Echo side by side, latency and throughput at 256x512.

    .venv/bin/python benchmarks/avsnet_speed.py                      # CPU fp32 (+ CUDA fp32/fp16 when a GPU is there)
    .venv/bin/python benchmarks/avsnet_speed.py --iters 3 --batch-sizes 1 --devices cpu

Targets (H100): midas_small AVS-Net >= 200 frames/s at batch 1 in fp16; the echo branch adds <= 15 % over Only-RGB.
Timed: AVSNet.forward under torch.inference_mode (input checks included), inputs already on the device; median of --iters.
fp16-autocast keeps fp32 weights (what AVSNet.predict(fp16=True) does); fp16 converts the weights to half.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

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
    args = parser.parse_args(argv)
    if args.iters < 1 or args.warmup < 0:
        parser.error("--iters must be >= 1 and --warmup >= 0")
    rows = run(args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
