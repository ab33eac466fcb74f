"""Sequences (contiguous frames of one scene) and their train/val/test split.

Bags written by this project (simulator, BatVision converter) carry their sequences in the bag metadata
(BagWriter.add_sequence). For bags recorded elsewhere the sequences are derived from the image stamps:
  1. a new run starts wherever two consecutive image stamps are more than `gap_ns` apart (default 1 s);
  2. each run is cut in time order into consecutive chunks by the split fractions (default train 0.8, val 0.1, test 0.1,
     chunk sizes rounded from the cumulative fractions), and each chunk is one sequence named "run<k>-<split>".
So every split holds the same share of every run, the rule depends only on the stamps, and frame triples never
cross a chunk boundary. Neighbouring chunks of one run are adjacent in time; prefer recording separate scenes.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")
ALL = "all"
DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}
DEFAULT_GAP_NS = 1_000_000_000


@dataclass(frozen=True)
class FrameSequence:
    name: str
    split: str
    start_ns: int  # first frame stamp (inclusive)
    end_ns: int  # last frame stamp (inclusive)


def sequences_from_metadata(records: Sequence[Mapping[str, Any]], bag: str | Path = "bag") -> list[FrameSequence]:
    """Validate the sequence records of a bag's metadata (bag_sequences) into FrameSequence objects."""
    out = []
    for i, rec in enumerate(records):
        missing = [k for k in ("name", "split", "start_ns", "end_ns") if k not in rec]
        if missing:
            raise ValueError(f"{bag}: sequence record {i} lacks {missing}; expected name, split, start_ns, end_ns")
        seq = FrameSequence(str(rec["name"]), str(rec["split"]), int(rec["start_ns"]), int(rec["end_ns"]))
        if seq.split == ALL:
            raise ValueError(f"{bag}: sequence {seq.name!r} uses the reserved split name {ALL!r}")
        if seq.end_ns < seq.start_ns:
            raise ValueError(f"{bag}: sequence {seq.name!r} ends ({seq.end_ns} ns) before it starts ({seq.start_ns} ns)")
        out.append(seq)
    return out


def derive_sequences(stamps_ns: Sequence[int] | np.ndarray, gap_ns: int = DEFAULT_GAP_NS,
                     fractions: Mapping[str, float] = DEFAULT_FRACTIONS) -> list[FrameSequence]:
    """Sequences for a bag without sequence metadata, by the rule in this module's docstring."""
    total = sum(fractions.values())
    if any(f < 0 for f in fractions.values()) or abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {dict(fractions)}")
    stamps = np.sort(np.asarray(stamps_ns, dtype=np.int64))
    if stamps.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(stamps) > gap_ns) + 1
    sequences = []
    for k, run in enumerate(np.split(stamps, breaks)):
        cumulative = np.cumsum([0.0, *fractions.values()])
        bounds = np.round(cumulative * len(run)).astype(int)
        for split, lo, hi in zip(fractions, bounds[:-1], bounds[1:], strict=True):
            if hi > lo:
                sequences.append(FrameSequence(f"run{k:03d}-{split}", split, int(run[lo]), int(run[hi - 1])))
    return sequences


def assign_frames(stamps_ns: Sequence[int] | np.ndarray, sequences: Sequence[FrameSequence], bag: str | Path = "bag"
                  ) -> np.ndarray:
    """Index into `sequences` of the sequence holding each stamp, -1 for a stamp outside every sequence."""
    order = sorted(range(len(sequences)), key=lambda i: sequences[i].start_ns)
    for a, b in pairwise(order):
        if sequences[b].start_ns <= sequences[a].end_ns:
            raise ValueError(f"{bag}: sequences {sequences[a].name!r} and {sequences[b].name!r} overlap in time")
    starts = [sequences[i].start_ns for i in order]
    out = np.full(len(stamps_ns), -1, dtype=np.int64)
    for n, stamp in enumerate(np.asarray(stamps_ns, dtype=np.int64)):
        k = bisect_right(starts, int(stamp)) - 1
        if k >= 0 and stamp <= sequences[order[k]].end_ns:
            out[n] = order[k]
    return out


def split_counts(frame_sequence: np.ndarray, sequences: Sequence[FrameSequence]) -> dict[str, int]:
    """Frames per split (frames outside every sequence are not counted)."""
    counts: dict[str, int] = {}
    for seq in sequences:
        counts.setdefault(seq.split, 0)
    for k in frame_sequence[frame_sequence >= 0]:
        counts[sequences[int(k)].split] += 1
    return counts


def check_split(split: str, counts: Mapping[str, int], bag: str | Path = "bag") -> None:
    """An unknown or empty split is an error naming the bag and the splits it has (with their frame counts)."""
    have = {k: v for k, v in counts.items() if v > 0}
    if split != ALL and split not in counts:
        raise ValueError(f"{bag}: unknown split {split!r}; the bag has splits {have} (or use {ALL!r})")
    if (split == ALL and not have) or (split != ALL and counts[split] == 0):
        raise ValueError(f"{bag}: split {split!r} has no usable frames; the bag has splits {have}")


def in_split(split: str, sequence: FrameSequence) -> bool:
    return split == ALL or sequence.split == split
