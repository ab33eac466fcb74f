"""What a rosbag2 holds and whether the datasets can use it.

Topics with types, counts, header-stamp ranges and rates; image size and encoding; echo sample rate, channels, length
and quality; CameraInfo; sequences and splits (from the bag metadata, or derived from stamp gaps as the datasets do);
and pairing statistics (frames with a paired echo by the shared pairing rule, frames with depth).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from avs_depth_core.data import topics
from avs_depth_core.data.bag import bag_sequences, iter_raw, message_stamp_ns, open_bag
from avs_depth_core.data.messages import camera_info_to_K, echo_problem, echo_to_array
from avs_depth_core.data.pairing import DEFAULT_TOLERANCE_NS, nearest_stamp, pair_echo_with_frame
from avs_depth_core.data.splits import (
    DEFAULT_GAP_NS,
    assign_frames,
    derive_sequences,
    sequences_from_metadata,
    split_counts,
)


def _rate(stamps: np.ndarray) -> float:
    """1 / median interval between distinct stamps, so pauses between sequences do not lower it."""
    steps = np.diff(np.unique(stamps))
    return 1e9 / float(np.median(steps)) if steps.size else 0.0


def summarise_bag(path: str | Path, tolerance_s: float = DEFAULT_TOLERANCE_NS / 1e9, depth_tolerance_s: float = 0.001
                  ) -> dict[str, Any]:
    path = Path(path)
    stamps: dict[str, list[int]] = {}
    info: dict[str, dict[str, Any]] = {}
    with open_bag(path) as reader:
        for conn in reader.connections:
            info.setdefault(conn.topic, {"type": conn.msgtype, "count": 0})
            stamps.setdefault(conn.topic, [])
        echo_rates, echo_channels, echo_lengths, echo_bad = set(), set(), [], []
        object_counts: list[int] = []
        moving: dict[str, list[int]] = {}  # motion case -> [frames seen, frames moving] (dynamic worlds)
        for conn, raw in iter_raw(reader, list(reader.connections), path):
            t = conn.topic
            entry = info[t]
            entry["count"] += 1
            where = f"{path}:{t}"
            if entry["count"] == 1:
                msg = reader.deserialize(raw, conn.msgtype)
                entry["stamped"] = hasattr(msg, "header") and next(iter(type(msg).__dataclass_fields__)) == "header"
                if conn.msgtype == topics.IMAGE_TYPE:
                    entry["first_image"] = {"width": int(msg.width), "height": int(msg.height), "encoding": msg.encoding}
                elif conn.msgtype == topics.CAMERA_INFO_TYPE:
                    entry["first_camera_info"] = {"width": int(msg.width), "height": int(msg.height),
                                                  "K": np.asarray(msg.k, dtype=float).round(3).tolist()}
                    try:
                        camera_info_to_K(msg, where)
                    except ValueError as err:
                        entry["problem"] = str(err)
            if conn.msgtype == topics.ECHO_TYPE:
                msg = reader.deserialize(raw, conn.msgtype)
                echo_rates.add(int(msg.sample_rate))
                echo_channels.add(int(msg.channels))
                try:
                    samples = echo_to_array(msg, where)
                    echo_lengths.append(samples.shape[1])
                    if problem := echo_problem(samples):
                        echo_bad.append(f"stamp {message_stamp_ns(reader, conn.msgtype, raw)}: {problem}")
                except ValueError as err:
                    echo_bad.append(str(err))
            if conn.msgtype == topics.OBJECTS_TYPE:
                msg = reader.deserialize(raw, conn.msgtype)
                object_counts.append(len(msg.ids))
                for motion, flag in zip(msg.motions, msg.moving, strict=False):
                    seen = moving.setdefault(str(motion), [0, 0])
                    seen[0] += 1
                    seen[1] += int(bool(flag))
                entry.update({"objects_min": min(object_counts), "objects_max": max(object_counts),
                              "moving_by_motion": {m: round(b / a, 3) for m, (a, b) in sorted(moving.items())}})
            if entry.get("stamped"):
                stamps[t].append(message_stamp_ns(reader, conn.msgtype, raw, where))
            if conn.msgtype == topics.ECHO_TYPE:
                entry.update({"sample_rates": sorted(echo_rates), "channels": sorted(echo_channels)})
        storage = "mcap" if any(path.glob("*.mcap")) or path.suffix == ".mcap" else "sqlite3"

    arrays = {t: np.sort(np.asarray(s, dtype=np.int64)) for t, s in stamps.items()}
    for t, entry in info.items():
        s = arrays[t]
        if s.size:
            entry.update({"stamp_first_ns": int(s[0]), "stamp_last_ns": int(s[-1]), "rate_hz": round(_rate(s), 3),
                          "duplicate_stamps": int(s.size - np.unique(s).size)})
        if entry["type"] == topics.ECHO_TYPE and echo_lengths:
            entry.update({"samples_min": int(min(echo_lengths)), "samples_max": int(max(echo_lengths)),
                          "bad_echoes": len(echo_bad), "bad_examples": echo_bad[:5]})

    frames = np.unique(arrays.get(topics.IMAGE, np.zeros(0, np.int64)))
    records = bag_sequences(path)
    sequences = sequences_from_metadata(records, path) if records else derive_sequences(frames, DEFAULT_GAP_NS)
    seq_of = assign_frames(frames, sequences, path)
    per_seq = np.bincount(seq_of[seq_of >= 0], minlength=len(sequences)) if len(sequences) else np.zeros(0, int)
    echoes = np.unique(arrays.get(topics.ECHO, np.zeros(0, np.int64)))
    depths = np.unique(arrays.get(topics.DEPTH, np.zeros(0, np.int64)))
    paired = [pair_echo_with_frame(int(t), echoes, round(tolerance_s * 1e9)) for t in frames]
    with_depth = [nearest_stamp(int(t), depths, round(depth_tolerance_s * 1e9)) is not None for t in frames]
    return {
        "bag": str(path), "storage": storage, "messages": sum(e["count"] for e in info.values()), "topics": info,
        "sequences_derived": not records,
        "sequences": [{"name": q.name, "split": q.split, "frames": int(n), "duration_s": round((q.end_ns - q.start_ns) / 1e9, 3)}
                      for q, n in zip(sequences, per_seq, strict=True)],
        "splits": split_counts(seq_of, sequences), "frames_outside_sequences": int((seq_of < 0).sum()),
        "pairing": {"tolerance_s": tolerance_s, "frames": int(frames.size),
                    "with_echo": sum(j is not None for j in paired), "with_depth": int(sum(with_depth)),
                    "with_echo_and_depth": sum(j is not None and d for j, d in zip(paired, with_depth, strict=True)),
                    "echoes_unused": int(echoes.size - len({j for j in paired if j is not None}))},
    }


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"bag {s['bag']} ({s['storage']}, {s['messages']} messages)", "topics:"]
    for topic, e in sorted(s["topics"].items()):
        line = f"  {topic}  {e['type']}  {e['count']} msgs"
        if "rate_hz" in e:
            line += f"  {e['rate_hz']:.3f} Hz  stamps {e['stamp_first_ns'] / 1e9:.3f} .. {e['stamp_last_ns'] / 1e9:.3f} s"
            if e["duplicate_stamps"]:
                line += f"  ({e['duplicate_stamps']} duplicate stamps)"
        elif not e.get("stamped", True):
            line += "  (no header)"
        lines.append(line)
        if "first_image" in e:
            im = e["first_image"]
            lines.append(f"      image {im['width']}x{im['height']} {im['encoding']} (first message)")
        if "first_camera_info" in e:
            ci = e["first_camera_info"]
            problem = f"  {e['problem']}" if "problem" in e else ""
            lines.append(f"      camera_info {ci['width']}x{ci['height']} K={ci['K']}{problem}")
        if "sample_rates" in e:
            lines.append(f"      echo {e['sample_rates']} Hz, {e['channels']} channels, "
                         f"{e.get('samples_min', 0)}..{e.get('samples_max', 0)} samples per channel, "
                         f"{e.get('bad_echoes', 0)} bad (NaN/silent/clipped)")
            lines += [f"        {x}" for x in e.get("bad_examples", [])]
        if "objects_min" in e:
            shares = ", ".join(f"{m} {100 * v:.0f} %" for m, v in e["moving_by_motion"].items())
            lines.append(f"      objects {e['objects_min']}..{e['objects_max']} per frame; moving: {shares}")
    derived = " (derived from stamp gaps; the bag has no sequence metadata)" if s["sequences_derived"] else ""
    lines.append(f"sequences{derived}:")
    lines += [f"  {q['name']}  {q['split']}  {q['frames']} frames  {q['duration_s']:.3f} s" for q in s["sequences"]]
    lines.append("splits: " + ", ".join(f"{k} {v} frames" for k, v in s["splits"].items())
                 + (f"; {s['frames_outside_sequences']} frames outside every sequence" if s["frames_outside_sequences"] else ""))
    p = s["pairing"]
    lines.append(f"pairing (tolerance {p['tolerance_s'] * 1e3:g} ms): {p['with_echo']}/{p['frames']} frames with an echo, "
                 f"{p['with_depth']} with depth, {p['with_echo_and_depth']} with both; {p['echoes_unused']} echoes unused")
    return "\n".join(lines)
