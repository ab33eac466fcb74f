"""`avs-depth bag-info DIR`: what a rosbag2 holds and whether the datasets can use it (avs_depth_core.data.bag_info)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from avs_depth_core.data.bag_info import format_summary, summarise_bag
from avs_depth_core.data.pairing import DEFAULT_TOLERANCE_NS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, help="rosbag2 folder (or .mcap/.db3 file)")
    parser.add_argument("--tolerance-s", type=float, default=DEFAULT_TOLERANCE_NS / 1e9,
                        help="echo-frame pairing tolerance in seconds (default: half the 10 Hz chirp period)")
    parser.add_argument("--depth-tolerance-s", type=float, default=0.001, help="depth-frame pairing tolerance in seconds")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    for option, value in (("--tolerance-s", args.tolerance_s), ("--depth-tolerance-s", args.depth_tolerance_s)):
        if not value >= 0 or value == float("inf"):
            raise ValueError(f"{option} must be a finite number of seconds >= 0, got {value}")
    summary = summarise_bag(args.bag, args.tolerance_s, args.depth_tolerance_s)
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    return 0
