"""The audio side of the room loop (avs_depth_ros.room_loop), ROS-free: what a speaker sink plays, through a binaural
room response, into a microphones' sink, with the simulator's noise and preamp limiter added.

PulseAudio's own clients do the I/O (parec reads the speaker sink's monitor, pacat plays into the microphones' sink;
pulseaudio-utils): a PortAudio full-duplex stream across two null sinks through ALSA's pulse plugin stalled and died
here as soon as echo_node's stream started, and without a requested latency the null sink buffered over 1 s. A thread
reads fixed blocks from parec, convolves them (StreamingConvolver, one FFT per block) and writes them to pacat, whose
requested latency sets the loop's buffer: an underrun there delays every later echo, which echo_node follows (it
relocks its loop delay from the direct path).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import threading
from typing import Any

import numpy as np
from scipy.signal import lfilter

from avs_depth_core.audio.convolve import StreamingConvolver
from avs_depth_core.sim.acoustics import preamp_limit
from avs_depth_ros.duplex import AudioUnavailableError

AMBIENT_STD = math.sqrt(0.02**2 / (1 - 0.98**2))  # the stationary std of the simulator's one-pole ambient filter


class RoomAudio:
    """start() runs parec -> process() -> pacat in a thread; set_response() swaps the room (from any thread)."""

    def __init__(self, *, sample_rate: int, max_response: int, block: int = 512, reference_gain: float = 0.5,
                 ambient_noise: float = 0.0, mic_noise: float = 0.0, limiter: tuple[float, float] | None = None,
                 source: str = "avs_speaker.monitor", sink: str = "avs_mics", latency_ms: float = 100.0,
                 seed: int = 0) -> None:
        if reference_gain <= 0:
            raise ValueError(f"reference_gain must be positive, got {reference_gain}")
        self.fs, self.block = int(sample_rate), int(block)
        self.conv = StreamingConvolver(self.block, max_response)
        self.reference_gain = float(reference_gain)
        self.ambient_noise, self.mic_noise, self.limiter = ambient_noise, mic_noise, limiter
        self.source, self.sink, self.latency_ms = source, sink, float(latency_ms)
        self._rng = np.random.default_rng(seed)
        self._zi = np.zeros((3, 1))
        self._procs: list[subprocess.Popen] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.blocks = 0
        self.responses = 0
        self.error: str | None = None

    def set_response(self, h: np.ndarray) -> None:
        self.conv.set_filter(h)
        self.responses += 1

    def process(self, x: np.ndarray) -> np.ndarray:
        """One block of the speaker's signal (block,) -> what the microphones record, (block, 2) float32."""
        y = self.conv.process(np.asarray(x, np.float64) / self.reference_gain)
        if self.ambient_noise or self.mic_noise:
            white = self._rng.standard_normal((3, self.block))
            ambient, self._zi = lfilter([0.02], [1.0, -0.98], white, axis=1, zi=self._zi)
            ambient /= AMBIENT_STD
            y += self.ambient_noise * (ambient[:2] + ambient[2]) * math.sqrt(0.5)
            y += self.mic_noise * self._rng.standard_normal((2, self.block))
        if self.limiter is not None:
            y = preamp_limit(y, *self.limiter)
        return np.ascontiguousarray(np.clip(y, -1.0, 1.0).T, dtype=np.float32)

    def start(self, env: dict[str, str] | None = None) -> None:
        for tool in ("parec", "pacat"):
            if shutil.which(tool) is None:
                raise AudioUnavailableError(f"room loop: {tool} not found (sudo apt-get install pulseaudio-utils)")
        common = ["--format=float32le", f"--rate={self.fs}", "--raw"]
        self._stop.clear()
        self._procs = [
            subprocess.Popen(["parec", f"--device={self.source}", "--channels=1", "--latency-msec=10", *common],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env),
            subprocess.Popen(["pacat", f"--device={self.sink}", "--channels=2",
                              f"--latency-msec={self.latency_ms:g}", *common],
                             stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env),
        ]
        self._thread = threading.Thread(target=self._run, name="room-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        reader, writer = self._procs[0].stdout, self._procs[1].stdin
        size = 4 * self.block
        try:
            while not self._stop.is_set():
                data = reader.read(size)
                if len(data) < size:
                    raise AudioUnavailableError(f"parec ended: {self._stderr(0)}")
                writer.write(self.process(np.frombuffer(data, np.float32)).tobytes())
                writer.flush()
                self.blocks += 1
        except (OSError, ValueError, AudioUnavailableError) as err:  # a pipe closed: the stream is gone
            if not self._stop.is_set():
                self.error = f"{type(err).__name__}: {err} {self._stderr(1)}".strip()

    def _stderr(self, i: int) -> str:
        proc = self._procs[i]
        if proc.poll() is None or proc.stderr is None:
            return ""
        return proc.stderr.read().decode(errors="replace").strip()[-500:]

    @property
    def active(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.error is None

    def close(self) -> None:
        """Stop the thread and parec/pacat (by PID)."""
        self._stop.set()
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._procs, self._thread = [], None

    def stats(self) -> dict[str, Any]:
        return {"blocks": self.blocks, "responses": self.responses, "error": self.error}
