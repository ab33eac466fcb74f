"""What the dynamic world's frames show: per motion case the share of frames where an object of that case covers at
least 0.5 % of the image, the dynamic region's share of the image, and how often the floor is visible, with and without
the objects (the same seed's plain world).

    .venv/bin/python scripts/dynamic_world_stats.py --preset bv1 --sequences 10 --frames 100 --stride 5

Objects and their trajectories do not depend on the image size, so a small one (default 64x128) gives the same picture.
"""

from __future__ import annotations

import argparse

import numpy as np

from avs_depth_core.evaluation.regions import DYNAMIC_MIN_FRACTION
from avs_depth_core.sim.dynamic import CASES, STATIC, DynamicWorld, floor_share
from avs_depth_core.sim.world import PRESETS, SimWorld


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="bv1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sequences", type=int, default=10)
    parser.add_argument("--frames", type=int, default=100, help="frames per sequence looked at (default 100)")
    parser.add_argument("--stride", type=int, default=5, help="every STRIDE-th frame (default 5)")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    args = parser.parse_args()
    if min(args.sequences, args.frames, args.stride) < 1:
        parser.error("--sequences, --frames and --stride must be positive")
    dynamic = DynamicWorld(args.preset, seed=args.seed, height=args.height, width=args.width)
    plain = SimWorld(args.preset, seed=args.seed, height=args.height, width=args.width)
    seen = dict.fromkeys((*CASES, STATIC), 0)
    floors: dict[str, list[float]] = {"plain": [], "dynamic": []}
    shares, n = [], 0
    for s in range(args.sequences):
        seq, ref = dynamic.sequence(s), plain.sequence(s)
        for i in range(0, args.frames, args.stride):
            rgb, depth, instances = seq.render_instances(i)
            frame = seq.assemble(i, rgb, depth, np.zeros((2, 1), np.float32))
            states = seq.object_states(i)
            big = {o.id for o in seq.objects if (instances == o.id).mean() >= DYNAMIC_MIN_FRACTION}
            for motion in {o.motion for o in seq.objects if o.id in big}:
                seen[motion] += 1
            moving = [int(k) for k, m in zip(states.ids, states.moving, strict=True) if m and int(k) in big]
            shares.append(float(np.isin(instances, moving).mean()))
            floors["dynamic"].append(floor_share(frame))
            rgb, depth = ref.render(i)
            floors["plain"].append(floor_share(ref.assemble(i, rgb, depth, np.zeros((2, 1), np.float32))))
            n += 1
    print(f"{args.preset} seed {args.seed}: {args.sequences} sequences x {len(range(0, args.frames, args.stride))} frames")
    print("frames with an object of the case >= 0.5 % of the image: "
          + ", ".join(f"{m} {100 * c / n:.0f} %" for m, c in seen.items()))
    print(f"dynamic region (moving objects >= 0.5 %): mean {100 * np.mean(shares):.1f} % of the image, "
          f"present in {100 * np.mean(np.array(shares) > 0):.0f} % of the frames")
    for name, values in floors.items():
        v = np.array(values)
        print(f"floor, {name} world: >= 1 % of the image in {100 * (v >= 0.01).mean():.0f} % of the frames, "
              f">= 5 % in {100 * (v >= 0.05).mean():.0f} %")


if __name__ == "__main__":
    main()
