"""Where an emission sits in time, on a full-duplex stream whose host API reports wrong times. ROS-free.

Measured on PulseAudio through ALSA's pulse plugin:
- the stream starts with a burst of callbacks carrying silence (input underflow), then stalls for up to 1.5 s;
- PortAudio's inputBufferAdcTime / outputBufferDacTime are off by up to 1.8 s in the first second, and afterwards
  DAC - ADC stayed 500 samples (11 ms) away from the measured loop delay for a whole run;
- the loop delay itself is constant within one stream start and differs between starts (515 to 1529 samples).
So neither the clock base nor the loop delay is taken from the host API's times:

- SampleClock maps input sample indices to the system clock from when callbacks arrive. A callback never runs before
  its last sample was captured, so `now - (pos + frames) / fs` bounds the capture time of sample 0 from above; the
  lower envelope of that bound over the recent callbacks (a line: the two clocks drift apart) is late only by the
  shortest capture-to-callback delay (0.1-0.5 ms measured on PulseAudio). The host API's capture times
  (currentTime - inputBufferAdcTime) are used instead where they pass the physical checks: consistent over the last
  second (spread under 0.5 ms), not after the bound, and not more than `max_capture_lag_s` before it (on PulseAudio
  they failed the last check by 0.2 s in the first 1.5 s of a stream). The history restarts at every xrun or timeline
  break (a segment), and nothing is stamped until a segment has `settle_s` of undisturbed callbacks.
- LoopDelay locks the output-to-input delay (samples) from the direct path of the chirps (ChirpSchedule's probe pair);
  a lone outlier does not move it, `needed` consecutive ones agreeing on another value do (counted as a relock).
- ChirpSchedule says which output samples carry chirps: the probe pair first, then one chirp per period.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class SampleClock:
    """Input sample index -> system time (ns). add() from the audio callback; the rest from any thread."""

    def __init__(self, sample_rate: int, settle_s: float = 0.5, window_s: float = 10.0, step_ms: float = 2.0,
                 max_capture_lag_s: float = 0.05) -> None:
        self.fs = int(sample_rate)
        self.max_lag_ns = max_capture_lag_s * 1e9
        self._host: deque[tuple[int, float]] = deque()  # (input index after the block, host API's time of sample 0)
        self.source = ""  # what the last estimate came from: host_times or callback_bound
        self.settle = int(settle_s * self.fs)
        self.window = int(window_s * self.fs)
        self.step_ns = step_ms * 1e6
        self._bounds: deque[tuple[int, float]] = deque()  # (input index after the block, bound on sample 0's time)
        self._min = float("inf")
        self._lock = threading.Lock()
        self.segment = 0  # increases at every break; stamps never mix segments
        self.segment_start = 0  # first input index of the current segment
        self.breaks = 0  # segments begun by a timeline break (samples appearing earlier than possible)

    def reset(self, pos: int) -> None:
        """A new segment from input index `pos` on (an xrun: samples before it may not share the timeline)."""
        with self._lock:
            self._reset(pos)

    def _reset(self, pos: int) -> None:
        self._bounds.clear()
        self._host.clear()
        self._min = float("inf")
        self.segment += 1
        self.segment_start = pos

    def add(self, now_ns: int, pos: int, frames: int, capture_age_s: float | None = None) -> None:
        """One callback: its system time, first input index and length, and (if the host API gives it) how long ago
        its first sample was captured (currentTime - inputBufferAdcTime)."""
        end = pos + frames
        bound = now_ns - end * 1e9 / self.fs
        with self._lock:
            if capture_age_s is not None:
                self._host.append((end, now_ns - capture_age_s * 1e9 - pos * 1e9 / self.fs))
                while self._host[0][0] < end - self.fs:  # the last second
                    self._host.popleft()
            settled = self._settled(end)
            if settled and bound < self._min - self.step_ns:
                # Samples arrived earlier than any before them could: silence was inserted, or the clock stepped.
                self._reset(pos)
                self.breaks += 1
            self._bounds.append((end, bound))
            self._min = min(self._min, bound)
            if self._bounds[0][0] < end - self.window:
                while self._bounds and self._bounds[0][0] < end - self.window:
                    self._bounds.popleft()
                self._min = min(b for _, b in self._bounds)

    def _settled(self, end: int) -> bool:
        return bool(self._bounds) and end - self.segment_start >= self.settle

    @property
    def settled(self) -> bool:
        with self._lock:
            return bool(self._bounds) and self._settled(self._bounds[-1][0])

    def _bound_line(self) -> tuple[float, float]:
        """(a, b): the lower envelope of the bounds as bound(index) = a + b * index. The sample clock and the system
        clock drift apart (PulseAudio's null sink ran 430 ppm fast against the system clock here; sound cards run tens
        of ppm off), so a line is fitted to the minima of half-second bins and lowered onto the lowest of them. Under
        2 s of history: the plain minimum (a flat line)."""
        step = self.fs // 2
        bins: dict[int, tuple[int, float]] = {}
        for end, bound in self._bounds:
            key = end // step
            if key not in bins or bound < bins[key][1]:
                bins[key] = (end, bound)
        if len(bins) < 4:
            return self._min, 0.0
        x, y = (np.array(v, dtype=np.float64) for v in zip(*bins.values(), strict=True))
        # Theil-Sen: the median of the pairwise slopes ignores a few late bins (a burst of load); clamped to +-1000 ppm,
        # beyond any sound card or PulseAudio sink
        i, j = np.triu_indices(len(x), 1)
        b = float(np.median((y[j] - y[i]) / (x[j] - x[i])))
        limit = 1e-3 * 1e9 / self.fs
        b = min(max(b, -limit), limit)
        a = float(np.min(y - b * x))  # onto the lowest bin minimum: still a bound
        return a, b

    def base_ns(self, index: int | None = None) -> float | None:
        """Estimated system time of input sample 0, as seen from input sample `index` (default: the newest), in the
        current segment; None before its first callback.

        A lasting rise of the bounds is not taken for lost samples: PulseAudio raises a stream's latency under load, and
        callbacks then come later for good while the samples keep their capture times (measured: segments broken every
        second at CPU load 10 when it was)."""
        with self._lock:
            if not self._bounds:
                return None
            a, b = self._bound_line()
            newest = self._bounds[-1][0]
            bound = a + b * (newest if index is None else index)
            host = self._host_estimate(a + b * newest)
            self.source = "callback_bound" if host is None else "host_times"
            return bound if host is None else min(host, bound)

    def _host_estimate(self, bound: float) -> float | None:
        """The host API's base where it passes the checks against the callbacks' bound (module doc), else None."""
        if len(self._host) < 10:
            return None
        values = np.array([b for _, b in self._host])
        lo, median, hi = np.percentile(values, [10, 50, 90])
        if hi - lo > 0.5e6 or median > bound + 0.25e6 or median < bound - self.max_lag_ns:
            return None
        return float(median)

    def time_ns(self, index: int, segment: int | None = None) -> int | None:
        """System time of input sample `index`; None when `segment` is given and is no longer the current one (an xrun
        came in between) or the segment has no callback yet."""
        base = self.base_ns(index)
        if base is None or (segment is not None and segment != self.segment):
            return None
        return int(round(base + index * 1e9 / self.fs))


class LoopDelay:
    """The output -> input delay in samples, locked from repeated direct-path measurements."""

    def __init__(self, tolerance: int, needed: int = 3) -> None:
        self.tolerance = max(int(tolerance), 1)
        self.needed = max(int(needed), 1)
        self.value: int | None = None
        self._recent: deque[int] = deque(maxlen=self.needed)
        self.relocks = 0
        self.outliers = 0  # measurements away from the lock (consecutive agreeing ones relock)

    def reset(self) -> None:
        self.value = None
        self._recent.clear()

    def lock(self, value: int) -> None:
        """Lock to a value measured another way (the probe pair)."""
        self.value = int(value)
        self._recent.clear()

    def _agreeing(self) -> int | None:
        if len(self._recent) == self.needed and max(self._recent) - min(self._recent) <= self.tolerance:
            return sorted(self._recent)[self.needed // 2]
        return None

    def add(self, measured: int) -> bool:
        """Add a measurement; True when it agrees with the lock in effect after it."""
        if self.value is not None and abs(measured - self.value) <= self.tolerance:
            self._recent.clear()
            return True
        self._recent.append(int(measured))
        agreed = self._agreeing()
        if self.value is None:
            if agreed is not None:
                self.value = agreed
                self._recent.clear()
            return agreed is not None
        self.outliers += 1
        if agreed is not None:
            self.value = agreed
            self.relocks += 1
            self._recent.clear()
            return True
        return False


class ChirpSchedule:
    """Output sample indices of the chirps of one stream.

    A schedule started with probing puts a probe pair first: chirp 0 after at least `gap` samples of silence and chirp 1
    `gap` after it, then one chirp every `period` from 2 * gap on. The first direct path heard after chirp 0 can then
    only be chirp 0's, for any loop delay up to `gap` (longer than the chirp period: a room in the loop, a Bluetooth
    speaker), and chirp 1 confirms it. Without probing, one chirp every `period` from the start. Each (re)start gets a
    new id, so emissions of an abandoned schedule are recognised.
    """

    def __init__(self, period: int, gap: int) -> None:
        self.period, self.gap = int(period), int(max(gap, period))
        self.id = 0
        self.start: int | None = None
        self.probing = True

    def restart(self, start: int | None, probing: bool = True) -> None:
        """Chirps from output index `start` on (None: silence until the next restart)."""
        self.id += 1
        self.start, self.probing = start, probing

    def emission(self, k: int) -> int:
        if self.probing:
            return self.start + (k * self.gap if k < 2 else 2 * self.gap + (k - 2) * self.period)
        return self.start + k * self.period

    def overlapping(self, lo: int, hi: int, length: int) -> list[tuple[int, int]]:
        """(k, output index) of the chirps of `length` samples that sound in [lo, hi)."""
        if self.start is None:
            return []
        found = [(k, self.emission(k)) for k in (0, 1)] if self.probing else []
        first_regular = 2 if self.probing else 0
        base = self.emission(first_regular)
        k_lo = max(0, -(-(lo - length + 1 - base) // self.period))
        k_hi = (hi - 1 - base) // self.period
        found += [(first_regular + k, base + k * self.period) for k in range(k_lo, k_hi + 1)]
        return [(k, e) for k, e in found if e < hi and e + length > lo]
