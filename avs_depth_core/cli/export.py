"""`avs-depth export`: a checkpoint to ONNX with its metadata (avs_depth_core.export), checked against torch first.

    avs-depth export --checkpoint runs/avs_bv2/checkpoints/best --format onnx --out avsnet_bv2.onnx
    avs-depth export --checkpoint runs/md2_bv1/checkpoints/best --format onnx --out monodepth2_bv1.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

from avs_depth_core.export import DEFAULT_OPSET, EXPORTERS, FORMATS, export_onnx


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path,
                        help="AVS-Net (RGB-Echoes or Only-RGB) or Monodepth2 checkpoint (.safetensors + .json beside it)")
    parser.add_argument("--format", default="onnx", choices=FORMATS, help="output format")
    parser.add_argument("--out", required=True, type=Path, help="model file to write (.onnx)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--exporter", default="torchscript", choices=EXPORTERS,
                        help="torch.onnx exporter: torchscript (default: exact, fast) or dynamo (needs onnxscript)")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="largest accepted |ONNX Runtime - torch| on the check input (m for AVS-Net)")
    parser.add_argument("--no-check", action="store_true", help="write without running ONNX Runtime against torch")


def run(args: argparse.Namespace) -> int:
    report = export_onnx(args.checkpoint, args.out, args.opset, args.exporter, None if args.no_check else args.tolerance)
    checked = ", ".join(f"{name} max |ORT - torch| {d:.2e}" for name, d in report.max_abs_diff.items()) or "not checked"
    print(f"{report.path}: {report.kind}, {report.size_bytes / 1e6:.1f} MB, {checked}, {report.seconds:.1f} s")
    return 0
