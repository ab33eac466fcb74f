"""The echo-frame pairing rule, shared by the bag datasets and the live depth node.

A frame is paired with the echo whose emission stamp (EchoStamped header.stamp) is nearest the image's header.stamp,
within a tolerance; on a tie the earlier echo wins; no echo within the tolerance means no pair. An echo may serve
several frames (a 30 Hz camera with a 10 Hz chirp pairs up to three frames with one echo).

Default tolerance: half the chirp period at 10 Hz = 50 ms, so every frame of a camera that runs at least as fast as
the chirp finds the chirp emitted nearest to it, and a frame is never paired with a chirp from a neighbouring period.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Sequence
from typing import Any

CHIRP_RATE_HZ = 10.0
DEFAULT_TOLERANCE_NS = int(0.5e9 / CHIRP_RATE_HZ)  # 50 ms


def nearest_stamp(target_ns: int, sorted_stamps_ns: Sequence[int], tolerance_ns: int) -> int | None:
    """Index of the stamp nearest `target_ns` within `tolerance_ns` (inclusive); on a tie the earlier one; else None."""
    if tolerance_ns < 0:
        raise ValueError(f"pairing tolerance must be >= 0 ns, got {tolerance_ns}")
    i = bisect_left(sorted_stamps_ns, target_ns)
    best = None
    # The candidates are the last stamp before the target and the first at or after it; the earlier is tried first
    # so it wins a tie.
    for j in (i - 1, i):
        if 0 <= j < len(sorted_stamps_ns):
            gap = abs(int(sorted_stamps_ns[j]) - int(target_ns))
            if gap <= tolerance_ns and (best is None or gap < best[1]):
                best = (j, gap)
    return None if best is None else best[0]


def pair_echo_with_frame(image_stamp_ns: int, echo_stamps_ns: Sequence[int], tolerance_ns: int = DEFAULT_TOLERANCE_NS
                         ) -> int | None:
    """Index into `echo_stamps_ns` (sorted emission stamps) of the echo paired with the image, or None."""
    return nearest_stamp(image_stamp_ns, echo_stamps_ns, tolerance_ns)


class EchoBuffer:
    """ROS-free echo store for the live node: push echoes as they arrive, match each image as it arrives.

    Bounded by count and by age: at most `max_items` echoes, sorted by stamp (late arrivals are inserted in order), and
    with `max_age_ns` none older than that behind the newest echo pushed or the clock given to `prune` (an echo that old
    can only pair with an image too stale to process). A match drops the echoes too old to pair with that image or any
    later one (older than image stamp - tolerance), so images are assumed to arrive in stamp order. So the store stays
    small whether or not images come: no subscriber, a camera that is down, rejected images.
    """

    def __init__(self, tolerance_ns: int = DEFAULT_TOLERANCE_NS, max_items: int = 16, max_age_ns: int | None = None) -> None:
        if tolerance_ns < 0 or max_items < 1 or (max_age_ns is not None and max_age_ns < 0):
            raise ValueError(f"EchoBuffer needs tolerance_ns >= 0, max_items >= 1 and max_age_ns >= 0, got {tolerance_ns}, "
                             f"{max_items}, {max_age_ns}")
        self.tolerance_ns = int(tolerance_ns)
        self.max_items = int(max_items)
        self.max_age_ns = None if max_age_ns is None else int(max_age_ns)
        self._stamps: list[int] = []
        self._items: dict[int, Any] = {}
        self.evicted = 0  # echoes pushed out because the buffer was full (images too slow or stamps too far apart)
        self.expired = 0  # echoes dropped for age before any image could use them

    def __len__(self) -> int:
        return len(self._stamps)

    def push(self, stamp_ns: int, item: Any) -> None:
        """Store an echo by its emission stamp; a second echo with the same stamp replaces the first."""
        stamp_ns = int(stamp_ns)
        if stamp_ns not in self._items:
            insort(self._stamps, stamp_ns)
        self._items[stamp_ns] = item
        while len(self._stamps) > self.max_items:
            del self._items[self._stamps.pop(0)]
            self.evicted += 1
        self.prune(self._stamps[-1])

    def prune(self, now_ns: int) -> None:
        """Drop the echoes older than max_age_ns before `now_ns` (the newest stamp, or the node's clock)."""
        if self.max_age_ns is None:
            return
        cutoff = bisect_left(self._stamps, int(now_ns) - self.max_age_ns)
        for stamp in self._stamps[:cutoff]:
            del self._items[stamp]
        del self._stamps[:cutoff]
        self.expired += cutoff

    def match(self, image_stamp_ns: int) -> tuple[Any, int] | None:
        """(echo, its stamp) paired with the image by `pair_echo_with_frame`, or None."""
        image_stamp_ns = int(image_stamp_ns)
        j = pair_echo_with_frame(image_stamp_ns, self._stamps, self.tolerance_ns)
        found = None if j is None else (self._items[self._stamps[j]], self._stamps[j])
        cutoff = bisect_left(self._stamps, image_stamp_ns - self.tolerance_ns)
        for stamp in self._stamps[:cutoff]:
            del self._items[stamp]
        del self._stamps[:cutoff]
        return found
