"""`avs-depth infer`: metric depth for one image and its echo recording (avs_depth_core.inference).

    avs-depth infer --checkpoint runs/bv2/checkpoints/best --image camera_47.jpeg --echo audio_47.wav --out depth.npy
    avs-depth infer ... --out depth.png          # colourised; .npy holds float32 metres at the image's resolution
    avs-depth infer ... --emission-offset direct # time zero from the recording's direct path (rig latency compensated)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from avs_depth_core import files
from avs_depth_core.device import resolve_device
from avs_depth_core.inference import infer_depth, load_echo, load_rgb


def emission_offset_arg(text: str) -> int | str:
    if text == "direct":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a sample index or 'direct', got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="AVS-Net checkpoint (.safetensors + .json beside it)")
    parser.add_argument("--image", required=True, type=Path, help="RGB image (JPEG, PNG, ...)")
    parser.add_argument("--echo", type=Path, default=None, help="binaural echo recording (.wav); not for Only-RGB models")
    parser.add_argument("--out", required=True, type=Path, help="depth.npy (float32 metres) or depth.png (colourised)")
    parser.add_argument("--emission-offset", type=emission_offset_arg, default=0,
                        help="sample index of the chirp emission in the wav (default 0), or 'direct': the index that puts "
                             "the recording's direct path where the simulator's is, which compensates the rig's latency "
                             "(audio/direct_path.py; the real BatVision V2 sample's direct path starts 6.5 ms in)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1 (default auto: CUDA when available)")
    parser.add_argument("--half", action="store_true", help="fp16 autocast (CUDA only)")


def run(args: argparse.Namespace) -> int:
    from avs_depth_core.models.avsnet import AVSNet
    from avs_depth_core.visualise import save_depth_png

    suffix = args.out.suffix.lower()
    if args.out.is_dir():
        raise ValueError(f"--out {args.out}: is a folder; name a .npy or .png file, e.g. {args.out / 'depth.npy'}")
    if suffix not in (".npy", ".png"):
        raise ValueError(f"--out {args.out}: expected a .npy (float32 metres) or .png (colourised) file name")
    if args.emission_offset != "direct" and args.emission_offset < 0:
        raise ValueError(f"--emission-offset must be >= 0, got {args.emission_offset}")
    for option, path in (("--checkpoint", args.checkpoint), ("--image", args.image), ("--echo", args.echo)):
        if path is not None and path.is_dir():
            raise ValueError(f"{option} {path}: is a folder; name a file")
    files.check_output(args.out, 0, kind="file")
    device = resolve_device(args.device)
    if args.half and device.type != "cuda":
        raise ValueError(f"--half needs a CUDA device; this run uses {device}")
    model = AVSNet.from_checkpoint(args.checkpoint, device)
    rgb = load_rgb(args.image)
    echo = None
    if model.cfg.use_echo:
        if args.echo is None:
            raise ValueError(f"{args.checkpoint}: this model fuses the echo; pass --echo RECORDING.wav")
        if args.emission_offset == "direct":
            from avs_depth_core.audio.direct_path import direct_aligned_offset
            from avs_depth_core.audio.wav import read_wav
            from avs_depth_core.sim.world import simulator_direct_onset_s

            samples, rate = read_wav(args.echo)
            args.emission_offset = direct_aligned_offset(samples, rate, simulator_direct_onset_s())
            print(f"{args.echo}: direct path aligned, emission at sample {args.emission_offset}", file=sys.stderr)
        echo = load_echo(args.echo, model.cfg.sample_rate, model.cfg.echo_samples, args.emission_offset)
    elif args.echo is not None:
        print(f"note: {args.checkpoint} is an Only-RGB model; --echo is ignored", file=sys.stderr)
    start = time.perf_counter()
    offset = args.emission_offset if echo is not None else 0
    depth = infer_depth(model, rgb, echo, model.cfg.sample_rate, offset, args.half)
    seconds = time.perf_counter() - start
    if suffix == ".npy":
        files.save_npy(args.out, depth.astype(np.float32))
    else:
        save_depth_png(args.out, depth)
    print(f"{args.out}: {depth.shape[1]}x{depth.shape[0]} depth, {float(depth.min()):.2f}-{float(depth.max()):.2f} m "
          f"(median {float(np.median(depth)):.2f} m) in {seconds * 1000:.0f} ms on {device}")
    return 0
