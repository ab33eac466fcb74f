"""Emit-and-record on one full-duplex PortAudio stream (sounddevice), with emission stamps. ROS-free.

Stamping (ros2_conventions section 2): input and output share one sample clock, so the emission is placed on the input
sample timeline with the stream's DAC/ADC times, j = e + (outputBufferDacTime - inputBufferAdcTime) * fs; when the host
API reports no usable times (PortAudio#121, #531) the stream's (input + output) latency stands in. Input sample indices
map to the system clock through a min-filtered estimate from the callbacks (callbacks run late, never early). Each
window is then checked against the direct speaker-to-microphone path: its chirp must arrive mic_speaker_distance / c
after the emission; a larger gap is counted and, if asked, the emission is moved to the direct path.
"""

from __future__ import annotations

import importlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.signal import correlate

from avs_depth_core.audio.chirp import ChirpSpec

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
    corrected: bool = False  # the emission was moved to the direct path
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


def parse_latency(latency: str) -> str | float:
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


def find_direct_path(recording: np.ndarray, chirp: np.ndarray, start: int, stop: int) -> int | None:
    """Index in `recording` (channels, n) where the chirp's direct path begins, searched in [start, stop).

    The direct path is the first cross-correlation peak reaching half of the highest one (a strong wall reflection can
    beat it, but arrives later). None when nothing in the range stands out of the noise (muted speaker, no signal).
    """
    start = max(start, 0)
    stop = min(stop, recording.shape[1] - len(chirp) + 1)
    if stop - start < 2:
        return None
    segment = recording[:, start:stop + len(chirp) - 1]
    corr = np.sum([np.abs(correlate(ch, chirp, mode="valid", method="fft")) for ch in segment], axis=0)
    peak = float(corr.max())
    if not np.isfinite(peak) or peak <= 5.0 * float(np.median(corr)) or peak <= 1e-9:
        return None
    return start + int(np.argmax(corr >= 0.5 * peak))


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


@dataclass
class _Emission:
    out_index: int  # output sample index of the chirp's first sample
    in_index: int  # the same instant on the input timeline
    from_timestamps: bool  # False: placed with the stream latency (the host API's times were unusable)


class DuplexEchoRecorder:
    """Plays `chirp` every 1/chirp_rate s and cuts [emission - pre_roll, emission + window) from the recording."""

    def __init__(self, *, chirp: np.ndarray, sample_rate: int, chirp_rate: float, window_s: float, pre_roll_s: float,
                 input_channels: list[int], output_channels: int = 1, gain: float = 0.5, device: str = "",
                 blocksize: int = 0, latency: str = "low", direct_path_s: float = 0.0, tolerance_s: float = 0.001,
                 correct_with_direct_path: bool = True, sounddevice_module: Any = None,
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
        self.search = max(4 * self.tolerance, int(0.02 * self.fs))  # timestamps off by up to 20 ms are still found
        if self.period < len(self.chirp):
            raise ValueError(f"chirp_rate {chirp_rate} Hz leaves {self.period} samples between chirps, fewer than the "
                             f"{len(self.chirp)}-sample chirp")
        self.input_channels = list(input_channels)
        self.output_channels = int(output_channels)
        self.gain = float(gain)
        self.device = parse_device(device)
        self.blocksize = int(blocksize)
        self.latency = parse_latency(latency)
        self.correct = correct_with_direct_path
        self._sd = sounddevice_module
        self._clock_ns = clock_ns
        span = self.pre_roll + self.window + 2 * self.search + len(self.chirp)
        self._ring = _Ring(len(self.input_channels), max(4 * span, 2 * self.fs))
        self._pos = 0  # samples handled by the callback (input and output advance together)
        self._first_emission = self.period // 2  # leave the stream a moment to settle
        self._pending: deque[_Emission] = deque()
        self._clock_base: deque[float] = deque(maxlen=max(64, int(5 * self.fs / 256)))  # about 5 s of callbacks
        self._latency_samples = 0  # input + output latency the stream reports, for host APIs without usable times
        self._input_latency_s = 0.0
        self._stream: Any = None
        self._lock = threading.Lock()
        self.xruns = 0
        self.lost_windows = 0
        self.callback_error: str | None = None

    # -- stream -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        sd = self._sd if self._sd is not None else import_sounddevice()
        n_in = max(self.input_channels) + 1
        try:
            sd.check_input_settings(device=self.device, channels=n_in, samplerate=self.fs, dtype="float32")
            sd.check_output_settings(device=self.device, channels=self.output_channels, samplerate=self.fs,
                                     dtype="float32")
            self._stream = sd.Stream(device=self.device, samplerate=self.fs, channels=(n_in, self.output_channels),
                                     dtype="float32", blocksize=self.blocksize, latency=self.latency,
                                     callback=self._callback)
            lat_in, lat_out = self._stream.latency
            self._latency_samples = int(round((lat_in + lat_out) * self.fs))
            self._input_latency_s = float(lat_in)
            self._stream.start()
        except Exception as err:  # PortAudioError, ValueError (no such device): all mean "no usable audio" here
            self.close()
            device = "the default device" if self.device is None else f"device {self.device!r}"
            raise AudioUnavailableError(f"cannot open a full-duplex stream on {device} with {n_in} input and "
                                   f"{self.output_channels} output channels at {self.fs} Hz: {err}\n"
                                   f"available devices:\n{_device_list(sd)}") from err

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
            finally:
                stream.close()

    @property
    def active(self) -> bool:
        return self._stream is not None and bool(getattr(self._stream, "active", True))

    # -- PortAudio thread: no allocation beyond small records, no locks held for long, no ROS -----------------
    def _callback(self, indata: np.ndarray, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        try:
            self._handle_block(indata, outdata, frames, time_info, status)
        except Exception as err:  # an exception would stop the stream silently; keep it for the worker to report
            self.callback_error = f"{type(err).__name__}: {err}"
            raise

    def _handle_block(self, indata: np.ndarray, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        now_ns = self._clock_ns()
        if status:
            self.xruns += 1
        pos = self._pos
        dac = float(time_info.outputBufferDacTime)
        adc = float(time_info.inputBufferAdcTime)
        current = float(time_info.currentTime)
        usable = 0.0 < dac - adc < 1.0  # same clock, output after input; zeros or garbage otherwise
        outdata.fill(0.0)
        n = len(self.chirp)
        k_lo = max(0, -(-(pos - n + 1 - self._first_emission) // self.period))
        k_hi = (pos + frames - 1 - self._first_emission) // self.period
        for k in range(k_lo, k_hi + 1):
            e = self._first_emission + k * self.period
            a, b = max(pos, e), min(pos + frames, e + n)
            outdata[a - pos:b - pos, :] = (self.gain * self.chirp[a - e:b - e])[:, None]
            if e >= pos:
                j = e + int(round((dac - adc) * self.fs)) if usable else e + self._latency_samples
                with self._lock:
                    self._pending.append(_Emission(e, j, usable))
        self._ring.write(pos, indata[:, self.input_channels].T)
        if usable and 0.0 < current and adc <= current:
            base = now_ns - (current - adc) * 1e9 - pos * 1e9 / self.fs
        else:  # the block's last sample was captured about the input latency before this callback
            base = now_ns - (self._input_latency_s + frames / self.fs) * 1e9 - pos * 1e9 / self.fs
        self._clock_base.append(base)
        self._pos = pos + frames

    # -- worker thread -------------------------------------------------------------------------------------------
    def sample_time_ns(self, index: int) -> int:
        """System time at which input sample `index` was captured."""
        return int(round(min(self._clock_base) + index * 1e9 / self.fs))

    def poll(self) -> list[EchoCapture]:
        """Windows recorded completely since the last call. Raises AudioUnavailableError if the stream died."""
        if self.callback_error is not None:
            raise AudioUnavailableError(f"audio callback failed: {self.callback_error}")
        if self._stream is not None and not self.active:
            raise AudioUnavailableError("the audio stream stopped (device unplugged or host API error)")
        out = []
        pos = self._pos
        while True:
            with self._lock:
                if not self._pending or self._pending[0].in_index + self.window + self.search + len(self.chirp) > pos:
                    break
                emission = self._pending.popleft()
            capture = self._cut(emission, pos)
            if capture is not None:
                out.append(capture)
        return out

    def _cut(self, emission: _Emission, pos: int) -> EchoCapture | None:
        start = emission.in_index - self.pre_roll - self.search
        stop = emission.in_index + self.window + self.search + len(self.chirp)
        if start < 0 or start < pos - self._ring.capacity:
            self.lost_windows += 1  # before the stream began, or overwritten because poll() came too late
            return None
        seg = self._ring.read(start, stop)
        expected = self.pre_roll + self.search + self.direct  # where the direct path should begin in seg
        found = find_direct_path(seg, self.chirp, expected - self.search, expected + self.search + 1)
        error = math.nan if found is None else (found - expected) * 1000.0 / self.fs
        corrected = found is not None and self.correct and abs(found - expected) > self.tolerance
        emit = self.pre_roll + self.search + (found - expected if corrected else 0)  # emission index in seg
        samples = np.ascontiguousarray(seg[:, emit - self.pre_roll:emit + self.window])
        stamp = self.sample_time_ns(start + emit)
        return EchoCapture(samples, self.pre_roll, self.fs, stamp, error, corrected)


def _device_list(sd: Any) -> str:
    try:
        return str(sd.query_devices()) or "(none)"
    except Exception as err:  # the listing itself fails without a sound card
        return f"(cannot list devices: {err})"
