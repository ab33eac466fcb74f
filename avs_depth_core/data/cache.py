"""Decode a bag once into per-field .npy files, read later as memory maps by the datasets.

Two passes over the bag. Pass 1 reads only the header stamps (parsed from the raw CDR bytes, so pixels are not
deserialised), pairs frames with echoes (pairing.pair_echo_with_frame), depth and CameraInfo, and assigns frames to
sequences and splits (splits.py). Pass 2 deserialises each needed message once and writes its resized image, depth or
echo features into the slots of every frame that uses it. Depth is cached at the network size (training) or, with
depth_size="native", at the size it was recorded (evaluation; one size per bag, and only the evaluated split is cached).

Cache layout: <cache_dir>/<key>/{meta.json, stamps, sequence, valid, rgb, K[, depth, has_depth][, echo, has_echo]
[, imu_rotation, has_imu]}.npy (imu_rotation: the camera-to-world attitude of topics.IMU's message nearest each frame,
within IMU_TOLERANCE_NS; meta.json names the IMU's and the images' frame ids),
key = sha256 of (CACHE_VERSION, bag fingerprint, settings). A cache is built in a temporary folder and renamed into
place when complete, so concurrent builders and interrupted builds never leave a half-written cache behind.
The bag fingerprint hashes metadata and, per file, its name, size, mtime and first and last MiB (an mcap's last MiB
holds its summary with chunk CRCs), so a changed or rewritten bag gets a new cache without hashing gigabytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from avs_depth_core import files
from avs_depth_core.audio.features import StftSettings, echo_features
from avs_depth_core.audio.window import echo_window, echo_window_samples
from avs_depth_core.data import topics
from avs_depth_core.data.bag import bag_sequences, iter_raw, message_stamp_ns, open_bag, resolve_bag
from avs_depth_core.data.messages import (
    camera_info_to_K,
    depth_problem,
    echo_chirp,
    echo_input_problem,
    echo_to_array,
    image_to_depth,
    image_to_rgb,
)
from avs_depth_core.data.pairing import DEFAULT_TOLERANCE_NS, nearest_stamp, pair_echo_with_frame
from avs_depth_core.data.splits import (
    ALL,
    FrameSequence,
    assign_frames,
    derive_sequences,
    sequences_from_metadata,
)
from avs_depth_core.geometry import scale_intrinsics

CACHE_VERSION = 1
NO_SPLIT = "(none)"  # report key for frames outside every sequence
NATIVE = "native"  # CacheSettings.depth_size: ground truth at the resolution it was recorded at
MAX_EXAMPLES = 20  # detailed skip messages kept in the report
IMU_TOLERANCE_NS = 10_000_000  # an IMU at 100 Hz or faster has a message within 5 ms of every frame


def default_cache_dir() -> Path:
    """$AVS_DEPTH_CACHE, else $XDG_CACHE_HOME/avs_depth, else ~/.cache/avs_depth."""
    if os.environ.get("AVS_DEPTH_CACHE"):
        return Path(os.environ["AVS_DEPTH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "avs_depth"


def bag_fingerprint(bag: str | Path) -> str:
    bag = Path(bag)
    if not bag.exists():
        raise FileNotFoundError(f"{bag}: bag not found")
    bag = resolve_bag(bag).folder or bag  # a storage file given inside its folder is that folder's bag: one cache
    paths = [bag] if bag.is_file() else sorted(p for p in bag.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for f in paths:
        st = f.stat()
        digest.update(f"{f.relative_to(bag) if bag.is_dir() else f.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        with f.open("rb") as fh:
            digest.update(fh.read(1 << 20))
            if st.st_size > 2 << 20:
                fh.seek(-(1 << 20), os.SEEK_END)
                digest.update(fh.read())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheSettings:
    """Everything that changes the cached arrays (part of the cache key)."""

    image_size: tuple[int, int]  # (H, W) of rgb (and of depth unless depth_size says otherwise)
    keep: str  # "paired": frames with a paired echo and depth (supervised); "all": every frame in a sequence (triples)
    max_depth: float  # metres; depth >= max_depth becomes invalid (0); the echo window reaches this far
    echo_size: tuple[int, int]  # (H, W) of the echo STFT after resizing
    stft: StftSettings = field(default_factory=StftSettings)
    speed_of_sound: float = 340.0
    sample_rate: int = 44_100
    tolerance_ns: int = DEFAULT_TOLERANCE_NS  # echo pairing, see pairing.py
    depth_tolerance_ns: int = 1_000_000  # depth registered to an image carries the image's stamp
    echo_store: str = "features"  # "features": the network input (exact, larger); "window": samples, STFT per item
    need_intrinsics: bool = True
    skip_bad: bool = False
    sequence_gap_ns: int = 1_000_000_000
    split_fractions: tuple[tuple[str, float], ...] = (("train", 0.8), ("val", 0.1), ("test", 0.1))
    # Ground-truth resolution: None = image_size; "native" = as recorded (one size per bag; evaluation at the ground truth's
    # resolution); (H, W) = nearest-resized to that size.
    depth_size: tuple[int, int] | str | None = None
    # Cache only this split's frames (None or "all": every frame). Native-resolution depth is large (BV2: 1280x720 float32,
    # 3.7 MB a frame), so evaluation datasets cache just the split they evaluate.
    split: str | None = None

    def __post_init__(self) -> None:
        if self.keep not in ("paired", "all"):
            raise ValueError(f"cache keep must be 'paired' or 'all', got {self.keep!r}")
        if self.echo_store not in ("features", "window"):
            raise ValueError(f"echo store must be 'features' or 'window', got {self.echo_store!r}")
        for name, size in (("image_size", self.image_size), ("echo_size", self.echo_size)):
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"{name} must be (height, width) with positive entries, got {size}")
        if self.max_depth <= 0:
            raise ValueError(f"max_depth must be positive, got {self.max_depth}")
        if self.depth_size is not None and self.depth_size != NATIVE and (
                isinstance(self.depth_size, str) or len(self.depth_size) != 2 or min(self.depth_size) < 1):
            raise ValueError(f"depth_size must be None (the image size), {NATIVE!r} or (height, width) with positive "
                             f"entries, got {self.depth_size!r}")

    @property
    def depth_hw(self) -> tuple[int, int] | None:
        """The cached depth's (H, W), or None for native (known once the first depth map is read)."""
        if self.depth_size == NATIVE:
            return None
        return tuple(self.depth_size) if self.depth_size is not None else tuple(self.image_size)

    def key(self, fingerprint: str) -> str:
        settings = asdict(self)
        for name in ("depth_size", "split"):  # options added later: unset, they leave the key of existing caches alone
            if settings[name] is None:
                del settings[name]
        if settings["stft"].get("range_profile") is None:
            settings["stft"].pop("range_profile", None)
        text = json.dumps({"version": CACHE_VERSION, "bag": fingerprint, "settings": settings}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]


class FrameCache:
    """A built cache: meta.json plus .npy arrays opened lazily as read-only memory maps (safe across DataLoader workers)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.meta: dict[str, Any] = json.loads((self.path / "meta.json").read_text())
        self.sequences = [FrameSequence(**s) for s in self.meta["sequences"]]
        self._arrays: dict[str, np.ndarray] = {}
        for name, spec in self.meta["fields"].items():
            arr = self.array(name)
            if list(arr.shape) != spec["shape"] or str(arr.dtype) != spec["dtype"]:
                raise ValueError(f"{self.path}/{name}.npy is {arr.shape} {arr.dtype}, meta.json says {spec}")

    def __len__(self) -> int:
        return int(self.meta["count"])

    def has(self, name: str) -> bool:
        return name in self.meta["fields"]

    def array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = np.load(self.path / f"{name}.npy", mmap_mode="r")
        return self._arrays[name]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": {}}  # workers reopen their own memory maps


def load_or_build(bag: str | Path, settings: CacheSettings, cache_dir: str | Path | None = None, progress: bool = True
                  ) -> FrameCache:
    """The cache of `bag` for `settings`, built on first use."""
    bag = Path(bag)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / settings.key(bag_fingerprint(bag))
    if (path / "meta.json").is_file():
        try:
            return FrameCache(path)
        except (OSError, ValueError, KeyError, TypeError) as err:
            print(f"cache {path} is unreadable ({err}); rebuilding it", file=sys.stderr)
            shutil.rmtree(path)
    files.sweep_temporaries(root, log=lambda text: print(text, file=sys.stderr))  # builds killed earlier
    files.check_output(root / path.name, 0, "--cache-dir", kind="folder")
    tmp = files.temporary_path(path)
    try:
        tmp.mkdir(parents=True)
    except OSError as err:
        raise files.OutputError(files.describe_os_error(err, root, "--cache-dir")) from None
    threads = torch.get_num_threads()
    # Per-message tensors are small: intra-op threads cost more than they give (several times more on a busy machine).
    torch.set_num_threads(1)
    try:
        _build(bag, settings, tmp, progress)
        try:
            tmp.rename(path)
        except OSError:  # another process finished the same cache first; theirs is equal
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(threads)
    return FrameCache(path)


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, 3) uint8 -> (3, H, W) uint8: bilinear with antialias (torchvision Resize on tensors), rounded."""
    if rgb.shape[:2] == tuple(size):
        return np.ascontiguousarray(rgb.transpose(2, 0, 1))
    x = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float()  # copy: message buffers are read-only
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x[0].round().clamp(0, 255).to(torch.uint8).numpy()


def resize_depth(depth: np.ndarray, size: tuple[int, int], max_depth: float) -> np.ndarray:
    """(h, w) metres -> (1, H, W) float32 with 0 where invalid (NaN, inf, <= 0, >= max_depth). Nearest resampling at
    pixel centres ("nearest-exact", as PIL and OpenCV), so no value is interpolated across an edge."""
    x = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None, None]
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="nearest-exact")
    out = x[0].numpy()
    out[~np.isfinite(out) | (out <= 0) | (out >= max_depth)] = 0.0
    return out


class _Skips:
    """Per-split counts of excluded frames and the first few detailed reasons; raises instead unless skipping."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.examples: list[str] = []

    def note(self, split: str, reason: str, n: int = 1) -> None:
        self.counts[split][reason] += n

    def bad(self, message: str) -> None:
        if not self.skip_bad:
            raise ValueError(f"{message} (pass skip_bad=True to skip and count such frames)")
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(message)


def _unique_sorted(stamps: list[int]) -> tuple[np.ndarray, int]:
    arr = np.asarray(stamps, dtype=np.int64)
    uniq = np.unique(arr)
    return uniq, int(arr.size - uniq.size)


EXPECTED_TYPES = {topics.IMAGE: topics.IMAGE_TYPE, topics.DEPTH: topics.IMAGE_TYPE, topics.ECHO: topics.ECHO_TYPE,
                  topics.CAMERA_INFO: topics.CAMERA_INFO_TYPE, topics.IMU: topics.IMU_TYPE}


def _build(bag: Path, s: CacheSettings, out: Path, progress: bool) -> None:
    with open_bag(bag) as reader:
        _CacheBuilder(bag, s, out, progress, reader).build()


class _CacheBuilder:
    """One cache build (see the module docstring): check the topics, pass 1 (index and select the frames), allocate the
    arrays, pass 2 (decode into them), per-frame checks, meta.json."""

    def __init__(self, bag: Path, settings: CacheSettings, out: Path, progress: bool, reader: Any) -> None:
        self.bag, self.s, self.out, self.progress, self.reader = bag, settings, out, progress, reader
        self.skips = _Skips(settings.skip_bad)

    def build(self) -> None:
        self._check_topics()
        self._index()
        self._select()
        self._allocate()
        self._decode()
        self._check_frames()
        self._write_meta()

    def _check_topics(self) -> None:
        bag, s, reader = self.bag, self.s, self.reader
        required = [topics.IMAGE] + ([topics.DEPTH, topics.ECHO] if s.keep == "paired" else []) + (
            [topics.CAMERA_INFO] if s.need_intrinsics else [])
        conns = {t: [c for c in reader.connections if c.topic == t] for t in EXPECTED_TYPES}
        have = sorted({c.topic for c in reader.connections})
        for t in required:
            if not conns[t]:
                raise ValueError(f"{bag}: topic {t} not found; the bag has {have}")
        for t, cs in conns.items():
            for c in cs:
                if c.msgtype != EXPECTED_TYPES[t]:
                    raise ValueError(f"{bag}: topic {t} has type {c.msgtype}; expected {EXPECTED_TYPES[t]}")
        self.used = [c for cs in conns.values() for c in cs]
        self.total = sum(c.msgcount for c in self.used)

    def _index(self) -> None:
        """Pass 1: header stamps only."""
        bag, reader = self.bag, self.reader
        raw_stamps: dict[str, list[int]] = {t: [] for t in EXPECTED_TYPES}
        for conn, raw in tqdm(iter_raw(reader, self.used, bag), total=self.total, desc=f"indexing {bag.name}", unit="msg",
                              disable=not self.progress, leave=False):
            raw_stamps[conn.topic].append(message_stamp_ns(reader, conn.msgtype, raw, f"{bag}:{conn.topic}"))
        self.stamps: dict[str, np.ndarray] = {}
        for t in EXPECTED_TYPES:
            self.stamps[t], dup = _unique_sorted(raw_stamps[t])
            if dup:
                self.skips.note(NO_SPLIT, f"duplicate {t} stamps (first message kept)", dup)
        if self.stamps[topics.IMAGE].size == 0:
            raise ValueError(f"{bag}: topic {topics.IMAGE} holds no messages")

    def _select(self) -> None:
        """Sequences and splits, pairing, and the frames this cache keeps (each excluded one counted)."""
        bag, s, stamps, skips = self.bag, self.s, self.stamps, self.skips
        frames = stamps[topics.IMAGE]
        self.records = bag_sequences(bag)
        self.sequences = sequences_from_metadata(self.records, bag) if self.records else derive_sequences(
            frames, s.sequence_gap_ns, dict(s.split_fractions))
        seq_of = assign_frames(frames, self.sequences, bag)
        echo_of = np.array([-1 if (j := pair_echo_with_frame(int(t), stamps[topics.ECHO], s.tolerance_ns)) is None else j
                            for t in frames], dtype=np.int64)
        depth_of = np.array([-1 if (j := nearest_stamp(int(t), stamps[topics.DEPTH], s.depth_tolerance_ns)) is None else j
                             for t in frames], dtype=np.int64)
        # Intrinsics rarely change: every frame takes the CameraInfo nearest in time, however far.
        info_of = np.array([-1 if (j := nearest_stamp(int(t), stamps[topics.CAMERA_INFO], 2**62)) is None else j
                            for t in frames], dtype=np.int64)
        imu_of = np.array([-1 if (j := nearest_stamp(int(t), stamps[topics.IMU], IMU_TOLERANCE_NS)) is None else j
                           for t in frames], dtype=np.int64)
        split_of = np.array([self.sequences[k].split if k >= 0 else NO_SPLIT for k in seq_of])

        def note_frames(mask: np.ndarray, reason: str) -> None:
            for split, n in zip(*np.unique(split_of[mask], return_counts=True), strict=True):
                skips.note(str(split), reason, int(n))

        keep = seq_of >= 0
        note_frames(~keep, "outside every sequence")
        if s.split not in (None, ALL):  # other splits' frames are not this cache's business: left out uncounted
            keep &= split_of == s.split
        if s.keep == "paired":
            note_frames(keep & (echo_of < 0), "no paired echo")
            note_frames(keep & (echo_of >= 0) & (depth_of < 0), "no depth")
            keep &= (echo_of >= 0) & (depth_of >= 0)
        else:
            if stamps[topics.ECHO].size:
                note_frames(keep & (echo_of < 0), "no paired echo (frame kept, has_echo false)")
            if stamps[topics.DEPTH].size:
                note_frames(keep & (depth_of < 0), "no depth (frame kept, has_depth false)")
        if not s.need_intrinsics and stamps[topics.CAMERA_INFO].size == 0:
            skips.note(NO_SPLIT, f"no {topics.CAMERA_INFO} in the bag: K is NaN", int(keep.sum()))

        kept = np.flatnonzero(keep)
        self.slot_of_stamp = {int(frames[n]): i for i, n in enumerate(kept)}
        self.users: dict[str, dict[int, list[int]]] = {t: defaultdict(list) for t in EXPECTED_TYPES}
        for i, n in enumerate(kept):
            for t, idx in ((topics.DEPTH, depth_of[n]), (topics.ECHO, echo_of[n]), (topics.CAMERA_INFO, info_of[n]),
                           (topics.IMU, imu_of[n])):
                if idx >= 0:
                    self.users[t][int(stamps[t][idx])].append(i)
        self.kept_stamps, self.kept_sequence = frames[kept], seq_of[kept]
        self.kept_depth_of, self.kept_echo_of = depth_of[kept], echo_of[kept]

    def _allocate(self) -> None:
        """The memory-mapped arrays (depth at native resolution waits for the first depth map) and per-slot bookkeeping."""
        s, out = self.s, self.out
        count = self.count = len(self.kept_stamps)
        H, W = s.image_size
        self.fields: dict[str, tuple[tuple[int, ...], str]] = {
            "stamps": ((count,), "int64"), "sequence": ((count,), "int64"), "valid": ((count,), "bool"),
            "rgb": ((count, 3, H, W), "uint8"), "K": ((count, 3, 3), "float32")}
        self.has_depth_topic = self.stamps[topics.DEPTH].size > 0
        if self.has_depth_topic:
            self.fields["has_depth"] = ((count,), "bool")
            if s.depth_hw is not None:  # native: allocated at the first depth map, whose size it takes
                self.fields["depth"] = ((count, 1, *s.depth_hw), "float32")
        arrays = self.arrays = {name: files.allocate_npy(out / f"{name}.npy", dtype, shape)
                                for name, (shape, dtype) in self.fields.items()}
        arrays["stamps"][:] = self.kept_stamps
        arrays["sequence"][:] = self.kept_sequence
        arrays["valid"][:] = True
        if self.has_depth_topic:
            arrays["has_depth"][:] = self.kept_depth_of >= 0
        self.has_echo = self.kept_echo_of >= 0
        if self.stamps[topics.IMU].size:
            self.fields["imu_rotation"] = ((count, 3, 3), "float32")
            self.fields["has_imu"] = ((count,), "bool")
            for name in ("imu_rotation", "has_imu"):
                arrays[name] = files.allocate_npy(out / f"{name}.npy", self.fields[name][1], self.fields[name][0])
            arrays["imu_rotation"][:] = np.nan
            arrays["has_imu"][:] = False
        self.frame_ids: dict[str, set[str]] = {topics.IMAGE: set(), topics.IMU: set()}
        arrays["K"][:] = np.nan
        self.image_hw = np.zeros((count, 2), np.int64)
        self.depth_hw = np.zeros((count, 2), np.int64)
        self.info_hw = np.zeros((count, 2), np.int64)
        self.raw_K = np.full((count, 3, 3), np.nan)
        self.got_image = np.zeros(count, bool)
        self.echo_info: dict[str, Any] = {}

    def depth_array(self, hw: tuple[int, int], where: str) -> np.ndarray:
        arrays = self.arrays
        if "depth" not in arrays:
            self.fields["depth"] = ((self.count, 1, *hw), "float32")
            arrays["depth"] = files.allocate_npy(self.out / "depth.npy", "float32", self.fields["depth"][0])
        elif tuple(arrays["depth"].shape[-2:]) != tuple(hw):
            have = arrays["depth"].shape
            raise ValueError(f"{where}: depth {hw[1]}x{hw[0]} differs from the {have[-1]}x{have[-2]} of this bag's "
                             f"earlier depth maps; native-resolution ground truth needs one size per bag (use "
                             f"depth_size=None or (H, W) to resize)")
        return arrays["depth"]

    def drop(self, slots: list[int], what: str, message: str) -> None:
        """A bad message: fail, or (skip_bad) exclude the frames that need it and count them. Intrinsics the
        dataset does not need only leave K as NaN (an uncalibrated webcam still gives supervised samples)."""
        s, skips, arrays = self.s, self.skips, self.arrays
        if what == "camera_info" and not s.need_intrinsics:
            skips.note(NO_SPLIT, f"unusable {topics.CAMERA_INFO}: K is NaN", len(slots))
            if len(skips.examples) < MAX_EXAMPLES:
                skips.examples.append(message)
            return
        if what == "imu":  # only a pose prior reads it, and that one checks has_imu
            skips.note(NO_SPLIT, f"unusable {topics.IMU}: has_imu false", len(slots))
            if len(skips.examples) < MAX_EXAMPLES:
                skips.examples.append(message)
            for i in slots:
                arrays["has_imu"][i] = False
            return
        skips.bad(message)
        for i in slots:
            split = self.sequences[int(arrays["sequence"][i])].split
            essential = what in ("image", "camera_info") or s.keep == "paired"
            if essential and arrays["valid"][i]:
                arrays["valid"][i] = False
                skips.note(split, f"bad {what} (skipped)")
            elif not essential:
                skips.note(split, f"bad {what} (dropped, frame kept)")
                if what == "depth":
                    arrays["has_depth"][i] = False
                else:
                    self.has_echo[i] = False

    def _decode(self) -> None:
        """Pass 2: decode each needed message once into the slots of every frame that uses it."""
        bag, reader = self.bag, self.reader
        seen: dict[str, set[int]] = {t: set() for t in EXPECTED_TYPES}
        for conn, raw in tqdm(iter_raw(reader, self.used, bag), total=self.total, desc=f"caching {bag.name}", unit="msg",
                              disable=not self.progress):
            t = conn.topic
            stamp = message_stamp_ns(reader, conn.msgtype, raw, f"{bag}:{t}")
            if stamp in seen[t]:
                continue
            seen[t].add(stamp)
            where = f"{bag}:{t} stamp {stamp} ns"
            if t == topics.IMAGE:
                slots = [self.slot_of_stamp[stamp]] if stamp in self.slot_of_stamp else []
            else:
                slots = self.users[t].get(stamp, [])
            if not slots:
                continue
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except Exception as err:  # a damaged message; rosbags raises several error types
                self.drop(slots, _what(t), f"{where}: cannot deserialise ({type(err).__name__}: {err})")
                continue
            try:
                self._store(t, msg, where, slots)
            except ValueError as err:
                self.drop(slots, _what(t), str(err))

    def _store(self, topic: str, msg: Any, where: str, slots: list[int]) -> None:
        s = self.s
        if topic == topics.IMAGE:
            rgb = image_to_rgb(msg, where)
            self.arrays["rgb"][slots[0]] = resize_rgb(rgb, s.image_size)
            self.image_hw[slots[0]] = rgb.shape[:2]
            self.got_image[slots[0]] = True
            self.frame_ids[topic].add(str(msg.header.frame_id))
        elif topic == topics.IMU:
            R = imu_rotation(msg, where)
            for i in slots:
                self.arrays["imu_rotation"][i] = R
                self.arrays["has_imu"][i] = True
            self.frame_ids[topic].add(str(msg.header.frame_id))
        elif topic == topics.DEPTH:
            self._store_depth(msg, where, slots)
        elif topic == topics.ECHO:
            _store_echo(msg, where, slots, s, self.arrays, self.out, self.count, self.echo_info)
        else:
            K = camera_info_to_K(msg, where)
            for i in slots:
                self.raw_K[i] = K
                self.info_hw[i] = (int(msg.height), int(msg.width))

    def _store_depth(self, msg: Any, where: str, slots: list[int]) -> None:
        s, arrays = self.s, self.arrays
        depth = image_to_depth(msg, where)
        if problem := depth_problem(depth):
            raise ValueError(f"{where}: {problem}")
        hw = s.depth_hw or depth.shape
        target = self.depth_array(hw, where)
        resized = resize_depth(depth, hw, s.max_depth)
        for i in slots:
            target[i] = resized
            self.depth_hw[i] = depth.shape
        if not resized.any():  # valid input, but nothing nearer than max_depth: no supervision in it
            for i in slots:
                split = self.sequences[int(arrays["sequence"][i])].split
                if s.keep == "paired" and arrays["valid"][i]:
                    arrays["valid"][i] = False
                    self.skips.note(split, f"no valid depth pixel below max_depth {s.max_depth:g} m")
                elif s.keep == "all":
                    arrays["has_depth"][i] = False
                    self.skips.note(split, f"no valid depth pixel below max_depth {s.max_depth:g} m (frame kept)")

    def _check_frames(self) -> None:
        """After pass 2: every kept image read back, CameraInfo and depth registered to their image, K at the cached size."""
        bag, arrays, image_hw, depth_hw, info_hw, raw_K = (self.bag, self.arrays, self.image_hw, self.depth_hw,
                                                           self.info_hw, self.raw_K)
        missing = np.flatnonzero(~self.got_image & arrays["valid"])
        if missing.size:
            raise ValueError(f"{bag}: {missing.size} image messages seen in the first pass were not read back; "
                             f"the bag changed while it was read")
        for i in range(self.count):
            if not arrays["valid"][i]:
                continue
            where = f"{bag}: frame stamp {int(arrays['stamps'][i])} ns"
            if info_hw[i].any() and tuple(info_hw[i]) != tuple(image_hw[i]):
                self.drop([i], "camera_info", f"{where}: {topics.CAMERA_INFO} is for {info_hw[i][1]}x{info_hw[i][0]} but "
                          f"the image is {image_hw[i][1]}x{image_hw[i][0]}")
                raw_K[i] = np.nan
            aspect_gap = abs(depth_hw[i][1] / max(depth_hw[i][0], 1) - image_hw[i][1] / image_hw[i][0])
            if arrays["valid"][i] and depth_hw[i].any() and aspect_gap > 0.01:
                self.drop([i], "depth", f"{where}: depth {depth_hw[i][1]}x{depth_hw[i][0]} does not match the aspect of "
                          f"the {image_hw[i][1]}x{image_hw[i][0]} image it is registered to")
            if np.isfinite(raw_K[i]).all():
                arrays["K"][i] = scale_intrinsics(raw_K[i], tuple(image_hw[i]), self.s.image_size)
        if self.has_depth_topic and "depth" not in arrays:  # native, and no depth map could be read: has_depth all false
            self.depth_array(self.s.image_size, str(bag))

    def _write_meta(self) -> None:
        arrays, fields, echo_info = self.arrays, self.fields, self.echo_info
        if "echo" in echo_info:
            has = files.allocate_npy(self.out / "has_echo.npy", "bool", (self.count,))
            has[:] = self.has_echo
            arrays["has_echo"] = has
            fields["has_echo"] = ((self.count,), "bool")
            fields["echo"] = (tuple(echo_info["echo"].shape), "float32")
            arrays["echo"] = echo_info["echo"]
        for arr in arrays.values():
            arr.flush()
        meta = {
            "version": CACHE_VERSION, "bag": str(self.bag.resolve()), "settings": asdict(self.s), "count": self.count,
            "fields": {name: {"shape": list(shape), "dtype": dtype} for name, (shape, dtype) in fields.items()},
            "sequences": [asdict(q) for q in self.sequences], "sequences_derived": not self.records,
            "report": {split: dict(reasons) for split, reasons in self.skips.counts.items()},
            "examples": self.skips.examples, "echo_channels": echo_info.get("channels"),
            "source_image_size": sorted({tuple(map(int, hw)) for hw in self.image_hw[self.got_image]}),
            "image_frame_ids": sorted(self.frame_ids[topics.IMAGE]), "imu_frame_ids": sorted(self.frame_ids[topics.IMU]),
        }
        (self.out / "meta.json").write_text(json.dumps(meta, indent=1))


def _what(topic: str) -> str:
    return {topics.IMAGE: "image", topics.DEPTH: "depth", topics.ECHO: "echo", topics.CAMERA_INFO: "camera_info",
            topics.IMU: "imu"}[topic]


def imu_rotation(msg: Any, where: str) -> np.ndarray:
    """sensor_msgs/Imu -> the rotation matrix of its orientation quaternion (3, 3)."""
    q = np.array([msg.orientation.w, msg.orientation.x, msg.orientation.y, msg.orientation.z], float)
    n = float(np.linalg.norm(q))
    if not np.isfinite(q).all() or abs(n - 1) > 1e-3 or msg.orientation_covariance[0] == -1:
        raise ValueError(f"{where}: the IMU message has no orientation (quaternion {q.round(4).tolist()}, "
                         f"orientation_covariance[0] {msg.orientation_covariance[0]})")
    w, x, y, z = q / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]], np.float32)


def _store_echo(msg: Any, where: str, slots: list[int], s: CacheSettings, arrays: dict[str, np.ndarray], out: Path,
                count: int, echo_info: dict[str, Any]) -> None:
    samples = np.array(echo_to_array(msg, where))  # writable copy: torch warns on read-only message buffers
    # window_samples 0: a recording shorter than the echo window is zero-padded (audio.window.echo_window), as before
    if problem := echo_input_problem(samples, int(msg.sample_rate), int(msg.emission_offset), expected_rate=s.sample_rate,
                                     window_samples=0, channels=None):
        raise ValueError(f"{where}: echo {problem}")
    if s.stft.range_profile is not None and (chirp := echo_chirp(msg, where)) != s.stft.range_profile.chirp:
        raise ValueError(f"{where}: the echo's chirp {chirp} is not the one the range profile's matched filter expects "
                         f"({s.stft.range_profile.chirp}); set the model's chirp_* options to the recording's chirp")
    if s.echo_store == "features":
        value = echo_features(samples, int(msg.sample_rate), expected_rate=s.sample_rate, max_depth=s.max_depth,
                              size=s.echo_size, emission_offset=int(msg.emission_offset), speed_of_sound=s.speed_of_sound,
                              settings=s.stft, where=where).numpy()
    else:
        value = echo_window(samples, int(msg.sample_rate), s.max_depth, int(msg.emission_offset), s.speed_of_sound)
    if "echo" not in echo_info:
        channels = samples.shape[0]
        shape = (count, value.shape[0], *s.echo_size) if s.echo_store == "features" else (
            count, channels, echo_window_samples(s.max_depth, s.sample_rate, s.speed_of_sound))
        echo_info["channels"] = channels
        echo_info["echo"] = files.allocate_npy(out / "echo.npy", "float32", shape)
    if samples.shape[0] != echo_info["channels"]:
        raise ValueError(f"{where}: echo has {samples.shape[0]} channels, earlier echoes have {echo_info['channels']}")
    for i in slots:
        echo_info["echo"][i] = value
