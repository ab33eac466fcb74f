"""PyTorch datasets over rosbag2 recordings: supervised samples (AVS-Net) and frame triples (Monodepth2).

Both read the bag once into a cache (cache.py) and then serve items from memory maps, so later epochs and runs do not
touch the bag; both work with DataLoader(num_workers=0..n). Frames are paired with echoes by pairing.py, the rule the
live node uses, and the echo input is avs_depth_core.audio.echo_features, the path the live node uses. Frames left out
(no paired echo, no depth, outside every sequence, bad messages skipped on request) are counted in `report` and
printed when the dataset is built.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from avs_depth_core.audio.features import StftSettings, echo_features
from avs_depth_core.data import topics
from avs_depth_core.data.cache import NATIVE, NO_SPLIT, CacheSettings, FrameCache, load_or_build
from avs_depth_core.data.pairing import DEFAULT_TOLERANCE_NS
from avs_depth_core.data.splits import ALL, DEFAULT_FRACTIONS, DEFAULT_GAP_NS, check_split, in_split

# Monodepth2 trains on triples of consecutive frames; AVS-Net's self-supervised stage takes its neighbours 20 frames
# apart (paper, experiments section).
DEFAULT_TRIPLE_INTERVAL = 20
DEFAULT_STFT = StftSettings()  # BatVision's n_fft 512, win 64, hop 16 (audio/features.py)


class ModelInput(Protocol):
    """What a model's config says about its input (AVSNetConfig has these): sizes, depth range, echo STFT settings."""

    image_size: tuple[int, int]
    max_depth: float
    echo_size: tuple[int, int] | None
    stft: StftSettings
    speed_of_sound: float
    sample_rate: int


class _BagDataset(Dataset):
    """Shared part: build or load the cache, select a split, read echo inputs, report exclusions."""

    def __init__(self, bag: str | Path, split: str, settings: CacheSettings, cache_dir: str | Path | None,
                 progress: bool) -> None:
        self.bag = Path(bag)
        self.split = split
        self.settings = settings
        self.cache: FrameCache = load_or_build(self.bag, settings, cache_dir, progress)

    def _split_mask(self) -> np.ndarray:
        sequence = self.cache.array("sequence")
        return np.array([in_split(self.split, self.cache.sequences[int(k)]) for k in sequence], dtype=bool)

    def _check_split(self, usable: np.ndarray) -> None:
        """Errors for an unknown or empty split, naming the bag and its splits with their usable counts."""
        counts = {q.split: 0 for q in self.cache.sequences}
        for k in self.cache.array("sequence")[usable]:
            counts[self.cache.sequences[int(k)].split] += 1
        try:
            check_split(self.split, counts, self.bag)
        except ValueError as err:
            excluded = self.report
            raise ValueError(f"{err}{'; excluded: ' + _format_counts(excluded) if excluded else ''}") from None

    @property
    def report(self) -> dict[str, int]:
        """Frames excluded (or kept without echo/depth) in the selected split, by reason, as counted in the cache build."""
        out: dict[str, int] = {}
        for split, reasons in self.cache.meta["report"].items():
            if split == NO_SPLIT or self.split == ALL or split == self.split:
                for reason, n in reasons.items():
                    out[reason] = out.get(reason, 0) + n
        return out

    def summary(self) -> str:
        derived = " (sequences derived from stamp gaps)" if self.cache.meta["sequences_derived"] else ""
        text = f"{self.bag} [{self.split}]: {len(self)} {type(self).__name__} items{derived}"
        if self.report:
            text += "; " + _format_counts(self.report)
        if self.cache.meta["examples"]:
            text += "\n  " + "\n  ".join(self.cache.meta["examples"])
        return text

    def _echo(self, slot: int) -> torch.Tensor:
        s = self.settings
        stored = np.array(self.cache.array("echo")[slot])
        if s.echo_store == "features":
            return torch.from_numpy(stored)
        # The cached window starts at emission, so the same shared path runs with emission_offset 0.
        return echo_features(stored, s.sample_rate, expected_rate=s.sample_rate, max_depth=s.max_depth, size=s.echo_size,
                             emission_offset=0, speed_of_sound=s.speed_of_sound, settings=s.stft)

    def _rgb(self, slot: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.cache.array("rgb")[slot])).float().div_(255.0)

    def _K(self, slot: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.cache.array("K")[slot]))

    def _depth(self, slot: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.cache.array("depth")[slot]))

    @property
    def depth_size(self) -> tuple[int, int] | None:
        """(H, W) of the items' "depth" (the recorded size for depth_size="native"), or None if the bag has no depth."""
        return tuple(int(n) for n in self.cache.array("depth").shape[-2:]) if self.cache.has("depth") else None


def _format_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in counts.items())


def _settings(*, image_size: tuple[int, int], keep: str, max_depth: float, echo_size: tuple[int, int] | None,
              stft: StftSettings, speed_of_sound: float, sample_rate: int, tolerance_s: float, depth_tolerance_s: float,
              cache_features: bool, need_intrinsics: bool, skip_bad: bool, sequence_gap_s: float,
              split_fractions: Mapping[str, float], depth_size: tuple[int, int] | str | None, split: str) -> CacheSettings:
    if depth_size is not None and not isinstance(depth_size, str):
        depth_size = tuple(depth_size)
    return CacheSettings(
        image_size=tuple(image_size), keep=keep, max_depth=float(max_depth),
        echo_size=tuple(echo_size if echo_size is not None else image_size), stft=stft,
        speed_of_sound=float(speed_of_sound), sample_rate=int(sample_rate), tolerance_ns=round(tolerance_s * 1e9),
        depth_tolerance_ns=round(depth_tolerance_s * 1e9), echo_store="features" if cache_features else "window",
        need_intrinsics=need_intrinsics, skip_bad=skip_bad, sequence_gap_ns=round(sequence_gap_s * 1e9),
        split_fractions=tuple((k, float(v)) for k, v in split_fractions.items()), depth_size=depth_size,
        # Native ground truth is large: cache only the split asked for. Network-size caches hold every split, so the
        # train and val datasets of a run share one.
        split=split if depth_size == NATIVE and split != ALL else None)


class SupervisedBagDataset(_BagDataset):
    """AVS-Net samples: one frame with its paired echo and registered depth.

    item = {"rgb": (3, H, W) float32 in [0, 1], "echo": (C, He, We) float32 echo_features, "depth": (1, Hd, Wd) float32
    metres with 0 where invalid (NaN, inf, <= 0, >= max_depth), "K": (3, 3) float32 for (H, W) (NaN without CameraInfo
    unless need_intrinsics), "stamp_ns": int}.
    image_size 256x512 and the echo STFT resized to the image resolution follow the AVS-Net paper; max_depth 30 m and
    speed of sound 340 m/s follow BatVision V2's loader (AmandineBtto/Batvision-Dataset). RGB is resized bilinearly with
    antialias and rounded to uint8 in the cache; depth by nearest neighbour to (Hd, Wd) = image_size (training), or to
    depth_size=(H, W), or not at all with depth_size="native" (evaluation at the ground truth's resolution: every depth
    map of the bag must then have one size, so items batch; only the selected split is cached).
    cache_features=False caches the echo window (samples) instead of the STFT and computes the features per item.
    """

    def __init__(self, bag: str | Path, split: str = "train", image_size: tuple[int, int] = (256, 512),
                 max_depth: float = 30.0, echo_size: tuple[int, int] | None = None, stft: StftSettings = DEFAULT_STFT,
                 speed_of_sound: float = 340.0, sample_rate: int = 44_100, tolerance_s: float = DEFAULT_TOLERANCE_NS / 1e9,
                 cache_dir: str | Path | None = None, *, depth_tolerance_s: float = 0.001, cache_features: bool = True,
                 need_intrinsics: bool = False, skip_bad: bool = False, sequence_gap_s: float = DEFAULT_GAP_NS / 1e9,
                 split_fractions: Mapping[str, float] = DEFAULT_FRACTIONS, progress: bool = True,
                 verbose: bool = True, depth_size: tuple[int, int] | str | None = None) -> None:
        settings = _settings(image_size=image_size, keep="paired", max_depth=max_depth, echo_size=echo_size, stft=stft,
                             speed_of_sound=speed_of_sound, sample_rate=sample_rate, tolerance_s=tolerance_s,
                             depth_tolerance_s=depth_tolerance_s, cache_features=cache_features,
                             need_intrinsics=need_intrinsics, skip_bad=skip_bad, sequence_gap_s=sequence_gap_s,
                             split_fractions=split_fractions, depth_size=depth_size, split=split)
        super().__init__(bag, split, settings, cache_dir, progress)
        usable = np.array(self.cache.array("valid"), dtype=bool)
        self._check_split(usable)
        self.slots = np.flatnonzero(usable & self._split_mask())
        if verbose:
            print(self.summary(), file=sys.stderr)

    @classmethod
    def for_model(cls, bag: str | Path, split: str, cfg: ModelInput, **options: Any) -> SupervisedBagDataset:
        """The dataset that feeds a model configured by `cfg` (image and echo sizes, depth range, STFT, sample rate and
        speed of sound); `options` are further constructor arguments and may override those (e.g. max_depth)."""
        inputs = {"image_size": cfg.image_size, "max_depth": cfg.max_depth, "echo_size": cfg.echo_size, "stft": cfg.stft,
                  "speed_of_sound": cfg.speed_of_sound, "sample_rate": cfg.sample_rate}
        return cls(bag, split, **{**inputs, **options})

    def __len__(self) -> int:
        return len(self.slots)

    def echo_window(self, index: int) -> tuple[np.ndarray, int]:
        """Item `index`'s raw echo window from emission on (channels, n) float32 and its stamp_ns; needs a window cache
        (cache_features=False): signal processing on the samples themselves (the echo range baseline)."""
        if self.settings.echo_store != "window":
            raise ValueError(f"{self.bag}: this dataset caches echo features; build it with cache_features=False to read "
                             "the echo windows")
        slot = int(self.slots[index])
        return np.array(self.cache.array("echo")[slot]), int(self.cache.array("stamps")[slot])

    def __getitem__(self, index: int) -> dict[str, Any]:
        slot = int(self.slots[index])
        return {"rgb": self._rgb(slot), "echo": self._echo(slot), "depth": self._depth(slot), "K": self._K(slot),
                "stamp_ns": int(self.cache.array("stamps")[slot])}


class TripletBagDataset(_BagDataset):
    """Monodepth2 frame triples (t - interval, t, t + interval), never across a sequence (hence never across a split).

    item = {"rgb": (3, 3, H, W) float32 in [0, 1] ordered (t - interval, t, t + interval), "K": (3, 3) float32 of the
    centre frame for (H, W), "stamp_ns": centre stamp; plus, when the bag has them, "depth" (1, Hd, Wd) (depth_size as
    in SupervisedBagDataset) and "has_depth" of the centre frame (for evaluation) and "echo" (C, He, We) and "has_echo"
    (for scale evaluation; zeros when the centre frame has no paired echo)}. With neighbour_echoes (echo-supervised
    training), also "echo_triple" (3, C, He, We) and "has_echo_triple" (3,) bool: every frame's echo, in the triple's
    order, and "slot_triple" (3,) int64, the frames' indices in the bag's cache (they key the teacher's depth cache); the bag
    must then have echoes. With need_imu (Monodepth2's model.pose_prior imu), also "imu_rotation"
    (3, 3, 3): each frame's camera-to-world attitude from topics.IMU, in the triple's order; the bag must have that topic
    in the camera's frame, and triples with a frame without an IMU message are left out (counted). The interval counts
    image frames within the sequence; 20 as in the AVS-Net paper, 192x640 as Monodepth2's default input. Triples always
    need CameraInfo.
    """

    def __init__(self, bag: str | Path, split: str = "train", image_size: tuple[int, int] = (192, 640),
                 interval: int = DEFAULT_TRIPLE_INTERVAL, max_depth: float = 30.0, echo_size: tuple[int, int] | None = None,
                 stft: StftSettings = DEFAULT_STFT, speed_of_sound: float = 340.0, sample_rate: int = 44_100,
                 tolerance_s: float = DEFAULT_TOLERANCE_NS / 1e9, cache_dir: str | Path | None = None, *,
                 depth_tolerance_s: float = 0.001, cache_features: bool = True, skip_bad: bool = False,
                 sequence_gap_s: float = DEFAULT_GAP_NS / 1e9, split_fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
                 progress: bool = True, verbose: bool = True, depth_size: tuple[int, int] | str | None = None,
                 neighbour_echoes: bool = False, need_imu: bool = False) -> None:
        if interval < 1:
            raise ValueError(f"triple interval must be >= 1 frame, got {interval}")
        settings = _settings(image_size=image_size, keep="all", max_depth=max_depth, echo_size=echo_size, stft=stft,
                             speed_of_sound=speed_of_sound, sample_rate=sample_rate, tolerance_s=tolerance_s,
                             depth_tolerance_s=depth_tolerance_s, cache_features=cache_features, need_intrinsics=True,
                             skip_bad=skip_bad, sequence_gap_s=sequence_gap_s, split_fractions=split_fractions,
                             depth_size=depth_size, split=split)
        super().__init__(bag, split, settings, cache_dir, progress)
        if neighbour_echoes and not self.cache.has("echo"):
            raise ValueError(f"{self.bag}: the bag has no echoes, which echo-supervised training needs")
        self.neighbour_echoes, self.need_imu = neighbour_echoes, need_imu
        self.interval = int(interval)
        valid = np.array(self.cache.array("valid"), dtype=bool)
        if need_imu:
            self._check_imu()
            valid &= np.array(self.cache.array("has_imu"), dtype=bool)
        sequence = np.array(self.cache.array("sequence"))
        triples, centres = [], np.zeros(len(valid), dtype=bool)
        near_end = f"frames within {self.interval} frames of a sequence end (no triple)"
        self._triple_report = {near_end: 0, "triples with a skipped frame" + (" or no IMU" if need_imu else ""): 0}
        for k, seq in enumerate(self.cache.sequences):
            if not in_split(split, seq):
                continue
            frames = np.flatnonzero(sequence == k)
            self._triple_report[near_end] += min(len(frames), 2 * self.interval)
            for p in range(self.interval, len(frames) - self.interval):
                triple = frames[[p - self.interval, p, p + self.interval]]
                if valid[triple].all():
                    triples.append(triple)
                    centres[triple[1]] = True
                else:
                    self._triple_report["triples with a skipped frame" + (" or no IMU" if need_imu else "")] += 1
        # Usable centres per split (computed over all sequences) for the unknown/empty split message.
        all_centres = np.zeros(len(valid), dtype=bool)
        for k in range(len(self.cache.sequences)):
            frames = np.flatnonzero(sequence == k)
            inner = frames[self.interval:len(frames) - self.interval]
            all_centres[inner] = valid[inner]
        self._check_split(all_centres)
        self.triples = np.array(triples, dtype=np.int64).reshape(-1, 3)
        if verbose:
            print(self.summary(), file=sys.stderr)

    @property
    def report(self) -> dict[str, int]:
        out = super().report
        for reason, n in getattr(self, "_triple_report", {}).items():
            if n:
                out[reason] = n
        return out

    def __len__(self) -> int:
        return len(self.triples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        before, centre, after = (int(i) for i in self.triples[index])
        item: dict[str, Any] = {"rgb": torch.stack([self._rgb(before), self._rgb(centre), self._rgb(after)]),
                                "K": self._K(centre), "stamp_ns": int(self.cache.array("stamps")[centre])}
        if self.cache.has("depth"):
            has = bool(self.cache.array("has_depth")[centre])
            item["depth"] = self._depth(centre) if has else torch.zeros(1, *self.depth_size)
            item["has_depth"] = has
        if self.cache.has("echo"):
            has = bool(self.cache.array("has_echo")[centre])
            item["echo"] = self._echo_or_zeros(centre, has)
            item["has_echo"] = has
        if self.neighbour_echoes:
            slots = (before, centre, after)
            has_each = [bool(self.cache.array("has_echo")[i]) for i in slots]
            item["echo_triple"] = torch.stack([self._echo_or_zeros(i, h) for i, h in zip(slots, has_each, strict=True)])
            item["has_echo_triple"] = torch.tensor(has_each)
            item["slot_triple"] = torch.tensor(slots, dtype=torch.int64)
        if self.need_imu:
            item["imu_rotation"] = torch.from_numpy(np.array(self.cache.array("imu_rotation")[[before, centre, after]]))
        return item

    def _check_imu(self) -> None:
        meta = self.cache.meta
        if not self.cache.has("imu_rotation"):
            raise ValueError(f"{self.bag}: no {topics.IMU} topic (sensor_msgs/Imu with orientation), which "
                             f"model.pose_prior imu needs; record one (`avs-depth simulate --imu`) or set pose_prior none")
        imu, image = meta.get("imu_frame_ids", []), meta.get("image_frame_ids", [])
        if imu != image:
            raise ValueError(f"{self.bag}: {topics.IMU} is in frame {imu} but the images in {image}; model.pose_prior imu "
                             f"needs the attitude in the camera's optical frame (rotate it by the camera-IMU extrinsics)")

    def _echo_or_zeros(self, slot: int, has: bool) -> torch.Tensor:
        return self._echo(slot) if has else torch.zeros(self.cache.meta["echo_channels"], *self.settings.echo_size)
