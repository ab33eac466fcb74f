"""Speed of the synthetic world (avs_depth_core.sim): render, echo and end-to-end frames/s, measured in one run.

    .venv/bin/python benchmarks/simulate_speed.py [--preset bv2] [--frames 100] [--height 256 --width 512] [--dynamic]

One loop does, per frame, what `avs-depth simulate` does and times each stage: render (RGB + depth: ray casting,
shading), echo (the binaural recording of one chirp), then the four messages serialised into a rosbag2. render and echo
frames/s are per stage; end-to-end covers all three. Scene set-up (room, textures, acoustic patches) happens once per
sequence and is reported apart, and a few warm-up frames are left out (the first frames of a process pay for growing
its heap). Target: 20 frames/s end-to-end at 256x512 on 2 cores. --dynamic times the world with moving objects
(sim/dynamic.py: render with the instance map, echo with the objects, two more messages) and prints what the frames
show: per motion case the share of frames where an object of that case covers at least 0.5 % of the image, and the
share of frames whose floor covers at least 5 %.

Each figure is given per wall-clock second and per CPU-second of this process: on a machine shared with other work (see
the printed load average) the wall figures drop, the CPU figures much less.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from avs_depth_core.data.bag import BagWriter
from avs_depth_core.sim.dynamic import DynamicWorld, floor_share
from avs_depth_core.sim.presets import preset_names
from avs_depth_core.sim.record import EPOCH_NS, frame_stamp, write_frame
from avs_depth_core.sim.world import SimWorld


class Clock:
    """Wall and process-CPU seconds since the previous lap."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        out = (wall - self.wall, cpu - self.cpu)
        self.wall, self.cpu = wall, cpu
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=preset_names(), default="bv2")
    parser.add_argument("--frames", type=int, default=100, help="timed frames (default 100)")
    parser.add_argument("--warmup", type=int, default=5, help="frames before the timed ones (default 5)")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--dynamic", action="store_true", help="the world with moving objects (simulate --dynamic)")
    args = parser.parse_args()
    if args.frames < 1 or args.warmup < 0:
        parser.error("--frames must be positive and --warmup non-negative")

    world = (DynamicWorld if args.dynamic else SimWorld)(args.preset, seed=args.seed, height=args.height, width=args.width)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"simulate speed: preset {args.preset}, {args.height}x{args.width}, {args.frames} frames "
          f"(+{args.warmup} warm-up), {world.echo_samples} echo samples x 2 channels, rosbag2 {args.storage}"
          f"{', dynamic' if args.dynamic else ''}; "
          f"{cores} cores, load average {os.getloadavg()[0]:.1f}")

    clock = Clock()
    seq = world.sequence(0)
    setup = clock.lap()
    totals = {"render": [0.0, 0.0], "echo": [0.0, 0.0], "write": [0.0, 0.0]}
    seen: dict[str, int] = {}
    floor_frames = 0
    with tempfile.TemporaryDirectory() as tmp:
        with BagWriter(Path(tmp) / "bag", storage=args.storage) as writer:
            for i in range(args.warmup + args.frames):
                clock.lap()
                if args.dynamic:
                    rgb, depth, instances = seq.render_instances(i)
                else:
                    rgb, depth = seq.render(i)
                render = clock.lap()
                echo = seq.echo(i)
                echo_t = clock.lap()
                frame = seq.assemble(i, rgb, depth, echo)
                if args.dynamic:
                    frame = replace(frame, instances=instances, objects=seq.object_states(i))
                write_frame(writer, frame, frame_stamp(EPOCH_NS, i, world.rate_hz), world.acoustics.c)
                write = clock.lap()
                if i >= args.warmup and args.dynamic:
                    floor_frames += floor_share(frame) >= 0.05
                    for motion in {o.motion for o in seq.objects
                                   if (frame.instances == o.id).mean() >= 0.005}:
                        seen[motion] = seen.get(motion, 0) + 1
                if i >= args.warmup:
                    for key, lap in (("render", render), ("echo", echo_t), ("write", write)):
                        totals[key][0] += lap[0]
                        totals[key][1] += lap[1]
        size = sum(p.stat().st_size for p in (Path(tmp) / "bag").iterdir()) / 1e6

    n = args.frames

    def rate(wall: float, cpu: float) -> str:
        return f"{n / wall:7.1f} frames/s wall ({wall / n * 1e3:5.1f} ms/frame), {n / cpu:7.1f} per CPU-second"

    end_to_end = [sum(v[k] for v in totals.values()) for k in (0, 1)]
    print(f"scene set-up:  {setup[0] * 1e3:7.1f} ms per sequence ({seq.scene.name})")
    print(f"render:        {rate(*totals['render'])}")
    print(f"echo:          {rate(*totals['echo'])}")
    print(f"bag writing:   {rate(*totals['write'])}  ({size / (n + args.warmup):.2f} MB/frame)")
    print(f"end-to-end:    {rate(*end_to_end)}  (render + echo + bag writing)")
    with_setup = (end_to_end[0] + setup[0], end_to_end[1] + setup[1])
    print(f"incl. set-up:  {rate(*with_setup)}  (one {n}-frame sequence)")
    if args.dynamic:
        shown = ", ".join(f"{m} {100 * seen.get(m, 0) / n:.0f} %" for m in ("with_camera", "axial", "crossing", "static"))
        print(f"objects of >= 0.5 % of the image, share of frames: {shown}; floor >= 5 % of the image: "
              f"{100 * floor_frames / n:.0f} % of frames")


if __name__ == "__main__":
    main()
