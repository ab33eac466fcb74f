"""`avs-depth` command line: one subcommand per step of the offline workflow (rosbags' pattern).

Each subcommand is a module of this package exposing `add_arguments(parser)` and `run(args) -> int`: it parses its
arguments and calls typed functions of the library, which never sees an argparse.Namespace. Modules are imported only
when their subcommand runs, so `avs-depth --help` stays fast. The same subcommands are the executables of the ROS package
avs_depth_core (`ros2 run avs_depth_core train ...`, setup.py) and `python -m avs_depth_core.cli ...` (torchrun).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

# name -> (module of this package, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("simulate", "render a synthetic audio-visual world into a rosbag2"),
    "convert-batvision": ("convert_batvision", "convert a BatVision BV1/BV2 download into a rosbag2"),
    "bag-info": ("bag_info", "summarise a rosbag2: topics, counts, rates, splits"),
    "train": ("train", "train AVS-Net (supervised) or Monodepth2 (self-supervised) from rosbags"),
    "evaluate": ("evaluate", "evaluate AVS-Net checkpoints on rosbags (paper Table 1)"),
    "evaluate-scaling": ("evaluate_scaling", "evaluate relative depth with echo scaling (Table 2)"),
    "infer": ("infer", "metric depth for one image + echo"),
    "gradcam": ("gradcam", "Grad-CAM over the echo spectrogram and the image"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avs-depth", description="Metric depth from one camera and binaural echoes.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, summary) in COMMANDS.items():
        sub.add_parser(name, help=summary, add_help=False)
    return parser


def run_reporting_errors(prog: str, command: Callable[[], int | None]) -> int:
    """Run a command; bad input (missing file, wrong value) is one clear line on stderr and exit code 2, Ctrl-C is 130."""
    try:
        return int(command() or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        # Bad input is reported as one clear line naming the file/topic/key, not a traceback.
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2


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
    module = importlib.import_module(f"{__name__}.{module_name}")
    parser = argparse.ArgumentParser(prog=f"avs-depth {name}", description=summary)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    return run_reporting_errors(f"avs-depth {name}", lambda: module.run(args))
