"""Sensors of a robot moving through the synthetic world, on a clock: what a camera driver and echo_node would deliver,
with the stamps they would give. ROS-free; sim_sensors_node and echo_node's `backend: sim` publish from it.

- Camera: a capture every 1/camera_rate s, stamped with the capture time. Frame k of the trajectory is the k-th capture
  (the world renders one frame per camera period); frames are rendered ahead in a background thread and looped after
  `loop_frames`. While a frame is not rendered yet the camera skips that capture (counted), as a real one drops frames.
- Echo: an emission every 1/chirp_rate s, stamped with the emission time, recorded from the pose of the newest camera
  frame, and released only once its whole window has been "recorded" (emission + window length), as echo_node does.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from avs_depth_ros.duplex import EchoCapture


@dataclass(frozen=True)
class CameraCapture:
    frame: Any  # avs_depth_core.sim.world.SimFrame
    index: int  # frame index along the trajectory (looped)
    stamp_ns: int


class FrameCache:
    """Renders frames 0..n-1 of one sequence in a background thread; frames are then kept and reused."""

    def __init__(self, sequence: Any, n: int, log: Any = None) -> None:
        self.sequence = sequence
        self.n = int(n)
        self._frames: dict[int, Any] = {}
        self._stop = threading.Event()
        self._log = log
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._render_all, name="sim-render", daemon=True)
        self._thread.start()

    def _render_all(self) -> None:
        try:
            for i in range(self.n):
                if self._stop.is_set():
                    return
                self._frames[i] = self.sequence.frame(i)
            if self._log is not None:
                self._log(f"rendered all {self.n} frames; looping them from now on")
        except BaseException as err:  # kept for the caller: a render error must not vanish in a thread
            self.error = err

    def get(self, i: int) -> Any | None:
        if self.error is not None:
            raise RuntimeError(f"simulated world failed to render frame {len(self._frames)}: {self.error}") from self.error
        return self._frames.get(i % self.n)

    def wait_for(self, i: int, timeout_s: float) -> Any | None:
        """Block until frame i is rendered (for start-up), up to timeout_s."""
        step = 0.05
        for _ in range(max(int(timeout_s / step), 1)):
            frame = self.get(i)
            if frame is not None or not self._thread.is_alive():
                return self.get(i)
            self._stop.wait(step)
        return self.get(i)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


class SimSensors:
    """Call step(now_ns) often (every few ms); it returns the captures and echoes due by then."""

    def __init__(self, frames: FrameCache, camera_rate: float, chirp_rate: float | None, start_ns: int,
                 echo_phase_s: float = 0.0) -> None:
        self.frames = frames
        self.camera_period_ns = int(round(1e9 / camera_rate))
        self.chirp_period_ns = int(round(1e9 / chirp_rate)) if chirp_rate else None
        self._next_capture_ns = int(start_ns)
        self._next_chirp_ns = int(start_ns + echo_phase_s * 1e9)
        self._k = 0  # captures so far = frame index along the (looped) trajectory
        self._latest_frame: Any = None
        self._pending: deque[tuple[int, EchoCapture]] = deque()  # (release time, echo)
        self.skipped_captures = 0  # frame not rendered yet when due
        self.skipped_chirps = 0  # no camera frame yet (no pose) when due

    def step(self, now_ns: int) -> tuple[list[CameraCapture], list[EchoCapture]]:
        captures: list[CameraCapture] = []
        if now_ns >= self._next_capture_ns:
            # One capture per call at most; a late call does not burst out the captures it missed.
            frame = self.frames.get(self._k)
            if frame is None:
                self.skipped_captures += 1
            else:
                captures.append(CameraCapture(frame, self._k % self.frames.n, self._next_capture_ns))
                self._latest_frame = frame
                self._k += 1
            self._next_capture_ns = _next_after(self._next_capture_ns, self.camera_period_ns, now_ns)
        if self.chirp_period_ns is not None and now_ns >= self._next_chirp_ns:
            if self._latest_frame is None:
                self.skipped_chirps += 1
            else:
                echo = self._echo(self._latest_frame, self._next_chirp_ns)
                window_ns = int((echo.samples.shape[1] - echo.emission_offset) * 1e9 / echo.sample_rate)
                self._pending.append((self._next_chirp_ns + window_ns, echo))
            self._next_chirp_ns = _next_after(self._next_chirp_ns, self.chirp_period_ns, now_ns)
        echoes = []
        while self._pending and self._pending[0][0] <= now_ns:
            echoes.append(self._pending.popleft()[1])
        return captures, echoes

    @staticmethod
    def _echo(frame: Any, emission_ns: int) -> EchoCapture:
        return EchoCapture(frame.echo, int(frame.emission_offset), int(frame.sample_rate), emission_ns, chirp=frame.chirp)

    def next_event_ns(self) -> int:
        """When step() next has something to do (for sleeping between calls)."""
        times = [self._next_capture_ns]
        if self.chirp_period_ns is not None:
            times.append(self._next_chirp_ns)
        if self._pending:
            times.append(self._pending[0][0])
        return min(times)


def _next_after(scheduled_ns: int, period_ns: int, now_ns: int) -> int:
    """The next slot on the period grid after now (skips the slots a late call missed)."""
    missed = max(0, math.floor((now_ns - scheduled_ns) / period_ns))
    return scheduled_ns + (missed + 1) * period_ns
