"""Render synthetic audio-visual sequences into a rosbag2 (the library of `avs-depth simulate`, cli/simulate.py).

Per frame the bag gets camera/color/image_raw (rgb8), camera/color/camera_info, camera/depth/image (32FC1 metres, NaN
invalid) and audio/echo (EchoStamped); --imu adds imu/data (sensor_msgs/Imu, stamped like the image); a dynamic world
(--dynamic, sim/dynamic.py) adds camera/instances (16UC1 object ids, 0 = none) and camera/objects (ObjectStates: kind,
motion, moving flag, pose, residual motion per object). Image, depth, camera_info, instances and objects share
header.stamp; the simulated rig is synchronised, so the echo's stamp (its chirp's emission time) equals the image stamp.
Stamps start at a fixed epoch, frames follow at --rate, and sequences are separated by one frame period plus GAP_S
seconds. Each sequence is recorded in the bag metadata (name, split, [start_ns, end_ns) with end_ns = last stamp + one
frame period, scene (its description at scale 1), scale, preset, room_size_m (as rendered, i.e. scaled), ...; a dynamic
world's objects under "objects").

Splits are by sequence, in index order (train first, then val, then test), sized by split_counts().
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from avs_depth_core import files
from avs_depth_core.data import topics
from avs_depth_core.data.bag import BagWriter, make_msg, typestore
from avs_depth_core.data.instances import instance_fields, objects_fields
from avs_depth_core.data.messages import camera_info_fields, echo_fields, image_fields
from avs_depth_core.sim.dynamic import DynamicWorld
from avs_depth_core.sim.randomise import AcousticRanges
from avs_depth_core.sim.world import SimFrame, SimSequence, SimWorld

EPOCH_NS = 1_700_000_000 * 1_000_000_000  # 2023-11-14T22:13:20Z: a fixed start so bags are reproducible
GAP_S = 1.0
CAMERA_FRAME = "camera_color_optical_frame"
MIC_FRAME = "mic_array"
SPLITS = ("train", "val", "test")


def split_counts(n: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> tuple[int, int, int]:
    """Sequences per split (train, val, test) for n sequences.

    Largest-remainder rounding of n * fractions (ties go to the earlier split); then every split with a positive fraction
    gets at least one sequence while another split can spare one, in the order train, test, val (taken from the largest).
    With the default 0.8/0.1/0.1: 1 -> (1, 0, 0), 2 -> (1, 0, 1), 3 -> (1, 1, 1), 10 -> (8, 1, 1), 25 -> (20, 3, 2).
    """
    if n < 1:
        raise ValueError(f"need at least one sequence, got {n}")
    if len(fractions) != 3 or any(not math.isfinite(f) or f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split fractions (train, val, test) must be three non-negative numbers summing to 1, "
                         f"got {list(fractions)}")
    exact = [n * f for f in fractions]
    counts = [math.floor(x) for x in exact]
    for k in sorted(range(3), key=lambda k: (-(exact[k] - counts[k]), k))[: n - sum(counts)]:
        counts[k] += 1
    for k in (0, 2, 1):
        if fractions[k] > 0 and counts[k] == 0:
            donor = max((j for j in range(3) if counts[j] > 1), key=lambda j: counts[j], default=None)
            if donor is not None:
                counts[donor] -= 1
                counts[k] += 1
    return counts[0], counts[1], counts[2]


def write_frame(writer: BagWriter, frame: SimFrame, stamp_ns: int, speed_of_sound: float) -> None:
    """The frame's four messages, all stamped stamp_ns (the synchronised rig emits its chirp at the camera's capture)."""
    height, width = frame.depth.shape
    writer.write(topics.IMAGE, make_msg(topics.IMAGE_TYPE, stamp_ns, CAMERA_FRAME, image_fields(frame.rgb, "rgb8")),
                 topics.IMAGE_TYPE)
    writer.write(topics.CAMERA_INFO, make_msg(topics.CAMERA_INFO_TYPE, stamp_ns, CAMERA_FRAME,
                                              camera_info_fields(frame.K, width, height)), topics.CAMERA_INFO_TYPE)
    writer.write(topics.DEPTH, make_msg(topics.IMAGE_TYPE, stamp_ns, CAMERA_FRAME, image_fields(frame.depth, "32FC1")),
                 topics.IMAGE_TYPE)
    echo = echo_fields(frame.echo, frame.sample_rate, frame.chirp, frame.emission_offset, speed_of_sound=speed_of_sound,
                       channel_order="left,right")
    writer.write(topics.ECHO, make_msg(topics.ECHO_TYPE, stamp_ns, MIC_FRAME, echo), topics.ECHO_TYPE)
    if frame.instances is not None:
        writer.write(topics.INSTANCES, make_msg(topics.IMAGE_TYPE, stamp_ns, CAMERA_FRAME, instance_fields(frame.instances)),
                     topics.IMAGE_TYPE)
        writer.write(topics.OBJECTS, make_msg(topics.OBJECTS_TYPE, stamp_ns, CAMERA_FRAME, objects_fields(frame.objects)),
                     topics.OBJECTS_TYPE)


def rotation_to_quaternion(R: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation matrix (Shepperd's method: the largest of the four squared components first)."""
    t = np.trace(R)
    if t > max(R[0, 0], R[1, 1], R[2, 2]):
        w = math.sqrt(1 + t) / 2
        x, y, z = (R[2, 1] - R[1, 2]) / (4 * w), (R[0, 2] - R[2, 0]) / (4 * w), (R[1, 0] - R[0, 1]) / (4 * w)
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        q = np.zeros(3)
        q[i] = math.sqrt(max(0.0, 1 + R[i, i] - R[j, j] - R[k, k])) / 2
        w = (R[k, j] - R[j, k]) / (4 * q[i])
        q[j], q[k] = (R[j, i] + R[i, j]) / (4 * q[i]), (R[k, i] + R[i, k]) / (4 * q[i])
        x, y, z = q
    return float(x), float(y), float(z), float(w)


def rotation_vector(R: np.ndarray) -> np.ndarray:
    """Axis * angle (radians) of a rotation matrix (angles below 180 degrees)."""
    angle = math.acos(min(1.0, max(-1.0, (np.trace(R) - 1) / 2)))
    if angle < 1e-9:
        return np.zeros(3)
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / (2 * math.sin(angle))
    return axis * angle


def rotation_from_vector(v: np.ndarray) -> np.ndarray:
    """Rodrigues: the rotation matrix of axis * angle v (radians)."""
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.eye(3)
    k = np.asarray(v, float) / angle
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


@dataclass(frozen=True)
class ImuErrors:
    """A documented deviation from a perfect IMU (both 0: exact). Per sequence a constant gyro bias (std drift_dps
    degrees per second per axis) that the attitude integrates (error drift_dps * t after t seconds), and per message an
    independent attitude error (std noise_deg degrees per axis); the angular velocity carries the bias. Drawn from the
    sequence's seventh random stream (SeedSequence([seed, index]).spawn(7)[6]), so images, depth and echoes are those of
    the exact-IMU world."""

    noise_deg: float = 0.0
    drift_dps: float = 0.0

    def __post_init__(self) -> None:
        if not (self.noise_deg >= 0 and self.drift_dps >= 0 and math.isfinite(self.noise_deg + self.drift_dps)):
            raise ValueError(f"IMU noise and drift must be non-negative degrees (per second), got {self}")

    def draw(self, seq: SimSequence, frames: int) -> tuple[np.ndarray, np.ndarray]:
        """(bias (3,) rad/s, attitude errors (frames, 3, 3)) of a sequence."""
        rng = np.random.default_rng(np.random.SeedSequence([seq.world.seed, seq.index]).spawn(7)[6])
        bias = rng.normal(0, math.radians(self.drift_dps), 3)
        noise = rng.normal(0, math.radians(self.noise_deg), (frames, 3))
        errors = np.stack([rotation_from_vector(bias * seq.time_s(i)) @ rotation_from_vector(noise[i])
                           for i in range(frames)])
        return bias, errors


def _turn_rate(seq: SimSequence, i: int, frames: int) -> np.ndarray:
    """Body-frame angular velocity (rad/s) at frame i: the rotation to the next frame over the frame period (the last
    frame: from the previous one; a one-frame sequence: zero)."""
    if frames == 1:
        return np.zeros(3)
    a = min(i, frames - 2)
    R0, R1 = seq.pose(a)[:3, :3], seq.pose(a + 1)[:3, :3]
    return rotation_vector(R0.T @ R1) * seq.world.rate_hz


def imu_fields(pose: np.ndarray, omega: np.ndarray) -> dict:
    """sensor_msgs/Imu fields of a camera at `pose` (camera-to-world) turning at `omega` (rad/s, camera frame):
    orientation = the camera's attitude in the world (what an IMU with attitude fusion reports, here mounted in the
    camera's optical frame); no linear acceleration (covariance[0] = -1, REP 145's 'not provided')."""
    types = typestore().types
    x, y, z, w = rotation_to_quaternion(pose[:3, :3])
    unknown = np.zeros(9)
    unknown[0] = -1
    vector = types["geometry_msgs/msg/Vector3"]
    return {"orientation": types["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w),
            "orientation_covariance": np.zeros(9), "angular_velocity_covariance": np.zeros(9),
            "angular_velocity": vector(x=float(omega[0]), y=float(omega[1]), z=float(omega[2])),
            "linear_acceleration": vector(x=0.0, y=0.0, z=0.0), "linear_acceleration_covariance": unknown}


def frame_bytes(height: int, width: int, echo_samples: int, dynamic: bool = False) -> int:
    """About what one frame takes in the bag: rgb8 image, 32FC1 depth, two float32 echo channels, headers and CameraInfo
    (dynamic: a 16-bit instance map and the objects' states)."""
    return height * width * (3 + 4 + 2 * dynamic) + 2 * 4 * echo_samples + 2048 + 2048 * dynamic


def frame_stamp(start_ns: int, i: int, rate_hz: float) -> int:
    return start_ns + round(i * 1e9 / rate_hz)


def write_sequence(writer: BagWriter, seq: SimSequence, frames: int, start_ns: int, progress: tqdm | None = None,
                   imu: ImuErrors | None = None) -> int:
    """Write frames 0..frames-1 of seq with stamps from start_ns (imu: and topics.IMU with those errors); returns the
    last stamp."""
    stamp = start_ns
    if imu is not None:
        bias, errors = imu.draw(seq, frames)
    for i in range(frames):
        stamp = frame_stamp(start_ns, i, seq.world.rate_hz)
        frame = seq.frame(i)
        write_frame(writer, frame, stamp, seq.world.acoustics.c)
        if imu is not None:
            measured = frame.pose.copy()
            measured[:3, :3] = frame.pose[:3, :3] @ errors[i]
            fields = imu_fields(measured, _turn_rate(seq, i, frames) + bias)
            writer.write(topics.IMU, make_msg(topics.IMU_TYPE, stamp, CAMERA_FRAME, fields), topics.IMU_TYPE)
        if progress is not None:
            progress.update(1)
    return stamp


@dataclass(frozen=True)
class RecordedBag:
    """What record_bag wrote."""

    path: Path
    storage: str
    preset: str
    sequences: int
    frames: int  # per sequence
    split_counts: tuple[int, int, int]  # sequences in train, val, test
    messages: int
    topics: int
    seconds: float
    size_mb: float

    def describe(self) -> str:
        total = self.sequences * self.frames
        train, val, test = self.split_counts
        return (f"wrote {self.path} ({self.storage}, {self.size_mb:.1f} MB): preset {self.preset}, {self.sequences} sequences "
                f"(train {train}, val {val}, test {test}) x {self.frames} frames = {total} frames, {self.messages} messages "
                f"on {self.topics} topics, {self.seconds:.1f} s ({total / self.seconds:.1f} frames/s)")


def record_bag(out: str | Path, *, preset: str = "bv2", sequences: int = 10, frames: int = 200, seed: int = 0,
               height: int = 256, width: int = 512, rate_hz: float = 10.0, scale_ambiguous: bool = False,
               scale_range: tuple[float, float] | None = None, splits: tuple[float, float, float] = (0.8, 0.1, 0.1),
               storage: str = "mcap", acoustic_ranges: AcousticRanges | None = None, dynamic: bool = False,
               supersample: int = 1, imu: bool | ImuErrors = False) -> RecordedBag:
    """Simulate `sequences` sequences of `frames` frames of the `preset` world into the new rosbag2 `out`.

    scale_ambiguous: each scene, its textures, lights and camera path scaled by a log-uniform factor in scale_range
    (default (0.5, 2)) so the RGB holds no absolute-scale cue; splits: fractions of the sequences (split_counts);
    acoustic_ranges: acoustic domain randomisation (sim/randomise.py), each sequence's draw recorded in its metadata
    under "acoustics" (None: the fixed chain and room, and no such key); dynamic: moving objects (sim/dynamic.py), their
    instance maps and states on topics.INSTANCES / topics.OBJECTS and each sequence's objects in its metadata under
    "objects" (False: the static world, byte for byte as without the option); supersample: N x N colour samples per pixel,
    box-filtered (render.Renderer; 1: one per pixel, as before); imu: also record topics.IMU (sensor_msgs/Imu per frame:
    the camera's attitude and angular velocity, imu_fields; an ImuErrors adds its bias and noise) for a Monodepth2 with
    model.pose_prior imu.
    """
    if scale_range is not None and not scale_ambiguous:
        raise ValueError("--scale-range only applies with --scale-ambiguous")
    if not (rate_hz > 0 and math.isfinite(rate_hz)):
        raise ValueError(f"--rate must be a positive number of Hz, got {rate_hz}")
    if seed < 0:
        raise ValueError(f"--seed must be non-negative, got {seed}")
    scale_range = tuple(scale_range) if scale_range is not None else (0.5, 2.0)
    if not 0 < scale_range[0] <= scale_range[1]:
        raise ValueError(f"--scale-range needs 0 < LO <= HI, got {list(scale_range)}")
    if height < 8 or width < 8:
        raise ValueError(f"--height and --width must be at least 8 pixels, got {height}x{width}")
    if sequences < 1 or frames < 1:
        raise ValueError(f"need at least one sequence of at least one frame, got {sequences} x {frames}")
    counts = split_counts(sequences, tuple(splits))
    out = Path(out)
    files.sweep_temporaries(out.parent)
    world = (DynamicWorld if dynamic else SimWorld)(preset, seed=seed, height=height, width=width,
                                                    scale_ambiguous=scale_ambiguous, scale_range=scale_range,
                                                    rate_hz=rate_hz, acoustic_ranges=acoustic_ranges,
                                                    supersample=supersample)
    files.check_output(out, sequences * frames * frame_bytes(height, width, world.echo_samples, dynamic), kind="new")
    split_names = [name for name, count in zip(SPLITS, counts, strict=True) for _ in range(count)]
    period_ns = round(1e9 / rate_hz)
    started = time.perf_counter()
    with BagWriter(out, storage=storage) as writer, \
            tqdm(total=sequences * frames, unit="frame", desc=f"simulate {preset}", dynamic_ncols=True) as progress:
        start_ns = EPOCH_NS
        for index, split in enumerate(split_names):
            seq = world.sequence(index)
            progress.set_postfix_str(f"{seq.name} ({split}, scale {seq.scale:.2f})")
            imu_errors = imu if isinstance(imu, ImuErrors) else ImuErrors() if imu else None
            last_ns = write_sequence(writer, seq, frames, start_ns, progress, imu_errors)
            end_ns = last_ns + period_ns
            extra = {"acoustics": seq.variation.describe()} if seq.variation is not None else {}
            if dynamic:
                extra["objects"] = seq.describe_objects()
            if supersample > 1:
                extra["supersample"] = supersample
            writer.add_sequence(seq.name, split, start_ns, end_ns, scene=seq.scene.name, scale=seq.scale, preset=preset,
                                index=index, frames=frames, seed=seed, rate_hz=rate_hz, max_depth=world.max_depth,
                                scale_ambiguous=scale_ambiguous, room_size_m=[round(float(x), 3) for x in seq.scene.size],
                                **extra)
            start_ns = end_ns + round(GAP_S * 1e9)
        messages, topics_written = sum(writer.counts.values()), len(writer.counts)
    size_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    return RecordedBag(out, storage, preset, sequences, frames, counts, messages, topics_written,
                       time.perf_counter() - started, size_mb)
