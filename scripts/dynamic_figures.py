"""Figures of a dynamic bag (`avs-depth simulate --dynamic`): per frame the image, its moving-object masks and the depth.

    .venv/bin/python scripts/dynamic_figures.py --bag bv1_dyn --split test --count 6 --out figures/dynamic

Frames are spread evenly over the split; each PNG is avs_depth_core.evaluation.dynamic_figure.save_dynamic_figure (the
same layout the dynamic-region ablation adds its predictions and error maps to).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from avs_depth_core.data import topics
from avs_depth_core.data.bag import bag_sequences, iter_raw, message_stamp_ns, open_bag, topic_connections
from avs_depth_core.data.instances import read_instances
from avs_depth_core.data.messages import image_to_depth, image_to_rgb
from avs_depth_core.evaluation.dynamic_figure import save_dynamic_figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bag", type=Path, required=True)
    parser.add_argument("--split", default="test", help="train, val, test or all (default test)")
    parser.add_argument("--count", type=int, default=6, help="figures to write (default 6)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    args = parser.parse_args()
    if args.count < 1:
        parser.error("--count must be positive")
    sequences = [s for s in bag_sequences(args.bag) if args.split == "all" or s["split"] == args.split]
    if not sequences:
        parser.error(f"{args.bag}: no sequence in split {args.split!r}")
    frames = read_instances(args.bag)
    if not frames:
        parser.error(f"{args.bag}: no {topics.INSTANCES}; simulate it with --dynamic")
    stamps = [s for s in sorted(frames) if any(q["start_ns"] <= s < q["end_ns"] for q in sequences)]
    picked = {stamps[int(round(k))] for k in np.linspace(0, len(stamps) - 1, min(args.count, len(stamps)))}
    images: dict[int, np.ndarray] = {}
    depths: dict[int, np.ndarray] = {}
    max_depth = float(sequences[0].get("max_depth", 30.0))
    with open_bag(args.bag) as reader:
        conns = topic_connections(reader, topics.IMAGE, args.bag) + topic_connections(reader, topics.DEPTH, args.bag)
        for conn, raw in iter_raw(reader, conns, args.bag):
            stamp = message_stamp_ns(reader, conn.msgtype, raw)
            if stamp in picked:
                msg = reader.deserialize(raw, conn.msgtype)
                if conn.topic == topics.IMAGE:
                    images[stamp] = image_to_rgb(msg)
                else:
                    depths[stamp] = image_to_depth(msg)
    for stamp in sorted(picked):
        frame = frames[stamp]
        name = next(q["name"] for q in sequences if q["start_ns"] <= stamp < q["end_ns"])
        path = save_dynamic_figure(args.out / f"{name}_{stamp}.png", images[stamp], depths[stamp], frame.instances,
                                   frame.moving_ids(), max_depth=max_depth, title=f"{name} stamp {stamp}")
        print(path)


if __name__ == "__main__":
    main()
