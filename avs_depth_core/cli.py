"""`avs-depth` command line: one subcommand per step of the offline workflow.

Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`; modules are imported
only when their subcommand runs, so `avs-depth --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("avs_depth_core.sim.cli", "render a synthetic audio-visual world into a rosbag2"),
    "convert-batvision": ("avs_depth_core.data.batvision", "convert a BatVision BV1/BV2 download into a rosbag2"),
    "bag-info": ("avs_depth_core.data.bag_info", "summarise a rosbag2: topics, counts, rates, splits"),
    "train": ("avs_depth_core.train.cli", "train AVS-Net (supervised) or Monodepth2 (self-supervised) from rosbags"),
    "evaluate": ("avs_depth_core.evaluation.cli", "evaluate AVS-Net checkpoints on rosbags (paper Table 1)"),
    "evaluate-scaling": ("avs_depth_core.evaluation.scaling_cli", "evaluate relative depth with echo scaling (Table 2)"),
    "infer": ("avs_depth_core.inference", "metric depth for one image + echo"),
    "gradcam": ("avs_depth_core.gradcam", "Grad-CAM over the echo spectrogram and the image"),
    "export": ("avs_depth_core.export", "export AVS-Net or Monodepth2 to ONNX (ONNX Runtime, TensorRT) with its metadata"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avs-depth", description="Metric depth from one camera and binaural echoes.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, summary) in COMMANDS.items():
        sub.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        parser = build_parser()
        if argv and not argv[0].startswith("-"):
            parser.error(f"unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}")
        parser.print_help()
        return 0 if argv else 2
    name = argv[0]
    module_name, summary = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"avs-depth {name}", description=summary)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        # Bad input is reported as one clear line naming the file/topic/key, not a traceback.
        print(f"avs-depth {name}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
