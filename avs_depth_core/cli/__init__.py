"""`avs-depth` command line: one subcommand per step of the offline workflow (rosbags' pattern).

Each subcommand is a module of this package exposing `add_arguments(parser)` and `run(args) -> int`: it parses its
arguments and calls typed functions of the library, which never sees an argparse.Namespace. Modules are imported only
when their subcommand runs, so `avs-depth --help` stays fast. The same subcommands are the executables of the ROS package
avs_depth_core (`ros2 run avs_depth_core train ...`, setup.py) and `python -m avs_depth_core.cli ...` (torchrun).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable

# Bad input (exit code 2): what the user handed over is missing, of the wrong kind or out of range.
INPUT_ERRORS = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError)

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
    "export": ("export", "export AVS-Net or Monodepth2 to ONNX (ONNX Runtime, TensorRT) with its metadata"),
    "echo-stats": ("echo_stats", "statistics of recorded echoes against simulated ones (table, figures, JSON)"),
    "mine-labels": ("mine_labels", "dynamic-region pseudo labels, object scale by the echo, for retraining Monodepth2"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avs-depth", description="Metric depth from one camera and binaural echoes.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, summary) in COMMANDS.items():
        sub.add_parser(name, help=summary, add_help=False)
    return parser


def error_report(err: BaseException) -> tuple[int, str]:
    """(exit code, one line) for an error that ends a command: 2 for bad input (a missing or wrong file, a value out of
    range, a config that does not parse), 1 for a failure (a full or read-only disk, out of memory, anything else)."""
    import yaml

    from avs_depth_core.files import OutputError, describe_os_error

    text = str(err).strip()
    if isinstance(err, OutputError):
        return 1, text
    if isinstance(err, INPUT_ERRORS):
        return 2, text
    if isinstance(err, yaml.YAMLError):
        return 2, f"not valid YAML: {' '.join(str(err).split())}"
    if isinstance(err, OSError):
        return 1, describe_os_error(err)
    if isinstance(err, MemoryError):
        return 1, "out of memory; use a smaller --batch-size or fewer --num-workers, or close other programs"
    return 1, f"{type(err).__name__}: {text or 'no message'} (rerun with --debug for the traceback)"


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_reporting_errors(prog: str, command: Callable[[], int | None], debug: bool | None = None) -> int:
    """Run a command under the one error policy: an error is one line on stderr naming what, where and how to fix it,
    exit code 2 for bad input and 1 for failures; Ctrl-C and SIGTERM end it as an interrupt (exit 130) after the
    temporaries are removed. `debug` (default: $AVS_DEPTH_DEBUG) prints the traceback too."""
    if debug is None:
        debug = os.environ.get("AVS_DEPTH_DEBUG", "") not in ("", "0")
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)  # a service manager's or torchrun's stop cleans up like Ctrl-C
    try:
        return int(command() or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            traceback.print_exc()
        code, text = error_report(err)
        print(f"{prog}: error: {text}", file=sys.stderr)
        return code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = bool(argv) and argv[0] == "--debug"
    if debug:
        argv = argv[1:]
    if not argv or argv[0] not in COMMANDS:
        parser = build_parser()
        if argv and not argv[0].startswith("-"):
            parser.error(f"unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}")
        parser.print_help()
        return 0 if argv else 2
    name = argv[0]
    module_name, summary = COMMANDS[name]
    try:  # the command's imports (torch, ...) take seconds: Ctrl-C during them is an interrupt too, not a traceback
        module = importlib.import_module(f"{__name__}.{module_name}")
    except KeyboardInterrupt:
        print(f"avs-depth {name}: interrupted before it started; nothing was written", file=sys.stderr)
        return 130
    parser = argparse.ArgumentParser(prog=f"avs-depth {name}", description=summary)
    module.add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="on an error, print the traceback too")
    args = parser.parse_args(argv[1:])
    return run_reporting_errors(f"avs-depth {name}", lambda: module.run(args), debug=debug or args.debug or None)
