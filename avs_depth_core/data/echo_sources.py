"""Binaural chirp recordings from the places `avs-depth echo-stats` reads them: a wav file, a rosbag2's echo topic, or a
BatVision V2 folder (its location CSVs, or a folder of audio_<i>.wav files with depth_<i>.npy beside them).

Each recording comes with its emission offset and, where the source has a depth map for it, the median of its valid
depth (metres): the bag's depth image with the echo's stamp, or BatVision's depth_<i>.npy. The depth median only says
at what distance a recording was made, so recordings can be compared with simulated ones at similar distances.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avs_depth_core.audio import read_wav
from avs_depth_core.data import topics
from avs_depth_core.data.bag import open_bag, read_topic
from avs_depth_core.data.batvision import SPLITS, RowError, bv2_sequences, load_depth_m
from avs_depth_core.data.messages import echo_to_array, image_to_depth


@dataclass(frozen=True)
class EchoRecord:
    name: str
    samples: np.ndarray          # (channels, n) float32 in [-1, 1]
    sample_rate: int
    emission_offset: int
    depth_median_m: float = math.nan


def wav_record(path: Path, emission_offset: int = 0, depth_path: Path | None = None) -> EchoRecord:
    samples, rate = read_wav(path)
    depth = math.nan
    if depth_path is not None and depth_path.is_file():
        try:
            depth = float(np.nanmedian(load_depth_m(depth_path)))
        except RowError as err:
            raise ValueError(str(err)) from None
    return EchoRecord(str(path), samples, rate, int(emission_offset), depth)


def _spread(items: list, limit: int | None) -> list:
    """At most `limit` items, evenly spaced over the list (all of them without a limit)."""
    if limit is None or len(items) <= limit:
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def bag_records(path: Path, topic: str = topics.ECHO, depth_topic: str = topics.DEPTH,
                limit: int | None = None) -> list[EchoRecord]:
    """The echoes on `topic` (EchoStamped, its emission_offset each) with the median of the depth image that shares the
    echo's stamp, where the bag has `depth_topic`."""
    with open_bag(path) as reader:
        echoes = [(m.stamp_ns, m.msg) for m in read_topic(reader, topic, path)]
        depth: dict[int, float] = {}
        if any(c.topic == topics.normalise(depth_topic) for c in reader.connections):
            for m in read_topic(reader, depth_topic, path):
                d = image_to_depth(m.msg, f"{path} {depth_topic}")
                depth[m.stamp_ns] = float(np.nanmedian(d)) if np.isfinite(d).any() else math.nan
    if not echoes:
        raise ValueError(f"{path}: topic {topic} holds no messages")
    out = []
    for stamp, msg in _spread(echoes, limit):
        samples = echo_to_array(msg, f"{path} {topic} at {stamp} ns")
        out.append(EchoRecord(f"{path}@{stamp}", samples, int(msg.sample_rate), int(msg.emission_offset),
                              depth.get(stamp, math.nan)))
    return out


def batvision_records(root: Path, limit: int | None = None) -> list[EchoRecord]:
    """A BatVision V2 root (location folders with {train,val,test}.csv) or a folder holding audio_<i>.wav files; the
    recordings start at the chirp (emission offset 0, as BatVision's loader cuts them)."""
    pairs: list[tuple[Path, Path | None]] = []
    if any(p.is_dir() and any((p / f"{s}.csv").is_file() for s in SPLITS) for p in root.iterdir()):
        for seq in bv2_sequences(root, list(SPLITS), []):
            pairs += [(row.audio[0], row.depth) for row in seq.rows if row.audio]
    else:
        for wav in sorted(root.glob("audio_*.wav"), key=lambda p: (len(p.name), p.name)):
            match = re.fullmatch(r"audio_(.+)\.wav", wav.name)
            pairs.append((wav, root / f"depth_{match.group(1)}.npy" if match else None))
    if not pairs:
        raise ValueError(f"{root}: no BatVision recordings (no location CSVs and no audio_<i>.wav files)")
    return [wav_record(wav, 0, depth) for wav, depth in _spread(pairs, limit)]


def load_records(path: str | Path, emission_offset: int = 0, topic: str = topics.ECHO,
                 limit: int | None = None) -> list[EchoRecord]:
    """Recordings from a .wav file (starting emission_offset samples before the chirp leaves the speaker), a rosbag2
    (folder or .mcap/.db3 file) or a BatVision folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; expected a .wav file, a rosbag2 or a BatVision folder")
    if path.is_file() and path.suffix.lower() == ".wav":
        return [wav_record(path, emission_offset)]
    if path.suffix in (".mcap", ".db3") or (path.is_dir() and (path / "metadata.yaml").is_file()):
        return bag_records(path, topic, limit=limit)
    if path.is_dir():
        return batvision_records(path, limit)
    raise ValueError(f"{path}: not a .wav file, a rosbag2 (folder, .mcap, .db3) or a BatVision folder")
