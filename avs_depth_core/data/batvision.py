"""Turn a BatVision V1 or V2 download into one rosbag2 (AmandineBtto/Batvision-Dataset, IROS 2023).

Layouts read:
- BV2: <root>/<location>/{train,val,test}.csv with columns `depth path`, `depth file name`, `audio path`,
  `audio file name`, `camera path`, `camera file name`. Paths are relative to the BV2 root and include the location
  folder (as the official loader joins them); a path relative to the location folder is accepted too.
  camera_<i>.jpeg, depth_<i>.npy (uint16 mm, 0 invalid), audio_<i>.wav (stereo 44.1 kHz).
- BV1: <root>/{train,val,test}.csv with `depth path`, `audio path left`, `audio path right` (relative to the root;
  depth .npy float mm with NaN/inf, one waveform .npy per ear) and an RGB column. The official loader reads no RGB,
  so its column name is not fixed by the public code: it is found automatically (a single column naming an image,
  camera or rgb, or a `<x> path` + `<x> file name` pair) or given with --bv1-image-column.

What is written, per CSV row (one frame):
- camera/color/image_raw: rgb8, the pixels Pillow decodes (exact);
- camera/depth/image: 32FC1 metres = mm / 1000, NaN where the file holds 0, a negative value, NaN or inf;
- audio/echo: EchoStamped with the whole recording as float in [-1, 1] (wav integers / 2^(bits-1); BV1 per-ear .npy
  stacked left,right), emission_offset 0 (the official loader cuts the echo from sample 0), BatVision's chirp;
- camera/color/camera_info: a pinhole K. BatVision publishes no intrinsics in its repositories: by assumption a 90 deg
  horizontal field of view with square pixels and the principal point at the image centre (--hfov-deg), or exactly
  --intrinsics fx,fy,cx,cy in pixels of the original images.

Stamps are synthetic and deterministic: sequences (BV2: one per location and split; BV1: one per date folder and
split) follow each other in the order locations (sorted) x splits (train, val, test) for BV2 and splits x date folders
(in order of first appearance) for BV1. Row k of a sequence (k counts the CSV rows of that sequence, skipped ones
included) is stamped start + k * period (default 0.1 s, the 10 Hz chirp rate); the next sequence starts `gap`
(default 10 s, far above the 1 s sequence gap the datasets use) after the previous one's last row. The first sequence
starts at 1.6e9 s. The echo's stamp equals its frame's stamp.

Command line: `avs-depth convert-batvision` (avs_depth_core/cli/convert_batvision.py).

Counting: every CSV row becomes a frame, or the command fails naming the CSV, line and file; with --skip-bad such rows
are skipped and each is printed with its reason. The summary prints rows in / frames out / skipped per split, and
rows in always equals frames out plus skipped.
"""

from __future__ import annotations

import csv
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from avs_depth_core import files
from avs_depth_core.audio import BATVISION_CHIRP, read_wav
from avs_depth_core.data import topics
from avs_depth_core.data.bag import BagWriter, make_msg
from avs_depth_core.data.messages import (
    camera_info_fields,
    depth_problem,
    echo_fields,
    echo_problem,
    image_fields,
)

SPLITS = ("train", "val", "test")
BV2_COLUMNS = ("depth path", "depth file name", "audio path", "audio file name", "camera path", "camera file name")
BV1_COLUMNS = ("depth path", "audio path left", "audio path right")
IMAGE_WORDS = ("image", "camera", "rgb", "img")

STAMP_ORIGIN_NS = 1_600_000_000 * 10**9
DEFAULT_PERIOD_S = 0.1
DEFAULT_GAP_S = 10.0
DEFAULT_HFOV_DEG = 90.0  # assumption, see the module docstring
SAMPLE_RATE = 44_100  # BatVision README: echoes at 44.1 kHz
SPEED_OF_SOUND = 340.0  # BatVision's loader cut (its dataloader), written into each EchoStamped
CAMERA_FRAME = "camera_color_optical_frame"
MIC_FRAME = "binaural_microphones"


class RowError(ValueError):
    """A CSV row that cannot become a frame (missing or unreadable file, bad content)."""


@dataclass
class Row:
    csv: Path
    line: int  # line number in the CSV (the header is line 1)
    split: str
    group: str  # BV2 location, BV1 date folder
    depth: Path | None = None
    audio: tuple[Path, ...] = ()
    image: Path | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.csv} line {self.line}"


@dataclass
class SequenceRows:
    name: str
    split: str
    group: str
    csv: Path
    rows: list[Row]


@dataclass(frozen=True)
class ConvertOptions:
    """How convert reads the download and stamps the frames (the command-line defaults)."""

    storage: str = "mcap"  # rosbag2 storage plugin: mcap or sqlite3
    skip_bad: bool = False  # skip (print and count) rows naming a missing/unreadable/bad file instead of failing
    splits: tuple[str, ...] = SPLITS
    locations: tuple[str, ...] = ()  # BV2: location folders (empty: every one with CSVs)
    intrinsics: tuple[float, float, float, float] | None = None  # fx, fy, cx, cy of the original images
    hfov_deg: float = DEFAULT_HFOV_DEG  # horizontal field of view of the assumed K
    bv1_image_column: str = ""  # BV1: the CSV column naming the RGB image ("" = found)
    bv1_audio_scale: float = 1.0  # BV1: float .npy waveforms are divided by it
    sample_rate: int = SAMPLE_RATE  # expected audio sample rate, Hz
    period_s: float = DEFAULT_PERIOD_S  # synthetic stamp step between rows
    gap_s: float = DEFAULT_GAP_S  # synthetic stamp gap between sequences


def read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Columns and (line number, row) pairs; comma or tab separated; column names and cells stripped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read CSV ({err})") from err
    lines = text.splitlines()
    if not lines:
        raise ValueError(f"{path}: empty CSV; expected a header line")
    delimiter = "\t" if lines[0].count("\t") > lines[0].count(",") else ","
    reader = csv.reader(lines, delimiter=delimiter)
    columns = [c.strip() for c in next(reader)]
    rows = []
    for line, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue  # blank line
        if len(cells) != len(columns):
            raise ValueError(f"{path} line {line}: {len(cells)} cells, the header has {len(columns)} columns")
        rows.append((line, {k: v.strip() for k, v in zip(columns, cells, strict=True)}))
    return columns, rows


def _require_columns(path: Path, columns: list[str], needed: tuple[str, ...]) -> None:
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {list(needed)}, found {columns}")


def _resolve(row: Row, what: str, root: Path, parts: tuple[str, ...], location: str | None = None) -> Path | None:
    """root/<parts> (or root/<location>/<parts> for BV2 paths given relative to the location); a problem if neither exists."""
    if not all(parts):
        row.problems.append(f"empty {what} cell")
        return None
    path = root.joinpath(*parts)
    if path.is_file():
        return path
    if location is not None and (root / location).joinpath(*parts).is_file():
        return (root / location).joinpath(*parts)
    row.problems.append(f"{what} file {path} not found")
    return None


def bv2_sequences(root: Path, splits: list[str], locations: list[str]) -> list[SequenceRows]:
    if not locations:
        locations = sorted(p.name for p in root.iterdir() if p.is_dir() and any((p / f"{s}.csv").is_file() for s in SPLITS))
        if not locations:
            raise ValueError(f"{root}: no BatVision V2 location folders holding {'/'.join(f'{s}.csv' for s in SPLITS)}")
    sequences = []
    for location in locations:
        if not (root / location).is_dir():
            raise ValueError(f"{root / location}: location folder not found")
        for split in splits:
            path = root / location / f"{split}.csv"
            if not path.is_file():
                print(f"note: {path} not found; location {location} has no {split} split", file=sys.stderr)
                continue
            columns, cells = read_csv(path)
            _require_columns(path, columns, BV2_COLUMNS)
            rows = []
            for line, c in cells:
                row = Row(path, line, split, location)
                row.depth = _resolve(row, "depth", root, (c["depth path"], c["depth file name"]), location)
                audio = _resolve(row, "audio", root, (c["audio path"], c["audio file name"]), location)
                row.audio = (audio,) if audio else ()
                row.image = _resolve(row, "camera", root, (c["camera path"], c["camera file name"]), location)
                rows.append(row)
            sequences.append(SequenceRows(f"{location}/{split}", split, location, path, rows))
    return sequences


def bv1_image_columns(path: Path, columns: list[str], chosen: str) -> tuple[str, ...]:
    """The column(s) naming the RGB file: the chosen one, a `<x> path` + `<x> file name` pair, or the single image column."""
    if chosen:
        if chosen not in columns:
            raise ValueError(f"{path}: --bv1-image-column {chosen!r} not among the columns {columns}")
        return (chosen,)
    candidates = [c for c in columns if any(w in c.lower() for w in IMAGE_WORDS)
                  and not any(w in c.lower() for w in ("depth", "audio"))]
    pairs = [c for c in candidates if c.endswith(" path") and c[:-5] + " file name" in candidates]
    if len(pairs) == 1:
        return (pairs[0], pairs[0][:-5] + " file name")
    if len(candidates) == 1:
        return (candidates[0],)
    raise ValueError(f"{path}: cannot tell which column names the RGB image among {columns} "
                     f"({'candidates ' + str(candidates) if candidates else 'no candidate'}); pass --bv1-image-column NAME")


def bv1_sequences(root: Path, splits: list[str], image_column: str) -> list[SequenceRows]:
    sequences = []
    for split in splits:
        path = root / f"{split}.csv"
        if not path.is_file():
            if not any((root / f"{s}.csv").is_file() for s in SPLITS):
                raise ValueError(f"{root}: no BatVision V1 {'/'.join(f'{s}.csv' for s in SPLITS)} found")
            print(f"note: {path} not found; no {split} split", file=sys.stderr)
            continue
        columns, cells = read_csv(path)
        _require_columns(path, columns, BV1_COLUMNS)
        image_cols = bv1_image_columns(path, columns, image_column)
        groups: dict[str, list[Row]] = {}
        for line, c in cells:
            group = Path(c["depth path"]).parts[0] if c["depth path"] else "(empty)"
            row = Row(path, line, split, group)
            row.depth = _resolve(row, "depth", root, (c["depth path"],))
            left = _resolve(row, "left audio", root, (c["audio path left"],))
            right = _resolve(row, "right audio", root, (c["audio path right"],))
            row.audio = (left, right) if left and right else ()
            row.image = _resolve(row, "image", root, tuple(c[k] for k in image_cols))
            groups.setdefault(group, []).append(row)
        sequences += [SequenceRows(f"{group}/{split}", split, group, path, rows) for group, rows in groups.items()]
    return sequences


def load_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise RowError(f"image file {path} is not a readable image ({err})") from err


def load_depth_m(path: Path) -> np.ndarray:
    """Depth .npy in millimetres -> float32 metres, NaN where 0, negative, NaN or inf."""
    try:
        mm = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise RowError(f"depth file {path} is not a readable .npy array ({err})") from err
    if mm.ndim != 2 or not (np.issubdtype(mm.dtype, np.integer) or np.issubdtype(mm.dtype, np.floating)):
        raise RowError(f"depth file {path} holds a {mm.dtype} array of shape {mm.shape}; expected a 2-D numeric map in mm")
    # float64 then float32 rounds each mm / 1000 exactly once (double rounding is exact for one division).
    metres = (mm.astype(np.float64) / 1000.0).astype(np.float32)
    metres[~np.isfinite(metres) | (metres <= 0)] = np.nan
    if problem := depth_problem(metres):
        raise RowError(f"depth file {path}: {problem}")
    return metres


def _int_to_float(samples: np.ndarray) -> np.ndarray:
    if np.issubdtype(samples.dtype, np.integer):
        bits = samples.dtype.itemsize * 8
        return (samples.astype(np.float64) / 2 ** (bits - 1)).astype(np.float32)
    return samples.astype(np.float32)


def load_echo(row: Row, version: int, sample_rate: int, bv1_scale: float) -> np.ndarray:
    """(2, n) float32 in [-1, 1], checked for rate, shape, silence and clipping."""
    if version == 2:
        (path,) = row.audio
        try:
            samples, rate = read_wav(path)
        except ValueError as err:
            raise RowError(str(err)) from err
        if rate != sample_rate:
            raise RowError(f"audio file {path}: sample rate {rate} Hz, expected {sample_rate} Hz")
        if samples.shape[0] != 2:
            raise RowError(f"audio file {path}: {samples.shape[0]} channels, expected 2 (binaural)")
        name = str(path)
    else:
        ears = []
        for path in row.audio:
            try:
                wave = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as err:
                raise RowError(f"audio file {path} is not a readable .npy array ({err})") from err
            wave = np.squeeze(wave)
            if wave.ndim != 1 or not np.issubdtype(wave.dtype, np.number):
                raise RowError(f"audio file {path} holds a {wave.dtype} array of shape {wave.shape}; expected a 1-D waveform")
            if np.issubdtype(wave.dtype, np.floating):
                wave = (wave.astype(np.float64) / bv1_scale).astype(np.float32)
            else:
                wave = _int_to_float(wave)
            peak = float(np.abs(wave).max()) if wave.size else 0.0
            if peak > 1.0:
                raise RowError(f"audio file {path}: float samples reach {peak:.3g}, outside [-1, 1]; "
                               f"pass --bv1-audio-scale to divide them")
            ears.append(wave)
        if ears[0].shape != ears[1].shape:
            raise RowError(f"audio files {row.audio[0]} and {row.audio[1]}: left has {ears[0].size} samples, "
                           f"right {ears[1].size}")
        samples = np.stack(ears)
        name = f"{row.audio[0]} + {row.audio[1].name}"
    if problem := echo_problem(samples):
        raise RowError(f"audio {name}: {problem}")
    return samples


def _row_bytes(sequences: list[SequenceRows]) -> int:
    """About what one converted row takes in the bag, from the first row with an image and audio: the decoded RGB and
    float32 depth at the image's size, the audio as float32, headers and CameraInfo."""
    for row in (r for seq in sequences for r in seq.rows if r.image is not None and r.audio):
        try:
            with Image.open(row.image) as im:  # reads the header only
                width, height = im.size
            audio = sum(p.stat().st_size for p in row.audio)
        except (OSError, UnidentifiedImageError):
            continue
        return width * height * (3 + 4) + 2 * audio + 2048
    return 0


def parse_intrinsics(text: str) -> tuple[float, float, float, float] | None:
    if not text:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values) or values[0] <= 0 or values[1] <= 0:
        raise ValueError(f"--intrinsics {text!r}: expected fx,fy,cx,cy with fx, fy > 0 (pixels of the original images)")
    return values  # type: ignore[return-value]


def intrinsic_matrix(width: int, height: int, intrinsics: tuple[float, float, float, float] | None, hfov_deg: float
                     ) -> np.ndarray:
    if intrinsics is not None:
        fx, fy, cx, cy = intrinsics
    else:
        fx = fy = width / 2.0 / math.tan(math.radians(hfov_deg) / 2.0)
        cx, cy = width / 2.0, height / 2.0
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def write_frame(writer: BagWriter, stamp_ns: int, rgb: np.ndarray, depth: np.ndarray, echo: np.ndarray, K: np.ndarray,
                sample_rate: int) -> None:
    h, w = rgb.shape[:2]
    writer.write(topics.CAMERA_INFO, make_msg(topics.CAMERA_INFO_TYPE, stamp_ns, CAMERA_FRAME, camera_info_fields(K, w, h)),
                 topics.CAMERA_INFO_TYPE)
    writer.write(topics.IMAGE, make_msg(topics.IMAGE_TYPE, stamp_ns, CAMERA_FRAME, image_fields(rgb, "rgb8")),
                 topics.IMAGE_TYPE)
    writer.write(topics.DEPTH, make_msg(topics.IMAGE_TYPE, stamp_ns, CAMERA_FRAME, image_fields(depth, "32FC1")),
                 topics.IMAGE_TYPE)
    writer.write(topics.ECHO, make_msg(topics.ECHO_TYPE, stamp_ns, MIC_FRAME, echo_fields(
        echo, sample_rate, BATVISION_CHIRP, emission_offset=0, speed_of_sound=SPEED_OF_SOUND, channel_order="left,right")),
        topics.ECHO_TYPE)


def convert(root: Path, version: int, out: Path, options: ConvertOptions = ConvertOptions()) -> dict[str, dict[str, int]]:
    """Convert the BatVision V`version` download at `root` into the rosbag2 `out`; returns {split: {"rows": ..,
    "frames": .., "skipped": ..}} (rows in = frames out + skipped)."""
    root, out, o = Path(root), Path(out), options
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: BatVision root folder not found")
    if version not in (1, 2):
        raise ValueError(f"BatVision version {version}: expected 1 or 2")
    if out.suffix == ".bag":
        raise ValueError(f"{out}: rosbags reads any *.bag path as a ROS 1 file; name the rosbag2 folder without '.bag'")
    if out.exists():
        raise ValueError(f"{out}: output bag already exists; remove it or choose another --out")
    if not o.splits or any(s not in SPLITS for s in o.splits):
        raise ValueError(f"--splits {','.join(o.splits)!r}: expected a comma-separated subset of {list(SPLITS)}")
    if not (o.period_s > 0 and o.gap_s > 0 and math.isfinite(o.period_s) and math.isfinite(o.gap_s)):
        raise ValueError(f"--period-s and --gap-s must be positive, got {o.period_s} and {o.gap_s}")
    if not o.bv1_audio_scale > 0 or not math.isfinite(o.bv1_audio_scale):
        raise ValueError(f"--bv1-audio-scale must be a positive number, got {o.bv1_audio_scale}")
    if not 0 < o.hfov_deg < 180:
        raise ValueError(f"--hfov-deg must lie between 0 and 180 degrees (exclusive), got {o.hfov_deg}")
    if o.sample_rate <= 0:
        raise ValueError(f"--sample-rate must be a positive number of Hz, got {o.sample_rate}")
    if version == 2:
        sequences = bv2_sequences(root, list(o.splits), list(o.locations))
    else:
        sequences = bv1_sequences(root, list(o.splits), o.bv1_image_column)

    bad = [f"{row.where}: {p}" for seq in sequences for row in seq.rows for p in row.problems]
    if bad and not o.skip_bad:
        raise ValueError(f"{len(bad)} problem(s) in the CSV rows (pass --skip-bad to skip such rows):\n  " + "\n  ".join(bad))

    summary: dict[str, dict[str, int]] = defaultdict(lambda: {"rows": 0, "frames": 0, "skipped": 0})
    period_ns, gap_ns = round(o.period_s * 1e9), round(o.gap_s * 1e9)
    total = sum(len(seq.rows) for seq in sequences)
    start_ns = STAMP_ORIGIN_NS
    files.check_output(out, total * _row_bytes(sequences), kind="new")
    with BagWriter(out, storage=o.storage) as writer, tqdm(total=total, desc="converting", unit="row") as bar:
        for seq in sequences:
            frames = 0
            for k, row in enumerate(seq.rows):
                bar.update(1)
                stats = summary[seq.split]
                stats["rows"] += 1
                try:
                    if row.problems:
                        raise RowError("; ".join(row.problems))
                    rgb = load_rgb(row.image)
                    depth = load_depth_m(row.depth)
                    if depth.shape != rgb.shape[:2]:
                        raise RowError(f"depth file {row.depth} is {depth.shape[1]}x{depth.shape[0]}, "
                                       f"image {row.image} is {rgb.shape[1]}x{rgb.shape[0]}; expected registered maps")
                    echo = load_echo(row, version, o.sample_rate, o.bv1_audio_scale)
                except RowError as err:
                    if not o.skip_bad:
                        raise ValueError(f"{row.where}: {err} (pass --skip-bad to skip such rows)") from None
                    stats["skipped"] += 1
                    tqdm.write(f"skipped {row.where}: {err}", file=sys.stderr)
                    continue
                K = intrinsic_matrix(rgb.shape[1], rgb.shape[0], o.intrinsics, o.hfov_deg)
                write_frame(writer, start_ns + k * period_ns, rgb, depth, echo, K, o.sample_rate)
                stats["frames"] += 1
                frames += 1
            if seq.rows:
                end_ns = start_ns + (len(seq.rows) - 1) * period_ns
                if frames:
                    writer.add_sequence(seq.name, seq.split, start_ns, end_ns, source=f"batvision-v{version}",
                                        group=seq.group, csv=str(seq.csv), rows=len(seq.rows), frames=frames)
                start_ns = end_ns + gap_ns
        if not writer.counts:
            raise ValueError(f"{root}: no frames converted ({total} rows read)")
    for split, stats in summary.items():
        if stats["rows"] != stats["frames"] + stats["skipped"]:
            raise RuntimeError(f"internal count mismatch in split {split}: {stats}")
    return dict(summary)
