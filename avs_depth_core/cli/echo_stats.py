"""`avs-depth echo-stats`: statistics of recorded echoes against simulated ones (avs_depth_core.evaluation.echo_comparison).

    avs-depth echo-stats ../shared/fixtures/batvision_bv2_sample --simulated bv2_sim --distance-range 0.5 2 --out stats/
    avs-depth echo-stats recording.wav --emission-offset 256          # the table for one wav, no comparison
    avs-depth echo-stats my_bag --topic /audio/echo --limit 50 --simulated bv2_sim --out stats/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from avs_depth_core.audio.echo_stats import EchoStatsSettings
from avs_depth_core.cli.simulate import positive_int
from avs_depth_core.data import topics
from avs_depth_core.data.echo_sources import load_records
from avs_depth_core.evaluation.echo_comparison import build_report, write_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", type=Path,
                        help="recordings: .wav files, rosbag2s (their echo topic) or BatVision folders")
    parser.add_argument("--simulated", nargs="*", type=Path, default=[],
                        help="rosbag2s from `avs-depth simulate` to compare with (their echo and depth topics)")
    parser.add_argument("--distance-range", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                        help="compare only with simulated echoes whose depth map's median lies in [LO, HI] m")
    parser.add_argument("--emission-offset", type=int, default=0,
                        help="sample index of the chirp emission in .wav inputs (bags carry their own; BatVision: 0)")
    parser.add_argument("--topic", default=topics.ECHO, help=f"echo topic in bags (default {topics.ECHO})")
    parser.add_argument("--limit", type=positive_int, default=None,
                        help="at most this many recordings per input, evenly spread (default all)")
    parser.add_argument("--max-depth", type=float, default=30.0,
                        help="analysis window: emission to the round trip to this depth, plus one chirp (default 30)")
    parser.add_argument("--speed-of-sound", type=float, default=340.0, help="for the window (default 340, BatVision's)")
    parser.add_argument("--direct-search-ms", type=float, default=20.0,
                        help="the direct path is the strongest arrival within this long after the emission (default 20; "
                             "raise it for rigs with more latency, e.g. Bluetooth speakers)")
    parser.add_argument("--figures", type=int, default=1, metavar="N",
                        help="spectrogram and decay figures for the first N recordings (default 1)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for echo_stats.json, table.txt and the figures (default: print only)")


def run(args: argparse.Namespace) -> int:
    if args.emission_offset < 0:
        raise ValueError(f"--emission-offset must be >= 0, got {args.emission_offset}")
    if args.max_depth <= 0 or args.speed_of_sound <= 0 or args.direct_search_ms <= 0:
        raise ValueError("--max-depth, --speed-of-sound and --direct-search-ms must be positive")
    if args.distance_range is not None and not 0 <= args.distance_range[0] <= args.distance_range[1]:
        raise ValueError(f"--distance-range needs 0 <= LO <= HI, got {args.distance_range}")
    if args.distance_range is not None and not args.simulated:
        raise ValueError("--distance-range selects simulated echoes; give them with --simulated")
    if args.out is not None:
        from avs_depth_core import files

        files.check_output(args.out, 2_000_000, kind="folder")
    settings = EchoStatsSettings(max_depth=args.max_depth, speed_of_sound=args.speed_of_sound,
                                 direct_search_s=args.direct_search_ms / 1000)
    recorded = [r for path in args.inputs for r in load_records(path, args.emission_offset, args.topic, args.limit)]
    simulated = [r for path in args.simulated for r in load_records(path, 0, args.topic, args.limit)]
    report = build_report(recorded, simulated, settings,
                          tuple(args.distance_range) if args.distance_range is not None else None)
    print(f"{len(recorded)} recording(s); {len(report.simulated)} simulated echo(es) compared"
          + (f" (of {len(simulated)}, depth median {args.distance_range[0]}-{args.distance_range[1]} m)"
             if args.distance_range else ""), file=sys.stderr)
    print(report.table())
    if args.out is not None:
        for path in write_report(args.out, report, args.figures):
            print(f"wrote {path}", file=sys.stderr)
    return 0
