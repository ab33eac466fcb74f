"""echo_node on a real audio server for --seconds from its start: rate, stamp accuracy, jumps, underruns, exit status.

    ROS environment (as `make test` sets it; inside `unshare -n`), PulseAudio installed (make setup), then:
    .venv/bin/python benchmarks/echo_stamps.py [--seconds 30] [--runs 3] [--json out.json]

A private PulseAudio server (loopback: what echo_node plays comes back on its input, zero distance) and echo_node in its
own process with its defaults (mic_speaker_distance_m 0). This process listens to audio/echo and /diagnostics and
checks each echo independently of the node's own figures:
- the chirp's position in the published window (cross-correlation) against emission_offset: the stamp's sample;
- receipt time minus stamp against the earliest an echo can be out (0.2 s window + 20 ms search + 3 ms chirp): a
  stamp later than the true emission would make it arrive "too early";
- an observer: parec in this process on the same monitor with 2 ms fragments, which places each chirp's arrival in
  time by when its reads come back (Observer) -- a clock path apart from echo_node's PortAudio stream;
- stamp jumps: consecutive stamps off the chirp grid (the period, after the probe pair) by more than 1 ms.
Then SIGINT, and echo_node's exit status. Prints the load average with the figures (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EARLIEST_S = 0.2 + 0.02 + 0.003
FS = 44_100


class Observer:
    """parec on the monitor with 2 ms fragments, in this process: each read's arrival bounds the capture time of the
    samples it brought, and a line under the per-second minima places the whole recording in time (within the shortest
    read delay, about a fragment). A clock path apart from echo_node's: PulseAudio's native protocol, not PortAudio and
    ALSA's pulse plugin with their 0.1 s buffers."""

    def __init__(self, chirp: np.ndarray, env: dict[str, str]) -> None:
        self.chirp = chirp
        self.reads: list[tuple[int, int]] = []  # (system time ns after the read, samples received so far)
        self.chunks: list[bytes] = []
        self.proc = subprocess.Popen(["parec", "--device=avs.monitor", "--format=float32le", "--channels=1",
                                      f"--rate={FS}", "--latency-msec=2", "--raw"], stdout=subprocess.PIPE, env=env)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        received = 0
        fd = self.proc.stdout.fileno()
        while True:
            data = os.read(fd, 4096)
            now = time.time_ns()
            if not data:
                return
            self.chunks.append(data)
            received += len(data)
            self.reads.append((now, received // 4))

    def onsets(self, settle_s: float = 2.0) -> np.ndarray:
        """System times (ns) of the chirps' first samples."""
        if len(self.reads) < 10:
            return np.zeros(0, np.int64)
        # lower envelope of t - n / fs per second, and a line through it: the server's sample clock drifts against
        # the system clock (430 ppm here)
        reads = np.array([(t, n) for t, n in self.reads if t >= self.reads[0][0] + settle_s * 1e9], dtype=np.float64)
        lag = reads[:, 0] - reads[:, 1] * 1e9 / FS
        second = ((reads[:, 0] - reads[0, 0]) // 1e9).astype(int)
        lows = [np.argmin(np.where(second == k, lag, np.inf)) for k in np.unique(second)]
        slope, intercept = np.polyfit(reads[lows, 1], lag[lows], 1)
        intercept += float(np.min(lag[lows] - (intercept + slope * reads[lows, 1])))
        x = np.frombuffer(b"".join(self.chunks), np.float32)
        corr = np.abs(np.correlate(x, self.chirp, mode="valid"))
        peaks = np.nonzero((corr > 0.5 * corr.max()) & (corr >= np.maximum(np.r_[0, corr[:-1]], np.r_[corr[1:], 0])))[0]
        if peaks.size == 0:
            return np.zeros(0, np.int64)
        keep = peaks[np.r_[True, np.diff(peaks) > 100]]
        return (intercept + slope * keep + keep * 1e9 / FS).astype(np.int64)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._thread.join(timeout=5)


def run_once(seconds: float, node_args: list[str]) -> dict[str, Any]:
    import rclpy
    from avs_depth_msgs.msg import EchoStamped
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile

    from avs_depth_core.audio.chirp import BATVISION_CHIRP, synthesize_chirp
    from avs_depth_core.data.messages import echo_to_array, stamp_to_ns
    from avs_depth_ros.audio_server import PrivateAudioServer

    chirp = synthesize_chirp(BATVISION_CHIRP)
    echoes: list[tuple[int, int, int]] = []  # (receipt ns, stamp ns, chirp position - emission_offset)
    diagnostics: dict[str, str] = {}

    def on_echo(msg: Any) -> None:
        samples = echo_to_array(msg)
        corr = np.abs(np.correlate(samples[0, :msg.emission_offset + 400], chirp, mode="valid"))
        echoes.append((time.time_ns(), stamp_to_ns(msg.header.stamp), int(np.argmax(corr)) - msg.emission_offset))

    def on_diagnostics(msg: Any) -> None:
        for status in msg.status:
            if status.name.startswith("echo_node"):
                diagnostics.update({kv.key: kv.value for kv in status.values})

    with PrivateAudioServer("loopback") as server:
        rclpy.init()
        node = rclpy.create_node("echo_stamps_listener")
        node.create_subscription(EchoStamped, "audio/echo", on_echo, QoSProfile(depth=100))
        node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, QoSProfile(depth=10))
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        observer = Observer(chirp, {**os.environ, **server.client_env()})
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, **server.client_env(), "PYTHONPATH": path}
        started = time.time()
        proc = subprocess.Popen([sys.executable, "-m", "avs_depth_ros.echo_node", "--ros-args", "-p",
                                 "mic_speaker_distance_m:=0.0", *node_args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        time.sleep(seconds)
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=30)[0]
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        observer.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown()
    rate = float(diagnostics.get("chirp_rate_hz", 5.0))
    return figures(echoes, observer.onsets(), diagnostics, started, seconds, proc.returncode, output, usage, rate)


def figures(echoes: list[tuple[int, int, int]], onsets: np.ndarray, diagnostics: dict[str, str], started: float,
            seconds: float, code: int, output: str, usage: Any, chirp_rate: float = 5.0) -> dict[str, Any]:
    if not echoes:
        return {"echoes": 0, "exit_code": code, "output": output[-2000:]}
    received, stamps, position = (np.array(c) for c in zip(*echoes, strict=True))
    gaps = np.diff(stamps)[2:]  # after the probe pair (two chirps MAX_LOOP_S apart)
    period_ns = 1e9 / chirp_rate
    off_grid = np.abs(gaps - np.round(gaps / period_ns) * period_ns) > 1e6
    age_ms = (received - stamps) / 1e6 - EARLIEST_S * 1000
    nearest = [int(onsets[np.argmin(np.abs(onsets - s))] - s) if onsets.size else 0 for s in stamps]
    observed = np.array([d for d in nearest if abs(d) < 50e6]) / 1e6  # stamp vs the observer's onset, ms
    return {
        "echoes": len(stamps), "first_echo_after_start_s": round(received[0] / 1e9 - started, 2),
        "rate_after_first_hz": round((len(stamps) - 1) / ((received[-1] - received[0]) / 1e9), 2),
        "rate_over_run_hz": round(len(stamps) / seconds, 2), "chirp_rate_hz": chirp_rate,
        "chirp_position_error_samples_max": int(np.abs(position).max()),
        "receipt_minus_stamp_beyond_earliest_ms": {"min": round(float(age_ms.min()), 2),
                                                   "median": round(float(np.median(age_ms)), 2),
                                                   "max": round(float(age_ms.max()), 2)},
        "observer_minus_stamp_ms": {"n": int(observed.size), "series": [round(float(v), 2) for v in observed],
                                    "median": round(float(np.median(observed)), 3) if observed.size else None,
                                    "max_abs": round(float(np.abs(observed).max()), 3) if observed.size else None},
        "stamp_jumps": int(off_grid.sum()),
        "xruns": diagnostics.get("xruns"), "lost_windows": diagnostics.get("lost_windows"),
        "timing": diagnostics.get("timing"), "loop_delay_ms": diagnostics.get("loop_delay_ms"),
        "callback_realtime": diagnostics.get("callback_realtime"),
        "exit_code": code, "traceback": "Traceback" in output,
        "echo_node_cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", help="write the figures of every run to this file")
    parser.add_argument("--latency", help="echo_node's latency parameter (default: its own default)")
    args = parser.parse_args(argv)
    results = []
    for run in range(args.runs):
        result = run_once(args.seconds, ["-p", f"latency:={args.latency}"] if args.latency else [])
        results.append(result)
        print(f"run {run + 1}: {json.dumps(result)}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
