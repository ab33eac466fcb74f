"""Does what the echo branch learned on the simulator carry over to a real recording? AVS-Net on the real BatVision V2
sample (../shared/fixtures/batvision_bv2_sample/, read in place): median(pred) / median(gt) over the valid pixels.

    .venv/bin/python benchmarks/real_sample_transfer.py                           # the bundled AVS-Net
    .venv/bin/python benchmarks/real_sample_transfer.py --checkpoint runs/a/checkpoints/last runs/b/checkpoints/last
    .venv/bin/python benchmarks/real_sample_transfer.py --emission-offset 0 280 --out transfer.json
    .venv/bin/python benchmarks/real_sample_transfer.py --emission-offset 0 direct    # latency compensated by the direct path

Nothing is trained, fitted or selected on the sample's depth: it is read only to score the prediction. Per checkpoint
and emission offset it prints the scale ratio (1.0 is right; the issue's target is 0.8-1.25), the medians, delta1 as
predicted and delta1 once the prediction is scaled by the ratio of medians (the shape alone), on valid pixels 0 < gt <
the model's max_depth, the prediction at the ground truth's 1280x720 (infer's output size).

--echo-sweep BAG adds how far the echo moves the prediction: the real image with simulated echoes from BAG (spread over
their depth medians, zero-padded to the model's window) and with background noise alone (1e-3 RMS).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avs_depth_core.audio.direct_path import direct_aligned_offset  # noqa: E402
from avs_depth_core.audio.wav import read_wav  # noqa: E402
from avs_depth_core.data.echo_sources import load_records  # noqa: E402
from avs_depth_core.inference import infer_depth, load_echo, load_rgb  # noqa: E402
from avs_depth_core.models.avsnet import AVSNet  # noqa: E402
from avs_depth_core.pipeline import bundled_checkpoint  # noqa: E402
from avs_depth_core.sim.world import simulator_direct_onset_s  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "fixtures" / "batvision_bv2_sample"


def offset_arg(text: str) -> int | str:
    if text == "direct":
        return text
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"emission offset must be >= 0 or 'direct', got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", nargs="+", type=Path, default=None,
                   help="AVS-Net checkpoints (default: the bundled RGB-Echoes model)")
    p.add_argument("--sample", type=Path, default=SAMPLE, help="folder with camera_47.jpeg, audio_47.wav, depth_47.npy")
    p.add_argument("--index", default="47", help="the sample's number in its file names (default 47)")
    p.add_argument("--emission-offset", type=offset_arg, nargs="+", default=[0],
                   help="sample index of the chirp emission in the wav (default 0, as BatVision's loader cuts it), or "
                        "'direct': the index that puts the wav's direct path where the simulator's is "
                        "(audio/direct_path.py; from the audio alone)")
    p.add_argument("--echo-sweep", type=Path, default=None, metavar="BAG",
                   help="also predict with the real image and simulated echoes from this bag (and with noise alone)")
    p.add_argument("--sweep-count", type=int, default=6, help="simulated echoes in the sweep (default 6)")
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    return p.parse_args(argv)


def score(pred: np.ndarray, gt: np.ndarray, max_depth: float) -> dict[str, float]:
    valid = np.isfinite(gt) & (gt > 0) & (gt < max_depth)
    p, g = pred[valid].astype(np.float64), gt[valid].astype(np.float64)
    ratio = float(np.median(p) / np.median(g))

    def delta1(x: np.ndarray) -> float:
        return float(np.mean(np.maximum(x / g, g / np.maximum(x, 1e-9)) < 1.25))

    return {"ratio": ratio, "pred_median_m": float(np.median(p)), "gt_median_m": float(np.median(g)),
            "delta1": delta1(p), "delta1_median_scaled": delta1(p / ratio), "valid_pixels": int(valid.sum())}


def run(args: argparse.Namespace) -> list[dict]:
    checkpoints = args.checkpoint or [bundled_checkpoint("avsnet")]
    if checkpoints[0] is None:
        raise SystemExit("no bundled AVS-Net checkpoint in avs_depth_core/checkpoints/avsnet")
    rgb = load_rgb(args.sample / f"camera_{args.index}.jpeg")
    gt = np.load(args.sample / f"depth_{args.index}.npy").astype(np.float64) / 1000.0   # uint16 mm, 0 = invalid
    rows = []
    for checkpoint in checkpoints:
        model = AVSNet.from_checkpoint(checkpoint, "cpu")
        for choice in args.emission_offset:
            offset = choice
            if choice == "direct":
                samples, rate = read_wav(args.sample / f"audio_{args.index}.wav")
                offset = direct_aligned_offset(samples, rate, simulator_direct_onset_s())
            echo = load_echo(args.sample / f"audio_{args.index}.wav", model.cfg.sample_rate, model.cfg.echo_samples, offset)
            pred = infer_depth(model, rgb, echo, model.cfg.sample_rate, offset)
            if pred.shape != gt.shape:
                raise SystemExit(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
            rows.append({"checkpoint": str(checkpoint), "emission_offset": offset, "offset_choice": str(choice),
                         **score(pred, gt, model.cfg.max_depth)})
    return rows


def echo_sweep(model: AVSNet, rgb: np.ndarray, bag: Path, count: int) -> list[tuple[str, float]]:
    """(echo, median predicted depth m) for noise alone and for `count` simulated echoes spread over their depth."""
    records = sorted(load_records(bag), key=lambda r: r.depth_median_m)
    picks = [records[int(i)] for i in np.linspace(0, len(records) - 1, count).round()]
    need = model.cfg.echo_samples
    noise = np.random.default_rng(0).normal(0, 1e-3, (2, need + 1)).astype(np.float32)
    out = [("noise alone", float(np.median(infer_depth(model, rgb, noise, model.cfg.sample_rate, 0))))]
    for r in picks:
        echo = np.pad(r.samples, ((0, 0), (0, max(0, r.emission_offset + need - r.samples.shape[1]))))
        depth = infer_depth(model, rgb, echo, r.sample_rate, r.emission_offset)
        out.append((f"simulated, depth median {r.depth_median_m:.2f} m", float(np.median(depth))))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = run(args)
    print("| checkpoint | emission offset | median pred m | median gt m | ratio | delta1 | delta1 median-scaled |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['checkpoint']} | {r['emission_offset']} | {r['pred_median_m']:.3f} | {r['gt_median_m']:.3f} | "
              f"{r['ratio']:.3f} | {r['delta1']:.3f} | {r['delta1_median_scaled']:.3f} |")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"wrote {args.out}")
    if args.echo_sweep is not None:
        rgb = load_rgb(args.sample / f"camera_{args.index}.jpeg")
        for checkpoint in args.checkpoint or [bundled_checkpoint("avsnet")]:
            print(f"\n{checkpoint} on the real image: echo -> median predicted depth")
            for what, depth in echo_sweep(AVSNet.from_checkpoint(checkpoint, "cpu"), rgb, args.echo_sweep, args.sweep_count):
                print(f"  {what}: {depth:.2f} m")
    return 0


if __name__ == "__main__":
    sys.exit(main())
