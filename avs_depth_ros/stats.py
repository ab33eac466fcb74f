"""Rates, latencies and throttled reports for the nodes' diagnostics and logs. ROS-free."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from typing import Any


class RateMeter:
    """Events per second over the last `window_s` seconds (by the caller's clock, ns)."""

    def __init__(self, window_s: float = 5.0, max_events: int = 10_000) -> None:
        self.window_ns = int(window_s * 1e9)
        self._times: deque[int] = deque(maxlen=max_events)  # bounded by count too: a flood cannot grow it
        self.count = 0

    def tick(self, now_ns: int) -> None:
        self._times.append(int(now_ns))
        self.count += 1
        self._trim(now_ns)

    def rate(self, now_ns: int) -> float:
        self._trim(now_ns)
        if len(self._times) < 2:
            return 0.0
        span = max(now_ns - self._times[0], self._times[-1] - self._times[0])
        return (len(self._times) - 1) / (span / 1e9) if span > 0 else 0.0

    def _trim(self, now_ns: int) -> None:
        while self._times and self._times[0] < now_ns - self.window_ns:
            self._times.popleft()


class Summary:
    """Count, mean and max of a series since the last reset (latencies, forward times)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.total = 0.0
        self.max = -math.inf

    def add(self, value: float) -> None:
        self.n += 1
        self.total += value
        self.max = max(self.max, value)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan


# One call site per severity. rclpy keys a logger's state by the line that calls it and raises "Logger severity cannot
# be changed between calls" when one line logs at two severities, as a shared helper calling logger.error for one
# reporter and logger.warning for another would (it stopped bringup's executor once).
_LOG_AT: dict[str, Callable[[Any, str], None]] = {
    "debug": lambda logger, text: logger.debug(text),
    "info": lambda logger, text: logger.info(text),
    "warning": lambda logger, text: logger.warning(text),
    "warn": lambda logger, text: logger.warning(text),
    "error": lambda logger, text: logger.error(text),
    "fatal": lambda logger, text: logger.fatal(text),
}


def log_at(logger: Any, severity: str) -> Callable[[str], None]:
    """A function that logs text on an rclpy logger at one severity, from a call site of its own."""
    if severity not in _LOG_AT:
        raise ValueError(f"severity must be one of {sorted(_LOG_AT)}, got {severity!r}")
    emit = _LOG_AT[severity]
    return lambda text: emit(logger, text)


class ThrottledReporter:
    """Reports each kind of problem at most once per `period_s`, saying how many were suppressed since.

    A node that rejects input at 30 Hz must keep its log readable and still say that every frame is rejected.
    emit: a function of the text, or a bound rclpy logger method (logger.warning, logger.error), which is then called
    through log_at so that reporters of different severities on one logger never share a call site.
    """

    def __init__(self, emit: Callable[[str], None], period_s: float = 5.0, clock_ns: Callable[[], int] | None = None
                 ) -> None:
        import time

        owner, name = getattr(emit, "__self__", None), getattr(emit, "__name__", "")
        if owner is not None and hasattr(owner, "contexts") and name in _LOG_AT:  # an rclpy RcutilsLogger method
            emit = log_at(owner, name)
        self._emit = emit
        self._period_ns = int(period_s * 1e9)
        self._clock_ns = clock_ns or time.monotonic_ns
        self._last: dict[str, int] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, key: str, text: str) -> bool:
        now = self._clock_ns()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._period_ns:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        self._emit(text + (f" ({suppressed} more since the last report)" if suppressed else ""))
        return True
