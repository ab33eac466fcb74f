"""Emit-and-record on PortAudio (sounddevice), with emission stamps. ROS-free.

Two streams on the device, an input and an output, each driven by its own side: callbacks of a full-duplex stream run
when both directions are ready, and through PulseAudio that put them 1 to 10 ms after the capture, differently at every
start (benchmarks/echo_stamps.py), which no estimate from their times can undo. Output sample o is recorded from input
sample o + loop delay on. Two quantities place an emission in time, both estimated robustly (avs_depth_ros.stamping;
the host API's DAC/ADC times were measured off by up to 1.8 s at start and by 11 ms for whole runs on PulseAudio):
- the loop delay, locked from the direct speaker-to-microphone path of a probe pair of chirps (ChirpSchedule; up to
  0.5 s, longer than the chirp period); the streams' DAC/ADC times stand in when no direct path is found, or with
  correct_with_direct_path false;
- the system time of each input sample, from when the input callbacks arrive (SampleClock).
No chirp is played until the input has run `settle_s` without xruns; an xrun starts a new segment (clock and loop delay
measured afresh, the windows it touches dropped and counted), so a stamp never jumps. Each window is then checked
against the direct path: it must arrive mic_speaker_distance / c after the emission.
"""

from __future__ import annotations

import importlib
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import correlate

from avs_depth_core.audio.chirp import ChirpSpec
from avs_depth_ros.stamping import ChirpSchedule, LoopDelay, SampleClock

INSTALL_HINT = "install it with `sudo apt-get install libportaudio2` (`make setup` does) or set backend: sim"


class AudioUnavailableError(RuntimeError):
    """No usable audio: PortAudio missing, no such device, or the stream failed. The message says which."""


@dataclass(frozen=True)
class EchoCapture:
    samples: np.ndarray  # (channels, n) float32 in [-1, 1]
    emission_offset: int  # index of the sample recorded at emission (zero acoustic delay)
    sample_rate: int
    stamp_ns: int  # emission time, ns, on the clock the source was given (system clock for the sound card)
    direct_path_error_ms: float = math.nan  # measured direct path minus expected; NaN when it was not found
    timing: str = ""  # how the emission was placed: direct_path (locked loop delay) or stream_times (host API)
    chirp: ChirpSpec | None = None  # the emitted chirp, when the source knows it better than the node's parameters


def import_sounddevice() -> Any:
    """sounddevice, or AudioUnavailableError saying how to get PortAudio (sounddevice raises OSError without it)."""
    try:
        sounddevice = importlib.import_module("sounddevice")
    except OSError as err:
        raise AudioUnavailableError(f"PortAudio library not found ({err}); {INSTALL_HINT}") from err
    except ImportError as err:
        raise AudioUnavailableError(f"python package sounddevice is not installed ({err}); pip install sounddevice, "
                               f"or set backend: sim") from err
    return sounddevice


def parse_device(device: str) -> int | str | None:
    """'' -> system default, '3' -> index 3, other text -> a (part of a) device name, as sounddevice takes it."""
    device = device.strip()
    if not device:
        return None
    return int(device) if device.lstrip("-").isdigit() else device


def parse_latency(latency: str | float) -> str | float:
    """'low', 'high' (PortAudio's suggestions for the device) or seconds, as a number or as text."""
    if isinstance(latency, int | float) and not isinstance(latency, bool):
        latency = str(latency)
    latency = latency.strip()
    if latency in ("low", "high"):
        return latency
    try:
        value = float(latency)
    except ValueError:
        raise ValueError(f"latency {latency!r}: expected 'low', 'high' or seconds such as '0.02'") from None
    if value <= 0:
        raise ValueError(f"latency {latency!r}: must be positive seconds")
    return value


def find_direct_path(recording: np.ndarray, chirp: np.ndarray, start: int, stop: int,
                     min_strength: float = 0.0) -> int | None:
    """Index in `recording` (channels, n) where the chirp's direct path begins, searched in [start, stop).

    The direct path is the first cross-correlation peak reaching half of the highest one (a strong wall reflection can
    beat it, but arrives later). None when nothing in the range stands out of the noise (muted speaker, no signal), or
    when the highest peak is weaker than `min_strength` (see direct_path_strength: the direct path is not in the range,
    only reflections are).
    """
    found = _direct_path(recording, chirp, start, stop)
    return None if found is None or found[1] < min_strength else found[0]


def direct_path_strength(recording: np.ndarray, chirp: np.ndarray, index: int) -> float:
    """The cross-correlation at `index` (summed over channels), the scale min_strength is given in."""
    segment = recording[:, index:index + len(chirp)]
    return float(np.abs(segment @ chirp).sum()) if segment.shape[1] == len(chirp) else 0.0


def _direct_path(recording: np.ndarray, chirp: np.ndarray, start: int, stop: int) -> tuple[int, float] | None:
    start = max(start, 0)
    stop = min(stop, recording.shape[1] - len(chirp) + 1)
    if stop - start < 2:
        return None
    segment = recording[:, start:stop + len(chirp) - 1]
    corr = np.sum([np.abs(correlate(ch, chirp, mode="valid", method="fft")) for ch in segment], axis=0)
    peak = float(corr.max())
    if not np.isfinite(peak) or peak <= 5.0 * float(np.median(corr)) or peak <= 1e-9:
        return None
    return start + int(np.argmax(corr >= 0.5 * peak)), peak


class _Ring:
    """Input samples by absolute index; the callback writes, the worker reads windows that are complete."""

    def __init__(self, channels: int, capacity: int) -> None:
        self.data = np.zeros((channels, capacity), dtype=np.float32)
        self.capacity = capacity

    def write(self, pos: int, block: np.ndarray) -> None:  # block (channels, n)
        n = block.shape[1]
        i = pos % self.capacity
        first = min(n, self.capacity - i)
        self.data[:, i:i + first] = block[:, :first]
        if first < n:
            self.data[:, :n - first] = block[:, first:]

    def read(self, start: int, stop: int) -> np.ndarray:
        idx = np.arange(start, stop) % self.capacity
        return self.data[:, idx]


XRUN_FLAGS = ("input_underflow", "input_overflow", "output_underflow", "output_overflow")
SETTLE_S = 0.5  # undisturbed stream time before the first chirp and after every xrun
MAX_LOOP_S = 0.75  # longest loop delay the probe pair can measure (its silent gap)
PROBE_TRIES = 3  # failed probe pairs before the stream's own times are used instead
MISSES_BEFORE_REACQUIRE = 3  # windows in a row without the direct path where the lock expects it
STALL_S = 3.0  # no input callback for this long (PulseAudio's start-up stall was 1.5 s): the stream hung
RING_S = 4.0  # input kept for cutting windows: covers the lock-in and a late poll()


def stream_flags(status: Any) -> list[str]:
    """Names of the xrun flags set in a PortAudio callback status (priming_output is not an xrun)."""
    if not status:
        return []
    if isinstance(status, int):
        return ["unknown"]
    return [name for name in XRUN_FLAGS if getattr(status, name, False)]


@dataclass
class _Emission:
    out_index: int  # output sample index of the chirp's first sample
    segment: int  # the SampleClock segment it was played in
    schedule: int  # the ChirpSchedule id it belongs to
    k: int  # its number in that schedule (0 and 1: the probe pair)


@dataclass
class DuplexStats:
    """Counters for /diagnostics. xruns count flags after the first chirp; the start-up burst is startup_flags."""
    xruns: dict[str, int] = field(default_factory=dict)
    startup_flags: int = 0
    # by reason: xrun (another segment), late (overwritten in the ring), no_direct_path (not where the lock expects it),
    # reacquire (played by a schedule abandoned to measure the loop delay again)
    lost_windows: dict[str, int] = field(default_factory=dict)
    failed_probes: int = 0
    callbacks: int = 0
    realtime: str = "not tried"
    helper_threads_raised: int = 0

    def lose(self, reason: str) -> None:
        self.lost_windows[reason] = self.lost_windows.get(reason, 0) + 1


class DuplexEchoRecorder:
    """Plays `chirp` every 1/chirp_rate s and cuts [emission - pre_roll, emission + window) from the recording.

    realtime_priority > 0: the PortAudio callback thread asks for SCHED_FIFO at that priority on its first call (allowed
    for root or with an rtprio limit; otherwise it runs as before and `stats.realtime` says why).
    """

    def __init__(self, *, chirp: np.ndarray, sample_rate: int, chirp_rate: float, window_s: float, pre_roll_s: float,
                 input_channels: list[int], output_channels: int = 1, gain: float = 0.5, device: str = "",
                 blocksize: int = 0, latency: str | float = "high", output_latency: str | float = 0.1,
                 direct_path_s: float = 0.0, tolerance_s: float = 0.001,
                 correct_with_direct_path: bool = True, realtime_priority: int = 0, sounddevice_module: Any = None,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        if not input_channels or min(input_channels) < 0:
            raise ValueError(f"input_channels {input_channels}: expected non-negative channel indices")
        self.chirp = np.asarray(chirp, dtype=np.float32)
        self.fs = int(sample_rate)
        self.period = max(int(round(self.fs / chirp_rate)), 1)
        self.window = int(round(window_s * self.fs))
        self.pre_roll = int(round(pre_roll_s * self.fs))
        self.direct = int(round(direct_path_s * self.fs))
        self.tolerance = max(int(round(tolerance_s * self.fs)), 1)
        self.search = max(4 * self.tolerance, int(0.02 * self.fs))  # the direct path is looked for this far around
        if self.period < len(self.chirp) + self.direct + 1:
            raise ValueError(f"chirp_rate {chirp_rate} Hz leaves {self.period} samples between chirps, fewer than the "
                             f"{len(self.chirp)}-sample chirp and its direct path")
        self.input_channels = list(input_channels)
        self.output_channels = int(output_channels)
        self.gain = float(gain)
        self.device = parse_device(device)
        self.blocksize = int(blocksize)
        self.latency = parse_latency(latency)
        self.output_latency = parse_latency(output_latency)
        self.use_direct_path = bool(correct_with_direct_path)
        self.realtime_priority = int(realtime_priority)
        self._sd = sounddevice_module
        self._clock_ns = clock_ns
        self._streams: list[Any] = []  # input, output
        self._lock = threading.Lock()
        self.stats = DuplexStats()
        self._reset_timeline()

    def _reset_timeline(self) -> None:
        """Fresh sample counters, clock and loop delay (a new stream)."""
        span = self.pre_roll + self.window + 2 * self.search + len(self.chirp) + self.period
        self._ring = _Ring(len(self.input_channels), max(4 * span, int(RING_S * self.fs)))
        self._pos = 0  # input samples handled by the input callback
        self._out_pos = 0  # output samples handled by the output callback
        self._stop_chirps = False  # an xrun: the output falls silent until the input settles, then probes again
        self.first_emission: int | None = None  # output index of the first chirp (played once the stream settled)
        self._pending: deque[_Emission] = deque()
        self.clock = SampleClock(self.fs, SETTLE_S)
        self.schedule = ChirpSchedule(self.period, int(MAX_LOOP_S * self.fs))
        self.schedule.restart(None, self.use_direct_path)  # silent until the stream has settled
        self._restart: bool | None = None  # the worker asks the callback for a new schedule (probing or not)
        self._next_schedule = 0  # emissions of schedules before this id are dropped (a new one was asked for)
        self._locked_schedule = -1  # the schedule whose probe pair gave the lock
        self.loop = LoopDelay(self.tolerance)
        self._probe_delay: int | None = None  # loop delay from chirp 0 of the probe pair, until chirp 1 confirms it
        self._misses = 0  # windows in a row without a direct path near the lock
        self._strength = 0.0  # typical correlation of the direct path (smoothed): weaker candidates are reflections
        self.corrections = 0  # windows moved to their own direct path (it disagreed with the lock)
        # probing (measuring the loop delay), direct_path (locked), stream_times (the host API's DAC/ADC times)
        self.timing = "probing" if self.use_direct_path else "stream_times"
        self._out_bases: deque[float] = deque(maxlen=256)  # system time of output sample 0 by the output's DAC times
        # now - pos / fs of recent output callbacks: output sample 0 cannot have been played before their maximum
        self._out_bounds: deque[float] = deque(maxlen=2048)
        self._latency_samples = 0  # input + output latency the streams report, when their times are unusable
        self._rt_tried = False
        self._last_input = time.monotonic()  # when the input callback last ran (a stream can hang, still "active")
        self.callback_error: str | None = None

    # -- stream -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Open and start the streams (again after close(): a reopen starts a fresh timeline)."""
        sd = self._sd if self._sd is not None else import_sounddevice()
        self._reset_timeline()
        n_in = max(self.input_channels) + 1
        try:
            sd.check_input_settings(device=self.device, channels=n_in, samplerate=self.fs, dtype="float32")
            sd.check_output_settings(device=self.device, channels=self.output_channels, samplerate=self.fs,
                                     dtype="float32")
            common = dict(device=self.device, samplerate=self.fs, dtype="float32", blocksize=self.blocksize)
            self._streams = [sd.InputStream(channels=n_in, callback=self._input_callback, latency=self.latency,
                                            **common),
                             sd.OutputStream(channels=self.output_channels, callback=self._output_callback,
                                             latency=self.output_latency, **common)]
            self._latency_samples = int(round((self._streams[0].latency + self._streams[1].latency) * self.fs))
            for stream in self._streams:
                stream.start()
            self.stats.helper_threads_raised = raise_helper_threads(self.realtime_priority)
        except Exception as err:  # PortAudioError, ValueError (no such device): all mean "no usable audio" here
            self.close()
            device = "the default device" if self.device is None else f"device {self.device!r}"
            raise AudioUnavailableError(f"cannot open a full-duplex stream (an input and an output stream) on {device} "
                                        f"with {n_in} input and {self.output_channels} output channels at {self.fs} Hz: "
                                        f"{err}\n"
                                        f"available devices:\n{_device_list(sd)}") from err

    def close(self) -> None:
        """Stop at once (abort: no drain, which took about 1 s on PulseAudio) and release the streams."""
        streams, self._streams = self._streams, []
        for stream in streams:
            try:
                getattr(stream, "abort", stream.stop)()
            except Exception:  # a stream that already died: closing is all that is left to do
                pass
            finally:
                stream.close()

    def reinitialize_portaudio(self) -> None:
        """Let PortAudio list the devices afresh (sounddevice keeps one PortAudio session per process)."""
        sd = self._sd if self._sd is not None else import_sounddevice()
        if hasattr(sd, "_terminate") and hasattr(sd, "_initialize"):
            try:
                sd._terminate()
                sd._initialize()
            except Exception:  # PortAudioError: the next start() reports what is wrong
                pass

    @property
    def active(self) -> bool:
        return bool(self._streams) and all(bool(getattr(stream, "active", True)) for stream in self._streams)

    # -- PortAudio threads: no allocation beyond small records, no locks held for long, no ROS --------------------
    def _guarded(self, handle: Callable[..., None], *args: Any) -> None:
        try:
            if not self._rt_tried:
                self._rt_tried = True
                self.stats.realtime = _raise_thread_priority(self.realtime_priority)
            handle(*args)
        except Exception as err:  # an exception would stop the stream silently; keep it for the worker to report
            self.callback_error = f"{type(err).__name__}: {err}"
            raise

    def _count_flags(self, flags: list[str]) -> None:
        for name in flags:
            if self.first_emission is None:
                self.stats.startup_flags += 1
            else:
                self.stats.xruns[name] = self.stats.xruns.get(name, 0) + 1

    def _input_callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        self._guarded(self._handle_input, indata, frames, time_info, status)

    def _handle_input(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        now_ns = self._clock_ns()
        self._last_input = time.monotonic()
        pos = self._pos
        self.stats.callbacks += 1
        flags = stream_flags(status)
        if flags:
            self._count_flags(flags)
            self.clock.reset(pos + frames)  # this block's samples may be filler: the next segment starts after it
            self._stop_chirps = True
        else:
            adc, current = float(time_info.inputBufferAdcTime), float(time_info.currentTime)
            age = current - adc if 0.0 < adc <= current < adc + 1.0 else None  # zeros or garbage otherwise
            self.clock.add(now_ns, pos, frames, age)
        self._ring.write(pos, indata[:, self.input_channels].T)
        self._pos = pos + frames

    def _output_callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        self._guarded(self._handle_output, outdata, frames, time_info, status)

    def _handle_output(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        now_ns = self._clock_ns()
        pos = self._out_pos
        flags = stream_flags(status)
        if flags:
            # Silence was inserted: later chirps come back later. Their windows find the direct path off the lock and
            # are moved to it, three such relock; a slip beyond the search range makes misses and a new probe pair.
            self._count_flags(flags)
        else:
            self._out_bounds.append(now_ns - pos * 1e9 / self.fs)
            dac, current = float(time_info.outputBufferDacTime), float(time_info.currentTime)
            if 0.0 < current <= dac < current + 1.0:
                self._out_bases.append(now_ns + (dac - current) * 1e9 - pos * 1e9 / self.fs)
        if self._stop_chirps:
            self._stop_chirps = False
            if self.schedule.start is not None:  # silent until the input has settled again, then a new probe pair
                self.schedule.restart(None, self.timing != "stream_times")
        self._start_schedule(pos)
        outdata.fill(0.0)
        self._play_chirps(outdata, pos, frames)
        self._out_pos = pos + frames

    def _start_schedule(self, pos: int) -> None:
        """At settling, and when the worker asks: a new schedule (after `gap` of silence when it was chirping)."""
        restart, self._restart = self._restart, None
        if restart is not None:
            self.schedule.restart(pos + self.schedule.gap, restart)
        elif self.schedule.start is None and self.clock.settled:
            # silent since the stream began; after an xrun, a gap first, so that no earlier chirp answers the probe
            self.schedule.restart(pos if self.first_emission is None else pos + self.schedule.gap,
                                  self.timing != "stream_times")
            if self.first_emission is None:
                self.first_emission = pos

    def _play_chirps(self, outdata: np.ndarray, pos: int, frames: int) -> None:
        n = len(self.chirp)
        for k, e in self.schedule.overlapping(pos, pos + frames, n):
            a, b = max(pos, e), min(pos + frames, e + n)
            outdata[a - pos:b - pos, :] = (self.gain * self.chirp[a - e:b - e])[:, None]
            if e >= pos:
                with self._lock:
                    self._pending.append(_Emission(e, self.clock.segment, self.schedule.id, k))

    # -- worker thread -------------------------------------------------------------------------------------------
    def sample_time_ns(self, index: int) -> int:
        """System time at which input sample `index` was captured."""
        return self.clock.time_ns(index)

    def recorded_until(self) -> int:
        """Input samples recorded so far (the next input index)."""
        return self._pos

    def recorded(self, start: int, stop: int) -> np.ndarray:
        """Input samples [start, stop) still in the ring, (channels, n); clipped to what is there."""
        start = max(start, self._pos - self._ring.capacity, 0)
        return self._ring.read(start, max(start, min(stop, self._pos)))

    @property
    def reported_delay_samples(self) -> float:
        """The loop delay the host API's times claim (output DAC time against input ADC time), samples; NaN without
        usable output times."""
        base = self.clock.base_ns()
        if not self._out_bases or base is None:
            return math.nan
        return (float(np.median(list(self._out_bases))) - base) * self.fs / 1e9

    @property
    def lost_windows(self) -> int:
        return sum(self.stats.lost_windows.values())

    @property
    def xruns(self) -> int:
        return sum(self.stats.xruns.values())

    def poll(self) -> list[EchoCapture]:
        """Windows recorded completely since the last call. Raises AudioUnavailableError if the stream died."""
        if self.callback_error is not None:
            raise AudioUnavailableError(f"audio callback failed: {self.callback_error}")
        if self._streams and not self.active:
            raise AudioUnavailableError("the audio stream stopped (device unplugged or host API error)")
        if self._streams and time.monotonic() - self._last_input > STALL_S:
            raise AudioUnavailableError(f"no input for {STALL_S:g} s: the stream hung (audio server gone?)")
        pos = self._pos
        out = []
        while True:
            with self._lock:
                if not self._pending:
                    break
                emission = self._pending[0]
            verdict = self._verdict(emission, pos)
            if verdict == "wait":
                break
            with self._lock:
                self._pending.popleft()
            capture = self._cut(emission) if verdict == "cut" else verdict
            if isinstance(capture, str):
                self.stats.lose(capture)
                continue
            out.append(capture)
        return out

    def _verdict(self, emission: _Emission, pos: int) -> str:
        """cut, wait, or why it is lost (xrun: another segment; reacquire: an abandoned schedule; late: overwritten)."""
        if emission.segment != self.clock.segment:
            return "xrun"
        if emission.schedule != self.schedule.id or emission.schedule < self._next_schedule:
            return "reacquire"
        delay = self.loop.value if self.timing == "direct_path" else (self._earliest_delay() or 0)
        if emission.out_index + delay - self.pre_roll - self.search < pos - self._ring.capacity + self.schedule.gap:
            return "late"
        if not self.clock.settled:
            return "wait"
        if self.timing == "direct_path" and self.schedule.probing and emission.schedule != self._locked_schedule:
            self.timing = "probing"  # the callback began a new schedule after an xrun: measure the delay again
        if self.timing == "probing" and not self._probe(emission, pos):
            return "wait"
        if self.timing == "probing":  # _probe has asked for a new schedule
            return "reacquire"
        return "cut" if pos >= emission.out_index + self._loop_delay() + self.window + self.search + len(self.chirp) \
            else "wait"

    def _earliest_delay(self) -> int | None:
        """A lower bound of the loop delay in samples (the two streams' counters start apart): an output sample cannot
        be played before the callback that wrote it, nor recorded before it is played. 10 ms of margin for the input
        clock's own lateness."""
        base = self.clock.base_ns()
        if not self._out_bounds or base is None:
            return None
        return int((max(self._out_bounds) - base) * self.fs / 1e9) - int(0.01 * self.fs)

    def _probe(self, emission: _Emission, pos: int) -> bool:
        """Measure the loop delay from the probe pair (chirps 0 and 1 of the schedule); True once it is settled either
        way (locked, or a new schedule asked for), False while the samples are not there yet."""
        if emission.k != 0 and self._probe_delay is None:
            return self._probe_failed()  # chirp 0 of the pair is gone (lost in an xrun)
        if emission.k == 0 and self._probe_delay is None:
            earliest = self._earliest_delay()
            if earliest is None:
                return False
            start = emission.out_index + earliest
            if pos < start + self.schedule.gap + len(self.chirp):
                return False
            seg = self._ring.read(start, start + self.schedule.gap + len(self.chirp))
            found = find_direct_path(seg, self.chirp, self.direct, self.schedule.gap)
            if found is None:
                return self._probe_failed()
            self._probe_delay = earliest + found - self.direct
        second = self.schedule.emission(1)
        expected = second + self._probe_delay + self.direct
        if pos < expected + self.search + len(self.chirp):
            return False
        seg = self._ring.read(expected - self.search, expected + self.search + len(self.chirp))
        found = find_direct_path(seg, self.chirp, 0, 2 * self.search + 1)
        if found is None or abs(found - self.search) > self.tolerance:
            return self._probe_failed()
        self._strength = direct_path_strength(seg, self.chirp, found)
        self.loop.lock(self._probe_delay)
        self._probe_delay, self._misses, self._locked_schedule = None, 0, self.schedule.id
        self.timing = "direct_path"
        self.stats.failed_probes = 0
        return True

    def _probe_failed(self) -> bool:
        """No (consistent) direct path after the probe pair: probe again, or after PROBE_TRIES use the stream's times."""
        self.stats.failed_probes += 1
        self._probe_delay = None
        if self.stats.failed_probes >= PROBE_TRIES:
            self.timing = "stream_times"
        self._request_schedule(self.timing == "probing")
        return True

    def _request_schedule(self, probing: bool) -> None:
        """Ask the callback for a new schedule; the emissions of the current one are dropped from now on."""
        self._next_schedule = self.schedule.id + 1
        self._restart = probing

    def _loop_delay(self) -> int:
        """The loop delay in effect: locked from the direct path, or the stream's own times."""
        if self.timing == "direct_path":
            return self.loop.value
        reported = self.reported_delay_samples
        return self._latency_samples if math.isnan(reported) else int(round(reported))

    def _cut(self, emission: _Emission) -> EchoCapture | str:
        """The window of one emission, or why it is lost. Its direct path is looked for around where the loop delay
        puts it: one that disagrees by more than the tolerance moves this emission to it (a counted correction; lasting
        ones relock the loop delay). A candidate under half the direct path's usual strength is a reflection, not it.
        With a locked loop delay, a window without its direct path is not published (a glitch, the loop delay moved by
        more than the search range, or a muted speaker: counted as no_direct_path), and `MISSES_BEFORE_REACQUIRE` such
        windows in a row start a new probe pair. With the stream's times, a consistent direct path locks the loop
        delay."""
        j = emission.out_index + self._loop_delay()  # the emission on the input timeline
        seg = self._ring.read(j - self.pre_roll - self.search, j + self.window + self.search + len(self.chirp))
        expected = self.pre_roll + self.search + self.direct  # where the direct path should begin in seg
        found = find_direct_path(seg, self.chirp, expected - self.search, expected + self.search + 1,
                                 min_strength=0.5 * self._strength if self.timing == "direct_path" else 0.0)
        error = math.nan if found is None else (found - expected) * 1000.0 / self.fs
        shift = 0
        if self.use_direct_path and found is not None:
            self._misses = 0
            self._strength = 0.9 * self._strength + 0.1 * direct_path_strength(seg, self.chirp, found)
            if self.loop.add(j - emission.out_index + found - expected) and self.timing == "stream_times":
                self.timing = "direct_path"  # three consistent direct paths near the stream's estimate
            if abs(found - expected) > self.tolerance:
                shift = found - expected
                self.corrections += 1
        elif self.timing == "direct_path":
            self._misses += 1
            if self._misses >= MISSES_BEFORE_REACQUIRE:  # the delay moved beyond the search range
                self.timing, self._misses = "probing", 0
                self._request_schedule(True)
            return "no_direct_path"
        a = self.search + shift
        samples = np.ascontiguousarray(seg[:, a:a + self.pre_roll + self.window])
        stamp = self.clock.time_ns(j + shift, emission.segment)
        if stamp is None:
            return "xrun"  # one came between the check and the cut
        return EchoCapture(samples, self.pre_roll, self.fs, stamp, error, timing=self.timing)


# Threads the audio stack starts in our process that move samples between PortAudio and the server: libpulse's
# threaded mainloop (ALSA's pulse plugin runs one per direction). Left at normal priority they stalled for tens of ms at
# CPU load 7 on 2 cores and the stream underran.
AUDIO_HELPER_THREADS = ("threaded-ml",)


def raise_helper_threads(priority: int) -> int:
    """SCHED_FIFO for this process's audio helper threads (by name, Linux); how many were raised."""
    if priority <= 0 or not hasattr(os, "sched_setscheduler"):
        return 0
    raised = 0
    for task in Path("/proc/self/task").glob("*"):
        try:
            if (task / "comm").read_text().strip() in AUDIO_HELPER_THREADS:
                os.sched_setscheduler(int(task.name), os.SCHED_FIFO, os.sched_param(priority))
                raised += 1
        except (OSError, ValueError):  # gone meanwhile, or not allowed: they keep their priority
            continue
    return raised


def _raise_thread_priority(priority: int) -> str:
    """SCHED_FIFO for the calling thread (Linux schedules threads); what happened, for diagnostics."""
    if priority <= 0:
        return "off (realtime_priority 0)"
    if not hasattr(os, "sched_setscheduler"):
        return "not available on this system"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except OSError as err:
        return f"refused ({err.strerror}; allow it with an rtprio limit, e.g. /etc/security/limits.d/audio.conf)"
    return f"SCHED_FIFO priority {priority}"


def _device_list(sd: Any) -> str:
    try:
        return str(sd.query_devices()) or "(none)"
    except Exception as err:  # the listing itself fails without a sound card
        return f"(cannot list devices: {err})"


class ReopeningRecorder:
    """A DuplexEchoRecorder that reopens its stream, with exponential backoff, when PortAudio drops it (a host API
    error, a device unplugged and plugged back). poll(now_s) returns the captures; `state` says whether it runs."""

    def __init__(self, recorder: DuplexEchoRecorder, log: Callable[[str], None], first_backoff_s: float = 0.5,
                 max_backoff_s: float = 10.0) -> None:
        self.recorder = recorder
        self._log = log
        self.first_backoff_s, self.max_backoff_s = first_backoff_s, max_backoff_s
        self._backoff_s = first_backoff_s
        self._retry_at: float | None = None
        self.drops = 0  # streams that died
        self.reopens = 0  # successful reopens
        self.failed_reopens = 0
        self.last_error = ""

    @property
    def state(self) -> str:
        return "running" if self._retry_at is None else "reopening"

    def poll(self, now_s: float) -> list[EchoCapture]:
        if self._retry_at is not None:
            if now_s >= self._retry_at:
                self._reopen(now_s)
            return []
        try:
            return self.recorder.poll()
        except AudioUnavailableError as err:
            self.drops += 1
            self.last_error = str(err)
            self.recorder.close()
            self._retry_at = now_s + self._backoff_s
            self._log(f"audio stream lost ({err}); reopening in {self._backoff_s:g} s")
            return []

    def _reopen(self, now_s: float) -> None:
        if self.failed_reopens:
            self.recorder.reinitialize_portaudio()  # a device that came back may have a new index
        try:
            self.recorder.start()
        except AudioUnavailableError as err:
            self.failed_reopens += 1
            self.last_error = str(err).splitlines()[0]
            self._backoff_s = min(2 * self._backoff_s, self.max_backoff_s)
            self._retry_at = now_s + self._backoff_s
            self._log(f"reopening the audio stream failed ({self.last_error}); next try in {self._backoff_s:g} s")
            return
        self.reopens += 1
        self._retry_at = None
        self._backoff_s = self.first_backoff_s
        self._log(f"audio stream reopened (reopen {self.reopens})")
