"""`avs-depth gradcam`: where AVS-Net looks in the echo spectrogram and in the image (avs_depth_core.gradcam).

    avs-depth gradcam --checkpoint CKPT --bag bv2/ --split test --index 3 --out fig.png
    avs-depth gradcam --checkpoint CKPT --image camera_47.jpeg --echo audio_47.wav --out fig.png [--region 0.25 0.25 0.75 0.75]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from avs_depth_core import files
from avs_depth_core.device import resolve_device
from avs_depth_core.gradcam import gradcam, load_inputs, save_gradcam_figure


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="AVS-Net checkpoint")
    parser.add_argument("--bag", type=Path, default=None, help="take the sample from this bag (with --index)")
    parser.add_argument("--split", default="test", help="bag split for --index (default test)")
    parser.add_argument("--index", type=int, default=0, help="sample index within the split")
    parser.add_argument("--image", type=Path, default=None, help="RGB image (instead of --bag)")
    parser.add_argument("--echo", type=Path, default=None, help="binaural echo .wav (with --image)")
    parser.add_argument("--emission-offset", type=int, default=0, help="sample index of the chirp emission in the wav")
    parser.add_argument("--region", type=float, nargs=4, default=None, metavar=("X0", "Y0", "X1", "Y1"),
                        help="explain the mean depth of this box (fractions of width/height); default the whole image")
    parser.add_argument("--out", required=True, type=Path, help="figure (.png)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="bag cache folder (default $AVS_DEPTH_CACHE)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda (default auto: CUDA when available)")


def run(args: argparse.Namespace) -> int:
    from avs_depth_core.models.avsnet import AVSNet

    if args.out.suffix.lower() != ".png" or args.out.is_dir():
        raise ValueError(f"--out {args.out}: expected a .png file name")
    if args.emission_offset < 0:
        raise ValueError(f"--emission-offset must be >= 0, got {args.emission_offset}")
    files.check_output(args.out, 0, kind="file")
    model = AVSNet.from_checkpoint(args.checkpoint, resolve_device(args.device))
    rgb, echo, title = load_inputs(model, bag=args.bag, split=args.split, index=args.index, cache_dir=args.cache_dir,
                                   image=args.image, echo=args.echo, emission_offset=args.emission_offset)
    result = gradcam(model, rgb, echo, args.region)
    path = save_gradcam_figure(args.out, rgb, echo, result, model.cfg, args.region, title=title)
    print(f"wrote {path}")
    return 0
