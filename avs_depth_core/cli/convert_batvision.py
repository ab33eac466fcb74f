"""`avs-depth convert-batvision`: a BatVision V1 or V2 download -> one rosbag2 (avs_depth_core.data.batvision).

    avs-depth convert-batvision --root BatvisionV2/ --version 2 --out bv2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from avs_depth_core.data import batvision


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True, type=Path, help="BatVision root (BV1: holds train.csv; BV2: location folders)")
    parser.add_argument("--version", required=True, type=int, choices=(1, 2), help="BatVision version")
    parser.add_argument("--out", required=True, type=Path, help="output rosbag2 folder (must not exist)")
    parser.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"), help="rosbag2 storage plugin")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip rows naming a missing/unreadable/bad file (each is printed and counted) instead of failing")
    parser.add_argument("--splits", default=",".join(batvision.SPLITS),
                        help="comma-separated splits to convert (default: all three)")
    parser.add_argument("--locations", default="", help="BV2: comma-separated location folders (default: every one with CSVs)")
    parser.add_argument("--intrinsics", default="", help="fx,fy,cx,cy in pixels of the original images (default: assumed, "
                        f"{batvision.DEFAULT_HFOV_DEG:g} deg horizontal field of view)")
    parser.add_argument("--hfov-deg", type=float, default=batvision.DEFAULT_HFOV_DEG,
                        help="horizontal field of view of the default K")
    parser.add_argument("--bv1-image-column", default="", help="BV1: the CSV column naming the RGB image (default: found)")
    parser.add_argument("--bv1-audio-scale", type=float, default=1.0,
                        help="BV1: divide float .npy waveforms by this to bring them into [-1, 1]")
    parser.add_argument("--sample-rate", type=int, default=batvision.SAMPLE_RATE, help="expected audio sample rate in Hz")
    parser.add_argument("--period-s", type=float, default=batvision.DEFAULT_PERIOD_S, help="synthetic stamp step between rows")
    parser.add_argument("--gap-s", type=float, default=batvision.DEFAULT_GAP_S, help="synthetic stamp gap between sequences")


def run(args: argparse.Namespace) -> int:
    options = batvision.ConvertOptions(
        storage=args.storage, skip_bad=args.skip_bad, splits=tuple(s for s in args.splits.split(",") if s),
        locations=tuple(s for s in args.locations.split(",") if s), intrinsics=batvision.parse_intrinsics(args.intrinsics),
        hfov_deg=args.hfov_deg, bv1_image_column=args.bv1_image_column, bv1_audio_scale=args.bv1_audio_scale,
        sample_rate=args.sample_rate, period_s=args.period_s, gap_s=args.gap_s)
    summary = batvision.convert(args.root, args.version, args.out, options)
    print(f"{'split':<8}{'rows in':>10}{'frames out':>12}{'skipped':>10}")
    for split in batvision.SPLITS:
        if split in summary:
            s = summary[split]
            print(f"{split:<8}{s['rows']:>10}{s['frames']:>12}{s['skipped']:>10}")
    totals = {k: sum(s[k] for s in summary.values()) for k in ("rows", "frames", "skipped")}
    print(f"{'total':<8}{totals['rows']:>10}{totals['frames']:>12}{totals['skipped']:>10}")
    print(f"wrote {args.out}")
    return 0
