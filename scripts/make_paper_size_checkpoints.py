"""Paper-size checkpoints for speed measurements: AVS-Net RGB-Echoes and Only-RGB (MiDaS-small, 256x512, BV2's 30 m) and
Monodepth2 (ResNet-18 at 256x512), randomly initialised. Inference speed does not depend on the weights, so these stand in
for trained models in benchmarks/node_latency.py and `avs-depth-ros bringup --sim`; their depth is meaningless. About
290 MB together: written outside the repository (default runs/paper_size/, git-ignored), never committed.

    .venv/bin/python scripts/make_paper_size_checkpoints.py --out runs/paper_size [--export]
    avs-depth-ros bringup --sim --duration 60 --backend onnxruntime --torch-threads 2 \\
        --avsnet-checkpoint runs/paper_size/avsnet.onnx --relative-model monodepth2 \\
        --relative-checkpoint runs/paper_size/monodepth2.onnx

--export also writes each as .onnx (avs_depth_core.export, checked against torch); without it, backend onnxruntime exports
them into its cache on first use.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avs_depth_core.export import export_onnx
from avs_depth_core.models.avsnet import AVSNet, AVSNetConfig
from avs_depth_core.models.monodepth2 import DepthNet, Monodepth2Config, save_monodepth2

PAPER_SIZE = (256, 512)  # AVS-Net's input (H, W) on BatVision


def make(out: Path, seed: int, export: bool) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    paths = {"avsnet": AVSNet(AVSNetConfig(image_size=PAPER_SIZE, max_depth=30.0)).save(out / "avsnet"),
             "avsnet_rgb": AVSNet(AVSNetConfig(image_size=PAPER_SIZE, max_depth=30.0, use_echo=False)).save(out / "avsnet_rgb")}
    config = Monodepth2Config(height=PAPER_SIZE[0], width=PAPER_SIZE[1], max_depth=30.0)
    paths["monodepth2"] = save_monodepth2(out / "monodepth2", DepthNet.from_config(config, load_pretrained=False), config,
                                          meta={"note": "random weights, for speed measurements only"})
    for kind, path in list(paths.items()):
        print(f"{path}: {kind}, {path.stat().st_size / 1e6:.0f} MB", flush=True)
        if export:
            start = time.perf_counter()
            report = export_onnx(path, path.with_suffix(".onnx"))
            diffs = ", ".join(f"{k} {v:.1e}" for k, v in report.max_abs_diff.items())
            print(f"  -> {report.path} ({report.size_bytes / 1e6:.0f} MB, |ORT - torch| {diffs}, "
                  f"{time.perf_counter() - start:.0f} s)", flush=True)
            paths[f"{kind}_onnx"] = report.path
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/paper_size"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export", action="store_true", help="also write each model as .onnx beside its checkpoint")
    args = parser.parse_args(argv)
    make(args.out, args.seed, args.export)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
