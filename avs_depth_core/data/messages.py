"""Conversions between numpy arrays and ROS message fields, for rosbags and rclpy messages alike (duck-typed).

Builders return plain field dicts, so the same code fills a rosbags dataclass or an rclpy message.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from avs_depth_core.audio.chirp import ChirpSpec

# encoding -> (dtype, channels). REP 118: depth is 32FC1 metres; 16UC1 millimetres is accepted on input.
ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("u1", 3), "bgr8": ("u1", 3), "rgba8": ("u1", 4), "bgra8": ("u1", 4), "mono8": ("u1", 1),
    "32FC1": ("f4", 1), "16UC1": ("u2", 1), "mono16": ("u2", 1),
}
COLOUR_ENCODINGS = ("rgb8", "bgr8", "mono8")


def _decode(msg: Any, where: str) -> np.ndarray:
    enc = msg.encoding
    if enc not in ENCODINGS:
        raise ValueError(f"{where}: unsupported image encoding {enc!r}; expected one of {sorted(ENCODINGS)}")
    kind, channels = ENCODINGS[enc]
    dtype = np.dtype(kind).newbyteorder(">" if msg.is_bigendian else "<")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = w * channels * dtype.itemsize
    buf = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data, dtype=np.uint8)
    if step < row_bytes or buf.size < step * h:
        raise ValueError(f"{where}: {enc} image {w}x{h} needs step >= {row_bytes} and {step * h} bytes, "
                         f"got step {step} and {buf.size} bytes")
    rows = buf[: step * h].reshape(h, step)[:, :row_bytes]
    arr = np.ascontiguousarray(rows).view(dtype).reshape(h, w, channels)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def image_to_rgb(msg: Any, where: str = "image") -> np.ndarray:
    """A colour image message as an (H, W, 3) uint8 RGB array. Accepts rgb8, bgr8 and mono8; rejects others by name."""
    if msg.encoding not in COLOUR_ENCODINGS:
        raise ValueError(f"{where}: image encoding {msg.encoding!r} is not accepted; expected one of {COLOUR_ENCODINGS}")
    arr = _decode(msg, where)
    if msg.encoding == "bgr8":
        arr = arr[..., ::-1]
    elif msg.encoding == "mono8":
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr)


def image_to_depth(msg: Any, where: str = "depth") -> np.ndarray:
    """A depth image message as (H, W) float32 metres with NaN where invalid (32FC1 m, or 16UC1 mm with 0 invalid)."""
    arr = _decode(msg, where)[..., 0]
    if msg.encoding == "32FC1":
        depth = arr.astype(np.float32)
        depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
        return depth
    if msg.encoding in ("16UC1", "mono16"):
        depth = arr.astype(np.float32) / 1000.0
        depth[arr == 0] = np.nan
        return depth
    raise ValueError(f"{where}: depth encoding {msg.encoding!r} is not accepted; expected 32FC1 (m) or 16UC1 (mm)")


def image_to_labels(msg: Any, where: str = "labels") -> np.ndarray:
    """A label image (16UC1 or mono16: one id per pixel, 0 = none) as an (H, W) uint16 array."""
    if msg.encoding not in ("16UC1", "mono16"):
        raise ValueError(f"{where}: label image encoding {msg.encoding!r} is not accepted; expected 16UC1 or mono16")
    return np.ascontiguousarray(_decode(msg, where)[..., 0])


def image_fields(array: np.ndarray, encoding: str) -> dict[str, Any]:
    """Fields of a sensor_msgs/Image (without header) for an (H, W[, C]) array in the given encoding."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unsupported image encoding {encoding!r}; expected one of {sorted(ENCODINGS)}")
    kind, channels = ENCODINGS[encoding]
    arr = np.ascontiguousarray(array, dtype=np.dtype(kind).newbyteorder("<"))
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] != channels:
        raise ValueError(f"{encoding} needs an (H, W, {channels}) array, got shape {array.shape}")
    h, w = arr.shape[:2]
    return {"height": h, "width": w, "encoding": encoding, "is_bigendian": 0,
            "step": w * channels * arr.dtype.itemsize, "data": arr.reshape(-1).view(np.uint8)}


def camera_info_fields(K: np.ndarray, width: int, height: int) -> dict[str, Any]:
    """Fields of a pinhole sensor_msgs/CameraInfo (no distortion) for a 3x3 intrinsic matrix."""
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    P = np.zeros((3, 4))
    P[:, :3] = K
    return {"height": int(height), "width": int(width), "distortion_model": "plumb_bob",
            "d": np.zeros(5), "k": K.reshape(-1).copy(), "r": np.eye(3).reshape(-1), "p": P.reshape(-1),
            "binning_x": 0, "binning_y": 0}


def camera_info_to_K(msg: Any, where: str = "camera_info") -> np.ndarray:
    """The 3x3 intrinsic matrix of a CameraInfo; an all-zero K (uncalibrated camera) is an error."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"{where}: camera is uncalibrated (K = {K.reshape(-1).tolist()}); expected fx, fy > 0")
    return K


def echo_fields(samples: np.ndarray, sample_rate: int, chirp: ChirpSpec, emission_offset: int = 0,
                speed_of_sound: float = 343.0, channel_order: str = "left,right") -> dict[str, Any]:
    """Fields of avs_depth_msgs/EchoStamped (without header) for a (channels, n) float array in [-1, 1]."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 2:
        raise ValueError(f"echo samples must be (channels, n), got shape {samples.shape}")
    return {"sample_rate": int(sample_rate), "channels": samples.shape[0], "channel_order": channel_order,
            "chirp_start_hz": chirp.start_hz, "chirp_end_hz": chirp.end_hz, "chirp_duration_s": chirp.duration_s,
            "chirp_method": chirp.method, "emission_offset": int(emission_offset),
            "speed_of_sound": float(speed_of_sound), "data": np.ascontiguousarray(samples).reshape(-1)}


def echo_chirp(msg: Any, where: str = "echo") -> ChirpSpec:
    """The chirp an EchoStamped says was emitted (its chirp_* fields and sample rate); invalid fields are an error.
    The fields are float32: rounded to 1 mHz and 1 ns, so a recorded BATVISION_CHIRP reads back equal to it."""
    try:
        return ChirpSpec(start_hz=round(float(msg.chirp_start_hz), 3), end_hz=round(float(msg.chirp_end_hz), 3),
                         duration_s=round(float(msg.chirp_duration_s), 9), sample_rate=int(msg.sample_rate),
                         method=str(msg.chirp_method) or "linear")
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def echo_to_array(msg: Any, where: str = "echo") -> np.ndarray:
    """An EchoStamped's samples as (channels, n) float32, checked for shape and finiteness."""
    data = np.asarray(msg.data, dtype=np.float32)
    channels = int(msg.channels)
    if channels < 1 or data.size % channels:
        raise ValueError(f"{where}: {data.size} samples do not split into {channels} channels")
    arr = data.reshape(channels, -1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{where}: echo holds NaN or inf samples")
    return arr


# Echo quality limits. Silent: a channel whose peak stays below -80 dBFS recorded nothing (a dead or muted microphone).
# Clipped: more than 0.1 % of a channel's samples at full scale (|x| >= 0.999) means the echo shape is lost.
SILENCE_PEAK = 1e-4
CLIP_LEVEL = 0.999
MAX_CLIPPED_FRACTION = 1e-3


def echo_problem(samples: np.ndarray, silence_peak: float = SILENCE_PEAK, clip_level: float = CLIP_LEVEL,
                 max_clipped_fraction: float = MAX_CLIPPED_FRACTION) -> str | None:
    """Why a (channels, n) float echo in [-1, 1] is unusable (NaN/inf, silent or clipped channel), or None if it is fine."""
    samples = np.asarray(samples)
    if samples.ndim != 2 or samples.shape[1] == 0:
        return f"expected (channels, n) samples, got shape {samples.shape}"
    if not np.all(np.isfinite(samples)):
        return "holds NaN or inf samples"
    magnitude = np.abs(samples)
    for c, (peak, clipped) in enumerate(zip(magnitude.max(axis=1), (magnitude >= clip_level).mean(axis=1), strict=True)):
        if peak < silence_peak:
            return f"channel {c} is silent (peak {peak:.2g} < {silence_peak:g} of full scale)"
        if clipped > max_clipped_fraction:
            return (f"channel {c} is clipped ({clipped:.2%} of samples at |x| >= {clip_level:g}, "
                    f"at most {max_clipped_fraction:.2%} allowed)")
    return None


def echo_input_problem(samples: np.ndarray, sample_rate: int, emission_offset: int, *, expected_rate: int,
                       window_samples: int, channels: int | None = 2) -> str | None:
    """Why an echo cannot feed a model, or None: the one echo validity rule of the live node, the bag datasets (and so
    training and evaluation), `avs-depth infer` and Grad-CAM. The model's sample rate, `channels` channels (None: any),
    `window_samples` samples after the emission (the round trip to the model's max_depth), then `echo_problem`: no NaN
    or inf, no silent and no clipped channel. window_samples 0 accepts a short recording (the datasets zero-pad it)."""
    samples = np.asarray(samples)
    if int(sample_rate) != int(expected_rate):
        return f"sample rate {sample_rate} Hz, expected {expected_rate} Hz"
    if samples.ndim != 2:
        return f"expected (channels, n) samples, got shape {samples.shape}"
    if channels is not None and samples.shape[0] != channels:
        return f"{samples.shape[0]} channel(s), expected {channels} (left, right)"
    if not 0 <= int(emission_offset) <= samples.shape[1]:
        return f"emission offset {emission_offset} lies outside the {samples.shape[1]}-sample recording"
    if samples.shape[1] - int(emission_offset) < window_samples:
        return (f"{samples.shape[1]} samples with emission offset {emission_offset} are shorter than the "
                f"{window_samples}-sample echo window to the model's maximum depth")
    return echo_problem(samples)


def depth_problem(depth: np.ndarray) -> str | None:
    """Why a depth map (metres, NaN/inf/<=0 invalid) is unusable, or None. A map without one valid pixel is unusable."""
    depth = np.asarray(depth)
    if not np.any(np.isfinite(depth) & (depth > 0)):
        return f"no valid depth pixel in the {'x'.join(map(str, depth.shape))} map (all NaN, inf or <= 0)"
    return None


def stamp_to_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_sec_nsec(ns: int) -> tuple[int, int]:
    return int(ns // 1_000_000_000), int(ns % 1_000_000_000)
