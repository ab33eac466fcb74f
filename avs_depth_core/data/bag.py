"""rosbag2 reading and writing with the pure-Python `rosbags` library; avs_depth_msgs registered from the .msg text.

Samples are paired by `header.stamp`, never by the bag's record time (ros2_conventions section 7).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from avs_depth_core.data import topics
from avs_depth_core.data.messages import ns_to_sec_nsec, stamp_to_ns

MSG_PACKAGE = "avs_depth_msgs"


def msg_definitions() -> dict[str, str]:
    """The avs_depth_msgs .msg texts, the same files colcon generates the rclpy classes from."""
    folder = resources.files("avs_depth_core") / "interfaces"
    return {f"{MSG_PACKAGE}/msg/{p.name[:-4]}": p.read_text() for p in folder.iterdir() if p.name.endswith(".msg")}


@lru_cache(maxsize=1)
def typestore() -> Typestore:
    """ROS 2 Humble types (the oldest supported distro; the sensor messages are unchanged since) + avs_depth_msgs."""
    store = get_typestore(Stores.ROS2_HUMBLE)
    for name, text in msg_definitions().items():
        store.register(get_types_from_msg(text, name))
    return store


def header(stamp_ns: int, frame_id: str) -> Any:
    ts = typestore()
    sec, nsec = ns_to_sec_nsec(stamp_ns)
    return ts.types["std_msgs/msg/Header"](stamp=ts.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec),
                                           frame_id=frame_id)


def make_msg(msgtype: str, stamp_ns: int, frame_id: str, fields: dict[str, Any]) -> Any:
    types = typestore().types
    if msgtype == "sensor_msgs/msg/CameraInfo" and "roi" not in fields:  # rosbags has no field defaults
        fields = {**fields, "roi": types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)}
    return types[msgtype](header=header(stamp_ns, frame_id), **fields)


class BagWriter:
    """Writes rosbag2 (mcap by default, sqlite3 on request) with the sensor topics and the sequence metadata."""

    def __init__(self, path: str | Path, storage: str = "mcap") -> None:
        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise ValueError(f"unknown bag storage {storage!r}; expected one of {sorted(plugins)}")
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path}: output bag already exists; remove it or choose another --out")
        self._writer = Writer(self.path, version=9, storage_plugin=plugins[storage])
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.sequences: list[dict[str, Any]] = []

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.sequences:
            self._writer.set_custom_data(topics.SEQUENCES_KEY, json.dumps(self.sequences))
        self._writer.close()

    def write(self, topic: str, msg: Any, msgtype: str, record_ns: int | None = None) -> None:
        """Serialise and write one message; the record time defaults to its header stamp."""
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=typestore())
        stamp = stamp_to_ns(msg.header.stamp) if record_ns is None else record_ns
        self._writer.write(self._connections[topic], stamp, typestore().serialize_cdr(msg, msgtype))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def add_sequence(self, name: str, split: str, start_ns: int, end_ns: int, **extra: Any) -> None:
        """Record a sequence (contiguous frames of one scene) so datasets never pair across it."""
        self.sequences.append({"name": name, "split": split, "start_ns": int(start_ns), "end_ns": int(end_ns), **extra})


@dataclass(frozen=True)
class StampedMsg:
    stamp_ns: int  # header.stamp
    msg: Any


@contextmanager
def open_bag(path: str | Path) -> Iterator[AnyReader]:
    """Open a rosbag2 folder (or a single .mcap/.db3 file) for reading; errors name the path."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: bag not found")
    if not path.is_dir() and path.suffix not in (".mcap", ".db3", ".bag"):
        raise ValueError(f"{path}: not a rosbag2 folder")
    if path.is_dir() and path.suffix == ".bag":  # rosbags takes any *.bag path for a ROS 1 file
        raise ValueError(f"{path}: a rosbag2 folder named *.bag cannot be read by rosbags; rename it without '.bag'")
    try:
        reader = AnyReader([path], default_typestore=typestore())
        reader.open()
    except Exception as err:  # rosbags raises several reader error types; all mean the same to a user
        raise ValueError(f"{path}: cannot open bag ({type(err).__name__}: {err})") from err
    try:
        yield reader
    finally:
        reader.close()


def bag_sequences(path: str | Path) -> list[dict[str, Any]]:
    """The sequences recorded in the bag's metadata.yaml custom_data (empty for bags recorded elsewhere)."""
    meta = Path(path) / "metadata.yaml"
    if not meta.is_file():
        return []
    info = (yaml.safe_load(meta.read_text()) or {}).get("rosbag2_bagfile_information", {})
    custom = info.get("custom_data") or {}
    return json.loads(custom[topics.SEQUENCES_KEY]) if topics.SEQUENCES_KEY in custom else []


def read_topic(reader: AnyReader, topic: str, bag: str | Path = "") -> Iterator[StampedMsg]:
    """Every message on `topic`, deserialised, with its header stamp. A missing topic is an error naming the others."""
    for conn, _t, raw in reader.messages(connections=topic_connections(reader, topic, bag)):
        msg = reader.deserialize(raw, conn.msgtype)
        yield StampedMsg(stamp_to_ns(msg.header.stamp), msg)


def raw_header_stamp_ns(raw: bytes | memoryview, where: str = "message") -> int:
    """header.stamp of a CDR-serialised message whose first field is a std_msgs/Header, read without deserialising the
    rest (an image's pixels stay untouched). CDR: 4-byte encapsulation header (byte 1 odd = little endian), then
    int32 sec and uint32 nanosec."""
    if len(raw) < 12:
        raise ValueError(f"{where}: {len(raw)} bytes are too few for a CDR message with a header")
    sec, nanosec = struct.unpack_from("<iI" if raw[1] & 1 else ">iI", raw, 4)
    if nanosec >= 1_000_000_000:
        raise ValueError(f"{where}: corrupt header stamp (nanosec {nanosec} >= 1e9)")
    return sec * 1_000_000_000 + nanosec


def message_stamp_ns(reader: AnyReader, msgtype: str, raw: bytes, where: str = "message") -> int:
    """header.stamp of a raw message: parsed from the CDR bytes in rosbag2, deserialised in ROS 1 bags."""
    if reader.is2:
        return raw_header_stamp_ns(raw, where)
    return stamp_to_ns(reader.deserialize(raw, msgtype).header.stamp)


def topic_connections(reader: AnyReader, topic: str, bag: str | Path = "") -> list[Any]:
    """The reader's connections on `topic`; a missing topic is an error naming the topics the bag has."""
    topic = topics.normalise(topic)
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        have = sorted({c.topic for c in reader.connections})
        raise ValueError(f"{bag or 'bag'}: topic {topic} not found; the bag has {have}")
    return conns


def iter_raw(reader: AnyReader, connections: list[Any], bag: str | Path = "") -> Iterator[tuple[Any, bytes]]:
    """(connection, raw bytes) in record order; a read failure part-way (truncated or corrupt file) names the bag."""
    messages = reader.messages(connections=connections)
    while True:
        try:
            conn, _t, raw = next(messages)
        except StopIteration:
            return
        except Exception as err:  # rosbags/mcap/zstd raise many types for a damaged file; all mean the same to a user
            raise ValueError(f"{bag or 'bag'}: corrupt bag, reading failed ({type(err).__name__}: {err})") from err
        yield conn, raw
