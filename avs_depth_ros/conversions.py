"""rclpy message <-> numpy glue on top of avs_depth_core.data.messages (which builds plain field dicts).

rclpy stores unbounded numeric arrays as array.array and checks every element of anything else: assigning a 256x512x3
numpy array element by element takes about 30 ms, bytes about 0.6 ms. `fill` converts through the buffer protocol.
"""

from __future__ import annotations

import array
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from avs_depth_core.audio.chirp import ChirpSpec
from avs_depth_core.data.messages import camera_info_fields, echo_fields, image_fields, ns_to_sec_nsec, stamp_to_ns

__all__ = ["camera_info_msg", "copy_camera_info", "echo_msg", "fill", "header", "image_msg", "pose_from_msg", "pose_msg",
           "stamp_to_ns", "time_msg"]


def fill(msg: Any, fields: dict[str, Any]) -> Any:
    """Set `fields` on an rclpy message; numpy arrays go to array.array fields through their bytes."""
    for name, value in fields.items():
        if isinstance(value, np.ndarray):
            current = getattr(msg, name)
            if isinstance(current, array.array):
                typed = np.ascontiguousarray(value, dtype=np.dtype(current.typecode))
                value = array.array(current.typecode, typed.tobytes())
        setattr(msg, name, value)
    return msg


def time_msg(stamp_ns: int) -> Time:
    sec, nanosec = ns_to_sec_nsec(stamp_ns)
    return Time(sec=sec, nanosec=nanosec)


def header(stamp_ns: int, frame_id: str) -> Header:
    return Header(stamp=time_msg(stamp_ns), frame_id=frame_id)


def image_msg(array_: np.ndarray, encoding: str, hdr: Header) -> Image:
    return fill(Image(header=hdr), image_fields(array_, encoding))


def camera_info_msg(K: np.ndarray, width: int, height: int, hdr: Header) -> CameraInfo:
    return fill(CameraInfo(header=hdr), camera_info_fields(K, width, height))


def copy_camera_info(info: CameraInfo, hdr: Header) -> CameraInfo:
    """The calibration of `info` under another header (the depth image's)."""
    out = CameraInfo(header=hdr)
    for name in ("height", "width", "distortion_model", "d", "k", "r", "p", "binning_x", "binning_y", "roi"):
        setattr(out, name, getattr(info, name))
    return out


def echo_msg(samples: np.ndarray, sample_rate: int, chirp: ChirpSpec, emission_offset: int, speed_of_sound: float,
             channel_order: str, hdr: Header) -> Any:
    from avs_depth_msgs.msg import EchoStamped

    return fill(EchoStamped(header=hdr), echo_fields(samples, sample_rate, chirp, emission_offset, speed_of_sound,
                                                     channel_order))


def pose_msg(pose: np.ndarray, hdr: Header) -> Any:
    """A (4, 4) camera-to-world transform as geometry_msgs/PoseStamped (position, quaternion x y z w)."""
    from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(pose[:3, :3]).as_quat()
    px, py, pz = (float(v) for v in pose[:3, 3])
    return PoseStamped(header=hdr, pose=Pose(position=Point(x=px, y=py, z=pz),
                                             orientation=Quaternion(x=float(x), y=float(y), z=float(z), w=float(w))))


def pose_from_msg(msg: Any) -> np.ndarray:
    """geometry_msgs/PoseStamped (or Pose) -> (4, 4) transform."""
    from scipy.spatial.transform import Rotation

    pose = getattr(msg, "pose", msg)
    q, p = pose.orientation, pose.position
    out = np.eye(4)
    out[:3, :3] = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    out[:3, 3] = (p.x, p.y, p.z)
    return out
