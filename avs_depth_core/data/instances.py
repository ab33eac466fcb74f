"""Instance maps and object ground truth of dynamic synthetic bags (topics.INSTANCES, topics.OBJECTS).

    frames = read_instances("bv1_dyn", stamps)        # {stamp_ns: FrameInstances}, only the stamps asked for
    frame = frames[stamp]; frame.moving_ids()          # ids of the instances that move in this frame

/camera/instances is a sensor_msgs/Image in 16UC1 (object id per pixel, 0 = none) with the image's header;
/camera/objects an avs_depth_msgs/ObjectStates (msg/msg/ObjectStates.msg) with the same stamp. Both are written by
`avs-depth simulate --dynamic` and read here with rosbags; a bag without them simply has no instance data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from avs_depth_core.data import topics
from avs_depth_core.data.bag import iter_raw, message_stamp_ns, open_bag
from avs_depth_core.data.messages import image_fields, image_to_labels

LABEL_ENCODING = "16UC1"
# Nguyen et al. (Mining Supervision for Dynamic Regions, CVPR 2024): instances under 0.5 % of the image are not objects.
DYNAMIC_MIN_FRACTION = 0.005


@dataclass(frozen=True)
class ObjectStates:
    """Per-object ground truth of one frame (the fields of ObjectStates.msg as arrays; see sim/dynamic.py)."""
    ids: np.ndarray              # (N,) uint16
    kinds: tuple[str, ...]
    motions: tuple[str, ...]
    moving: np.ndarray           # (N,) bool
    half_extents: np.ndarray     # (N, 3)
    pose: np.ndarray             # (N, 4, 4) object-to-camera
    velocity: np.ndarray         # (N, 3) world, m/s
    residual_motion: np.ndarray  # (N, 4, 4) in the camera frame of this frame
    camera_to_world: np.ndarray  # (4, 4)


@dataclass(frozen=True)
class FrameInstances:
    stamp_ns: int
    instances: np.ndarray | None  # (H, W) uint16, None if the frame's instance map is missing
    objects: ObjectStates | None

    def moving_ids(self) -> set[int]:
        if self.objects is None:
            return set()
        return {int(k) for k, m in zip(self.objects.ids, self.objects.moving, strict=True) if m}

    def describe(self, object_id: int) -> dict[str, Any]:
        """kind and motion of object `object_id` ({} if unknown)."""
        if self.objects is None:
            return {}
        hits = np.flatnonzero(self.objects.ids == object_id)
        if not hits.size:
            return {}
        j = int(hits[0])
        return {"kind": self.objects.kinds[j], "motion": self.objects.motions[j]}


def _rows(T: np.ndarray) -> np.ndarray:
    """(N, 4, 4) -> (N * 12,) top 3x4 rows, row-major."""
    return np.asarray(T, np.float64).reshape(-1, 4, 4)[:, :3, :].reshape(-1)


def _matrices(flat: Any, n: int, field: str, where: str) -> np.ndarray:
    values = np.asarray(flat, np.float64)
    if values.size != 12 * n:
        raise ValueError(f"{where}: ObjectStates.{field} holds {values.size} numbers; expected 12 per object ({12 * n})")
    out = np.tile(np.eye(4), (n, 1, 1))
    out[:, :3, :] = values.reshape(n, 3, 4)
    return out


def objects_fields(states: Any) -> dict[str, Any]:
    """Fields (without header) of an avs_depth_msgs/ObjectStates for an ObjectStates (or sim.dynamic.ObjectStates)."""
    return {"ids": np.asarray(states.ids, np.uint16), "kinds": list(states.kinds), "motions": list(states.motions),
            "moving": np.asarray(states.moving, bool), "half_extents": np.asarray(states.half_extents, np.float64).reshape(-1),
            "pose": _rows(states.pose), "residual_motion": _rows(states.residual_motion),
            "velocity": np.asarray(states.velocity, np.float64).reshape(-1),
            "camera_to_world": _rows(states.camera_to_world[None])}


def objects_from_msg(msg: Any, where: str = "objects") -> ObjectStates:
    """An ObjectStates message as arrays; inconsistent array lengths are an error naming the field."""
    ids = np.asarray(msg.ids, np.uint16)
    n = ids.size
    for field in ("kinds", "motions", "moving"):
        if len(getattr(msg, field)) != n:
            raise ValueError(f"{where}: ObjectStates.{field} has {len(getattr(msg, field))} entries for {n} ids")
    for field in ("half_extents", "velocity"):
        if len(getattr(msg, field)) != 3 * n:
            raise ValueError(f"{where}: ObjectStates.{field} has {len(getattr(msg, field))} numbers; expected 3 per object")
    return ObjectStates(ids, tuple(msg.kinds), tuple(msg.motions), np.asarray(msg.moving, bool),
                        np.asarray(msg.half_extents, np.float64).reshape(n, 3), _matrices(msg.pose, n, "pose", where),
                        np.asarray(msg.velocity, np.float64).reshape(n, 3),
                        _matrices(msg.residual_motion, n, "residual_motion", where),
                        _matrices(msg.camera_to_world, 1, "camera_to_world", where)[0])


def instance_fields(instances: np.ndarray) -> dict[str, Any]:
    if instances.ndim != 2:
        raise ValueError(f"instance map must be (H, W), got shape {instances.shape}")
    return image_fields(instances.astype(np.uint16), LABEL_ENCODING)


def has_instances(bag: str | Path) -> bool:
    """Whether the bag carries instance maps (topics.INSTANCES)."""
    with open_bag(bag, verify=False) as reader:
        return any(c.topic == topics.INSTANCES for c in reader.connections)


def read_instances(bag: str | Path, stamps: Iterable[int] | None = None) -> dict[int, FrameInstances]:
    """{stamp_ns: FrameInstances} for the frames with instance data (all of them, or only `stamps`): only the wanted
    messages are deserialised. A bag without the topics gives {}."""
    wanted = None if stamps is None else {int(s) for s in stamps}
    maps: dict[int, np.ndarray] = {}
    states: dict[int, ObjectStates] = {}
    with open_bag(bag) as reader:
        conns = [c for c in reader.connections if c.topic in (topics.INSTANCES, topics.OBJECTS)]
        for conn in conns:
            expected = topics.IMAGE_TYPE if conn.topic == topics.INSTANCES else topics.OBJECTS_TYPE
            if conn.msgtype != expected:
                raise ValueError(f"{bag}: topic {conn.topic} has type {conn.msgtype}; expected {expected}")
        if not conns:
            return {}
        for conn, raw in iter_raw(reader, conns, bag):
            where = f"{bag}:{conn.topic}"
            stamp = message_stamp_ns(reader, conn.msgtype, raw, where)
            if wanted is not None and stamp not in wanted:
                continue
            msg = reader.deserialize(raw, conn.msgtype)
            where = f"{where} stamp {stamp} ns"
            if conn.topic == topics.INSTANCES:
                maps[stamp] = image_to_labels(msg, where)
            else:
                states[stamp] = objects_from_msg(msg, where)
    return {s: FrameInstances(s, maps.get(s), states.get(s)) for s in sorted(set(maps) | set(states))}


def resize_labels(instances: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) ids -> size (int64), nearest at pixel centres (as the dataset cache resizes depth), so labels stay whole."""
    x = torch.as_tensor(np.asarray(instances, np.int64))
    if tuple(x.shape) == tuple(size):
        return x
    return F.interpolate(x[None, None].double(), size=tuple(size), mode="nearest-exact")[0, 0].long()


def dynamic_mask(instances: torch.Tensor, moving_ids: set[int], min_fraction: float = DYNAMIC_MIN_FRACTION) -> torch.Tensor:
    """(H, W) bool: the union of the moving instances that cover at least min_fraction of the image."""
    out = torch.zeros(instances.shape, dtype=torch.bool)
    for k in moving_ids:
        mask = instances == k
        if int(mask.sum()) >= min_fraction * instances.numel():
            out |= mask
    return out


class WithInstances(Dataset):
    """A bag dataset (SupervisedBagDataset, TripletBagDataset) whose items also carry the frame's (for triples: the centre
    frame's) ground-truth instances, for training on a dynamic bag's oracle masks: "instances" (H, W) int64 at the
    dataset's image size, "dynamic" (1, H, W) bool (dynamic_mask) and "has_instances". The bag's instance maps are read
    once and kept in memory at that size."""

    def __init__(self, dataset: Any, min_fraction: float = DYNAMIC_MIN_FRACTION) -> None:
        self.dataset, self.min_fraction = dataset, min_fraction
        self.size = tuple(dataset.settings.image_size)
        frames = read_instances(dataset.bag, np.asarray(dataset.cache.array("stamps")).tolist())
        if not frames:
            raise ValueError(f"{dataset.bag}: no {topics.INSTANCES}; simulate the bag with --dynamic")
        self.frames = {s: (resize_labels(f.instances, self.size).to(torch.int16 if f.instances.max() < 2**15 else
                                                                     torch.int32), f.moving_ids())
                       for s, f in frames.items() if f.instances is not None}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        found = self.frames.get(int(item["stamp_ns"]))
        if found is None:
            labels, moving = torch.zeros(self.size, dtype=torch.int64), set()
        else:
            labels, moving = found[0].long(), found[1]
        item.update({"instances": labels, "dynamic": dynamic_mask(labels, moving, self.min_fraction)[None],
                     "has_instances": found is not None})
        return item
