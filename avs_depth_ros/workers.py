"""Threads that keep slow or frequent work out of the rclpy executor.

Why: an rclpy executor callback runs Python while holding the GIL, and the MultiThreadedExecutor re-offers callbacks it
has queued but not yet started, so it spins while a long callback runs. With the sensors polled by a timer and inference
in an executor callback, `avs-depth-ros bringup --sim` fell well below the camera's rate; with the work here it keeps up
(figures: README, Threads; benchmarks/node_latency.py). ROS callbacks only store and signal.

- DriverThread: a sensor driver's loop (sim_sensors_node, echo_node), sleeping until its next event.
- LatestFrameWorker: depth_node's inference on the newest frame; a frame replaced before it is taken is dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
MIN_SLEEP_S = 0.0005
MAX_SLEEP_S = 0.05  # wake at least this often, so stop() and clock changes take effect quickly


class DriverThread:
    """Calls step() until stopped; step() does the work due now and returns the seconds until it next has work.

    An exception in step() ends the loop: it is passed to on_error (the nodes log it and shut their context down, so the
    process ends with the message rather than publishing nothing in silence) and kept in `error`, unless on_error
    returns False (the node was already shutting down: a publish that lost the race with Ctrl-C is not an error).
    """

    def __init__(self, name: str, step: Callable[[], float], on_error: Callable[[BaseException], bool | None]) -> None:
        self._step = step
        self._on_error = on_error
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                wait_s = self._step()
            except BaseException as err:  # reported through on_error, never lost in the thread
                if self._on_error(err) is not False:  # False: the node was shutting down, not an error
                    self.error = err
                return
            self._stop.wait(min(max(wait_s, MIN_SLEEP_S), MAX_SLEEP_S))

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=timeout_s)


class LatestSlot(Generic[T]):
    """Keep-last-1 hand-over from a producer to one consumer, never a queue.

    put() stores the item and says whether it replaced one not yet taken (a dropped frame) and whether the consumer must
    be woken (it was idle: nothing pending, nothing in progress). The consumer calls take() until it returns None, which
    marks it idle again (LatestFrameWorker's hand-over).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._item: T | None = None
        self._busy = False

    def put(self, item: T) -> tuple[bool, bool]:
        with self._lock:
            replaced, wake = self._item is not None, not self._busy
            self._item, self._busy = item, True
        return replaced, wake

    def take(self) -> T | None:
        with self._lock:
            item, self._item = self._item, None
            if item is None:
                self._busy = False
        return item

    def clear(self) -> None:
        """Drop the pending item and mark the consumer idle (it stopped)."""
        with self._lock:
            self._item, self._busy = None, False

    @property
    def busy(self) -> bool:
        """An item pending or in progress."""
        with self._lock:
            return self._busy


class LatestFrameWorker(Generic[T]):
    """Runs process(item) in its own thread on the newest submitted item (a LatestSlot).

    submit() returns True when it replaced an item the worker had not taken yet (a dropped frame). An exception in
    process() ends the worker as DriverThread's does (kept in `error`, passed to on_error).
    """

    def __init__(self, name: str, process: Callable[[T], None], on_error: Callable[[BaseException], bool | None]) -> None:
        self._process = process
        self._on_error = on_error
        self._slot: LatestSlot[T] = LatestSlot()
        self._wake = threading.Event()
        self._stopped = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> bool:
        replaced, wake = self._slot.put(item)
        if wake:
            self._wake.set()
        return replaced

    @property
    def busy(self) -> bool:
        """Processing an item, or holding one not yet taken."""
        return self._slot.busy

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while not self._stopped and (item := self._slot.take()) is not None:
                try:
                    self._process(item)
                except BaseException as err:  # reported through on_error, never lost in the thread
                    self._slot.clear()
                    if self._on_error(err) is not False:  # False: the node was shutting down, not an error
                        self.error = err
                    return
            if self._stopped:
                return

    def stop(self, timeout_s: float = 10.0) -> None:
        """Finish the item in progress (if any), drop the pending one, end the thread."""
        self._stopped = True
        self._slot.clear()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=timeout_s)
