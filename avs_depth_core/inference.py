"""`avs-depth infer`: metric depth for one image and its echo recording.

    avs-depth infer --checkpoint runs/bv2/checkpoints/best --image camera_47.jpeg --echo audio_47.wav --out depth.npy
    avs-depth infer ... --out depth.png          # colourised; .npy holds float32 metres at the image's resolution

The image is read with Pillow (RGB), the wav with avs_depth_core.audio.read_wav (integer PCM scaled to [-1, 1]); the echo
window starts at sample --emission-offset (0 for BatVision recordings, which start at the chirp) and is turned into the
network input by the same echo_features path as training and the live node. Runs under torch.inference_mode(); --half uses
fp16 autocast on CUDA.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from avs_depth_core.audio import read_wav


def load_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 from an RGB image file; other modes (grey, RGBA, palette, 16-bit) are errors saying what was found."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found")
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode != "RGB":
                raise ValueError(f"{path}: image mode {mode} ({len(img.getbands())} channel(s)); expected a 3-channel RGB "
                                 "image (convert it first, e.g. with Pillow's Image.convert('RGB'))")
            return np.asarray(img, dtype=np.uint8).copy()
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image file Pillow can read") from None


def load_echo(path: str | Path, expected_rate: int) -> np.ndarray:
    """(2, n) float32 binaural samples; a wrong sample rate or channel count is an error naming the file."""
    samples, rate = read_wav(path)
    if rate != expected_rate:
        raise ValueError(f"{path}: sample rate {rate} Hz; the model expects {expected_rate} Hz (resample the recording)")
    if samples.shape[0] != 2:
        raise ValueError(f"{path}: {samples.shape[0]} channel(s); expected 2 (left, right) binaural echoes")
    return samples


def infer_depth(model, rgb: np.ndarray, echo: np.ndarray | None, sample_rate: int | None = None, emission_offset: int = 0,
                half: bool = False) -> np.ndarray:
    """(H, W) float32 metric depth in metres at the image's resolution (AVSNet.predict under inference_mode)."""
    if not model.cfg.use_echo:
        echo, sample_rate = None, None
    out = model.predict(rgb, echo, sample_rate, emission_offset=emission_offset, fp16=half)
    depth = out["metric_depth"][0, 0].float().cpu().numpy()
    if not np.isfinite(depth).all():
        raise ValueError("the network produced NaN or inf depth; the checkpoint is damaged or the input is far outside "
                         "what it was trained on")
    return depth


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="AVS-Net checkpoint (.safetensors + .json beside it)")
    parser.add_argument("--image", required=True, type=Path, help="RGB image (JPEG, PNG, ...)")
    parser.add_argument("--echo", type=Path, default=None, help="binaural echo recording (.wav); not for Only-RGB models")
    parser.add_argument("--out", required=True, type=Path, help="depth.npy (float32 metres) or depth.png (colourised)")
    parser.add_argument("--emission-offset", type=int, default=0, help="sample index of the chirp emission in the wav")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when available)")
    parser.add_argument("--half", action="store_true", help="fp16 autocast (CUDA only)")


def run(args: argparse.Namespace) -> int:
    from avs_depth_core.device import resolve_device
    from avs_depth_core.models.avsnet import AVSNet
    from avs_depth_core.visualise import save_depth_png

    suffix = args.out.suffix.lower()
    if suffix not in (".npy", ".png"):
        raise ValueError(f"--out {args.out}: expected a .npy (float32 metres) or .png (colourised) file name")
    device = resolve_device(args.device)
    if args.half and device.type != "cuda":
        raise ValueError(f"--half needs a CUDA device; this run uses {device}")
    model = AVSNet.from_checkpoint(args.checkpoint, device)
    rgb = load_rgb(args.image)
    echo = None
    if model.cfg.use_echo:
        if args.echo is None:
            raise ValueError(f"{args.checkpoint}: this model fuses the echo; pass --echo RECORDING.wav")
        echo = load_echo(args.echo, model.cfg.sample_rate)
    elif args.echo is not None:
        print(f"note: {args.checkpoint} is an Only-RGB model; --echo is ignored", file=sys.stderr)
    start = time.perf_counter()
    depth = infer_depth(model, rgb, echo, model.cfg.sample_rate, args.emission_offset, args.half)
    seconds = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        np.save(args.out, depth.astype(np.float32))
    else:
        save_depth_png(args.out, depth)
    print(f"{args.out}: {depth.shape[1]}x{depth.shape[0]} depth, {float(depth.min()):.2f}-{float(depth.max()):.2f} m "
          f"(median {float(np.median(depth)):.2f} m) in {seconds * 1000:.0f} ms on {device}")
    return 0
