"""rosbag2 reading and writing with the pure-Python `rosbags` library; avs_depth_msgs registered from the .msg text.

Samples are paired by `header.stamp`, never by the bag's record time (ros2_conventions section 7).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from avs_depth_core import files
from avs_depth_core.config import read_yaml_file
from avs_depth_core.data import topics
from avs_depth_core.data.bag_integrity import (
    BagIntegrityError,
    add_mcap_crcs,
    embedded_metadata,
    verify_storage_file,
)
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
    """Writes rosbag2 (mcap by default, sqlite3 on request) with the sensor topics and the sequence metadata.

    The bag is written inside a temporary folder beside `path` and renamed to `path` only once it is closed and its
    checksums are written (avs_depth_core.files, bag_integrity.add_mcap_crcs): an error, Ctrl-C or a kill leaves no bag,
    never a readable partial one, and the temporary of a killed run is swept by the next writer in that folder.
    """

    def __init__(self, path: str | Path, storage: str = "mcap") -> None:
        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise ValueError(f"unknown bag storage {storage!r}; expected one of {sorted(plugins)}")
        self.path = Path(path)
        if self.path.suffix == ".bag":
            raise ValueError(f"{self.path}: rosbags reads any *.bag path as a ROS 1 file; name the rosbag2 folder "
                             "without '.bag'")
        files.sweep_temporaries(self.path.parent)
        if self.path.exists():
            raise FileExistsError(f"{self.path}: output bag already exists; remove it or choose another --out")
        self.storage = storage
        self._staging = files.temporary_path(self.path)
        self._writer = Writer(self._staging / self.path.name, version=9, storage_plugin=plugins[storage])
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.sequences: list[dict[str, Any]] = []

    def __enter__(self) -> BagWriter:
        try:
            self._staging.mkdir(parents=True)
            self._writer.open()
        except OSError as err:
            files.remove(self._staging)
            raise files.OutputError(files.describe_os_error(err, self.path, "--out")) from None
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            with suppress(Exception):
                self._writer.abort()
            files.remove(self._staging)
            return
        try:
            if self.sequences:
                self._writer.set_custom_data(topics.SEQUENCES_KEY, json.dumps(self.sequences))
            self._writer.close()
            if self.storage == "mcap":
                for storage_file in (self._staging / self.path.name).glob("*.mcap"):
                    add_mcap_crcs(storage_file)
            with files.atomic_output(self.path, replace=False) as tmp:
                os.rename(self._staging / self.path.name, tmp)
        except OSError as err:
            raise files.OutputError(files.describe_os_error(err, self.path, "--out")) from None
        finally:
            files.remove(self._staging)

    def write(self, topic: str, msg: Any, msgtype: str, record_ns: int | None = None) -> None:
        """Serialise and write one message; the record time defaults to its header stamp."""
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=typestore())
        stamp = stamp_to_ns(msg.header.stamp) if record_ns is None else record_ns
        try:
            self._writer.write(self._connections[topic], stamp, typestore().serialize_cdr(msg, msgtype))
        except OSError as err:  # a full disk: the with-block ends and removes the partial bag
            raise files.OutputError(files.describe_os_error(err, self.path, "--out")) from None
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def add_sequence(self, name: str, split: str, start_ns: int, end_ns: int, **extra: Any) -> None:
        """Record a sequence (contiguous frames of one scene) so datasets never pair across it."""
        self.sequences.append({"name": name, "split": split, "start_ns": int(start_ns), "end_ns": int(end_ns), **extra})


@dataclass(frozen=True)
class StampedMsg:
    stamp_ns: int  # header.stamp
    msg: Any


@dataclass(frozen=True)
class BagSource:
    """What a bag path names: the rosbag2 folder (None for a lone storage file), its storage files, and the metadata
    (metadata.yaml's, else the copy inside the storage file)."""

    path: Path
    folder: Path | None
    files: tuple[Path, ...]
    metadata: dict[str, Any]


def _folder_metadata(folder: Path) -> dict[str, Any] | None:
    meta = folder / "metadata.yaml"
    if not meta.is_file():
        return None
    data = read_yaml_file(meta, "rosbag2 metadata")
    info = data.get("rosbag2_bagfile_information") if isinstance(data, dict) else None
    if not isinstance(info, dict):
        raise ValueError(f"{meta}: no rosbag2_bagfile_information; not a rosbag2 metadata file")
    return info


def resolve_bag(path: str | Path) -> BagSource:
    """A rosbag2 given as its folder or as its storage file (.mcap/.db3), resolved to the same bag: a storage file inside
    a folder whose metadata.yaml lists it is that folder's bag (an error if the folder has more files than this one)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: bag not found")
    if path.is_dir():
        if path.suffix == ".bag":  # rosbags takes any *.bag path for a ROS 1 file
            raise ValueError(f"{path}: a rosbag2 folder named *.bag cannot be read by rosbags; rename it without '.bag'")
        info = _folder_metadata(path)
        if info is None:
            raise ValueError(f"{path}: no metadata.yaml, so not a complete rosbag2 folder (an interrupted recording? "
                             "give its .mcap/.db3 file instead)")
        names = info.get("relative_file_paths") or []
        storage = tuple(path / n for n in names)
        missing = [str(f) for f in storage if not f.is_file()]
        if missing or not storage:
            raise ValueError(f"{path}: metadata.yaml lists storage file(s) that are missing: {missing or names}")
        return BagSource(path, path, storage, info)
    if path.suffix not in (".mcap", ".db3", ".bag"):
        raise ValueError(f"{path}: not a rosbag2 folder or storage file (.mcap, .db3)")
    if path.suffix == ".bag":
        return BagSource(path, None, (path,), {})
    folder_info = _folder_metadata(path.parent)
    if folder_info is not None and path.name in (folder_info.get("relative_file_paths") or []):
        names = folder_info["relative_file_paths"]
        if len(names) > 1:
            raise ValueError(f"{path}: one of the {len(names)} storage files of the rosbag2 {path.parent}; give the "
                             "folder to read all of them")
        return BagSource(path, path.parent, (path,), folder_info)
    try:
        embedded = embedded_metadata(path)
    except BagIntegrityError as err:
        raise ValueError(str(err)) from None
    return BagSource(path, None, (path,), embedded or {})


def _check_counts(source: BagSource) -> None:
    """The messages per topic metadata.yaml promises are the ones its storage files hold by their own index (a storage
    file truncated and rewritten, swapped or from another recording)."""
    listed = {t["topic_metadata"]["name"]: int(t["message_count"])
              for t in source.metadata.get("topics_with_message_count") or [] if "topic_metadata" in t}
    if not listed or source.folder is None:
        return
    held: dict[str, int] = {}
    for storage_file in source.files:
        with AnyReader([storage_file], default_typestore=typestore()) as alone:
            for conn in alone.connections:
                held[conn.topic] = held.get(conn.topic, 0) + int(conn.msgcount)
    differ = {t: (n, held.get(t, 0)) for t, n in listed.items() if held.get(t, 0) != n}
    if differ:
        shown = ", ".join(f"{t} {a} listed, {b} stored" for t, (a, b) in sorted(differ.items())[:3])
        raise ValueError(f"{source.path}: metadata.yaml and the storage file disagree ({shown}); the bag is damaged")


@contextmanager
def open_bag(path: str | Path, verify: bool = True) -> Iterator[AnyReader]:
    """Open a rosbag2 folder (or its .mcap/.db3 storage file) for reading; errors name the path. With `verify`, the
    storage files' checksums and structure are checked first (bag_integrity) and so are the message counts."""
    source = resolve_bag(path)
    try:
        if verify:
            for storage_file in source.files:
                verify_storage_file(storage_file)
            _check_counts(source)
        reader = AnyReader([source.folder or source.path], default_typestore=typestore())
        reader.open()
    except BagIntegrityError as err:
        raise ValueError(f"{err}; the bag cannot be trusted: record or convert it again") from None
    except ValueError:
        raise
    except Exception as err:  # rosbags raises several reader error types; all mean the same to a user
        raise ValueError(f"{source.path}: cannot open bag ({type(err).__name__}: {err})") from err
    try:
        yield reader
    finally:
        reader.close()


def bag_sequences(path: str | Path) -> list[dict[str, Any]]:
    """The sequences recorded in the bag's metadata custom_data (empty for bags recorded elsewhere): metadata.yaml's, or
    for a lone storage file the copy inside it, so a bag gives the same sequences as its folder or as its file."""
    custom = resolve_bag(path).metadata.get("custom_data") or {}
    if topics.SEQUENCES_KEY not in custom:
        return []
    try:
        records = json.loads(custom[topics.SEQUENCES_KEY])
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: custom_data {topics.SEQUENCES_KEY} is not valid JSON ({err})") from None
    if not isinstance(records, list):
        raise ValueError(f"{path}: custom_data {topics.SEQUENCES_KEY} must be a list of sequences")
    return records


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
