"""`avs-depth simulate`: render synthetic audio-visual sequences into a rosbag2 (avs_depth_core.sim.record).

    avs-depth simulate --preset bv2 --sequences 20 --frames 200 --seed 7 --out bv2_sim        # halls, 30 m
    avs-depth simulate --preset bv1 --scale-ambiguous --sequences 20 --out bv1_amb            # offices, 12 m
    avs-depth simulate --preset bv2 --randomise-acoustics --out bv2_rand        # ranges of config/sim_acoustics.yaml
    avs-depth simulate --preset bv2 --randomise-acoustics my_ranges.yaml --out bv2_rand
    avs-depth simulate --preset bv1 --dynamic --out bv1_dyn                     # moving objects, instance maps
"""

from __future__ import annotations

import argparse
from pathlib import Path

from avs_depth_core.sim.presets import preset_names
from avs_depth_core.sim.randomise import load_acoustic_ranges
from avs_depth_core.sim.record import ImuErrors, record_bag


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=preset_names(), default="bv2",
                        help="bv1: offices, depth clipped at 12 m; bv2: larger halls, 30 m; bv2_rooms: corridors, classrooms and "
                             "offices, 30 m; bv2_mix: bv2 and bv2_rooms, half each (default bv2)")
    parser.add_argument("--sequences", type=positive_int, default=10, help="number of sequences (scenes) (default 10)")
    parser.add_argument("--frames", type=positive_int, default=200, help="frames per sequence (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the output is a function of all arguments (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="output rosbag2 folder (must not exist)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage plugin (default mcap)")
    parser.add_argument("--height", type=positive_int, default=256, help="image height in pixels (default 256)")
    parser.add_argument("--width", type=positive_int, default=512, help="image width in pixels (default 512)")
    parser.add_argument("--rate", type=float, default=10.0, help="frame (and chirp) rate in Hz (default 10)")
    parser.add_argument("--scale-ambiguous", action="store_true",
                        help="scale each scene, its textures, lights and camera path by a random factor so the RGB holds "
                             "no absolute-scale cue while depth and echo delays scale")
    parser.add_argument("--scale-range", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                        help="with --scale-ambiguous: the scale factor is log-uniform in [LO, HI] (default 0.5 2)")
    parser.add_argument("--splits", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"), default=(0.8, 0.1, 0.1),
                        help="fractions of the sequences per split, by sequence; each split with a positive fraction "
                             "gets at least one sequence when there are enough (2 -> train, test; 3 -> train, val, test) "
                             "(default 0.8 0.1 0.1)")
    parser.add_argument("--randomise-acoustics", nargs="?", const="sim_acoustics.yaml", default=None, metavar="RANGES.yaml",
                        help="acoustic domain randomisation: each sequence draws its speaker-microphone chain, gains, "
                             "latency, clock, room absorption and reverberation, noise, hum and ear spacing from the "
                             "ranges in RANGES.yaml (default config/sim_acoustics.yaml); off by default")
    parser.add_argument("--dynamic", action="store_true",
                        help="add moving rigid objects (with the camera, along the optical axis, crossing) and static ones "
                             "of the same kinds; writes camera/instances and camera/objects (README: dynamic world); "
                             "off by default")
    parser.add_argument("--supersample", type=positive_int, default=1, metavar="N",
                        help="anti-aliased images: render N x N colour samples per pixel and average them (a real "
                             "camera's pixel integrates its area; one nearest texel per pixel aliases); depth stays the "
                             "pixel centre's (default 1)")
    parser.add_argument("--imu", action="store_true",
                        help="also record imu/data (sensor_msgs/Imu per frame: the camera's attitude and angular "
                             "velocity, as a gyro with attitude fusion gives them) for Monodepth2's model.pose_prior imu; "
                             "off by default")
    parser.add_argument("--imu-noise", type=float, nargs=2, metavar=("DEG", "DEG_PER_S"), default=None,
                        help="with --imu: an imperfect IMU, attitude noise of DEG per message and a gyro bias of "
                             "DEG_PER_S per sequence (standard deviations per axis; default exact)")


def run(args: argparse.Namespace) -> int:
    from avs_depth_core.train.run import find_config

    ranges = None
    if args.randomise_acoustics is not None:
        ranges = load_acoustic_ranges(find_config(args.randomise_acoustics))
    imu = args.imu
    if args.imu_noise is not None:
        if not args.imu:
            raise ValueError("--imu-noise only applies with --imu")
        imu = ImuErrors(*args.imu_noise)
    recorded = record_bag(args.out, preset=args.preset, sequences=args.sequences, frames=args.frames, seed=args.seed,
                          height=args.height, width=args.width, rate_hz=args.rate, scale_ambiguous=args.scale_ambiguous,
                          scale_range=tuple(args.scale_range) if args.scale_range is not None else None,
                          splits=tuple(args.splits), storage=args.storage, acoustic_ranges=ranges,
                          dynamic=args.dynamic, supersample=args.supersample, imu=imu)
    print(recorded.describe())
    return 0
