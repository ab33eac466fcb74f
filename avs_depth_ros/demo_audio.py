"""`make demo-audio`: the live pipeline on real audio I/O, with the simulated room in the loop. No sound card needed.

    python -m avs_depth_ros.demo_audio [--duration 40] [--out out/demo-audio] [--params-file config/avs_depth.yaml]

Starts a private PulseAudio server (avs_depth_ros.audio_server, layout "room") and, each in its own process:
sim_sensors_node (camera, ground-truth depth and camera pose of a robot in the synthetic world; no simulated echoes),
room_loop (what echo_node plays -> the room's binaural response at that pose -> echo_node's microphones), echo_node on
its real sounddevice path (after `avs-depth-ros audio-check` has measured the loop and written its calibration), and
depth_node. This process listens like any other: /avs/metric_depth against the simulator's ground truth
(camera/depth/image, same stamp), per frame the scale error median(depth) / median(ground truth) - 1 on the pixels
both have, and echo_node's /diagnostics. Prints progress every 5 s and a summary; writes figures (depth against
ground truth, scale over time) and the per-frame figures as JSON into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from avs_depth_ros.audio_server import AudioServerError, PrivateAudioServer

ROOT = Path(__file__).resolve().parents[1]
SCALE_TOLERANCE = 0.15
REPORT_PERIOD_S = 5.0


def demo_params(base: Path, out: Path, calibration: Path | None) -> Path:
    """The node parameters for the demo: the base file with what a room in the loop needs."""
    from avs_depth_core.sim.acoustics import BinauralRig

    config = yaml.safe_load(base.read_text())
    rig = BinauralRig()
    speaker, mics, _, _ = rig.positions(np.eye(4))
    echo = config["echo_node"]["ros__parameters"]
    echo.update(backend="sounddevice", mic_speaker_distance_m=round(float(np.linalg.norm(mics - speaker, axis=1).mean()), 4))
    if calibration is not None:
        echo["calibration_file"] = str(calibration)
    config["sim_sensors_node"]["ros__parameters"]["publish_echo"] = False
    # the loop's own stream delays every echo by another 50-100 ms before echo_node can publish it
    config["depth_node"]["ros__parameters"]["echo_tolerance_s"] = 0.6
    path = out / "demo_audio_params.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Monitor:
    """Depth against ground truth by stamp, /avs/scale, echoes and echo_node's /diagnostics."""

    def __init__(self, node: Any, snapshots: int = 4) -> None:
        from avs_depth_msgs.msg import EchoStamped, ScaleEstimate
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import Image

        self._lock = threading.Lock()
        self.truth: dict[int, np.ndarray] = {}
        self.frames: list[dict[str, float]] = []
        self.echoes = 0
        self.scale: dict[int, float] = {}
        self.echo_diagnostics: dict[str, str] = {}
        self.snapshots: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.started_s = 0.0  # wall time the measured run began (frames before it are start-up)
        self._max_snapshots = snapshots
        qos = QoSProfile(depth=10)
        node.create_subscription(Image, "camera/depth/image", self._on_truth, qos)
        node.create_subscription(Image, "/avs/metric_depth", self._on_depth, qos)
        node.create_subscription(ScaleEstimate, "/avs/scale", self._on_scale, qos)
        node.create_subscription(EchoStamped, "audio/echo", self._on_echo, qos)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, qos)

    def _on_truth(self, msg: Any) -> None:
        from avs_depth_core.data.messages import image_to_depth, stamp_to_ns

        with self._lock:
            self.truth[stamp_to_ns(msg.header.stamp)] = image_to_depth(msg)
            for stamp in sorted(self.truth)[:-30]:
                del self.truth[stamp]

    def _on_depth(self, msg: Any) -> None:
        from avs_depth_core.data.messages import image_to_depth, stamp_to_ns

        stamp = stamp_to_ns(msg.header.stamp)
        depth = image_to_depth(msg)
        with self._lock:
            truth = self.truth.get(stamp)
        if truth is None:
            return
        valid = np.isfinite(depth) & np.isfinite(truth)
        if valid.sum() < 100:
            return
        ratio = float(np.median(depth[valid]) / np.median(truth[valid]))
        with self._lock:
            self.frames.append({"stamp_ns": stamp, "scale_error": ratio - 1.0, "scale": self.scale.get(stamp, np.nan),
                                "received_s": time.time()})
            if len(self.snapshots) < self._max_snapshots and len(self.frames) % 50 == 10:
                self.snapshots.append((stamp, depth, truth))

    def _on_scale(self, msg: Any) -> None:
        from avs_depth_core.data.messages import stamp_to_ns

        with self._lock:
            self.scale[stamp_to_ns(msg.header.stamp)] = float(msg.scale)

    def _on_echo(self, _msg: Any) -> None:
        self.echoes += 1

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name.startswith("echo_node"):
                self.echo_diagnostics = {"message": status.message, **{kv.key: kv.value for kv in status.values}}

    def summary(self, since_s: float = 0.0) -> dict[str, Any]:
        with self._lock:
            errors = np.array([f["scale_error"] for f in self.frames if f["received_s"] >= since_s])
        if errors.size == 0:
            return {"frames": 0}
        return {"frames": int(errors.size), "within_15_percent": float(np.mean(np.abs(errors) <= SCALE_TOLERANCE)),
                "median_abs_scale_error": float(np.median(np.abs(errors))),
                "median_scale_error": float(np.median(errors)),
                "p90_abs_scale_error": float(np.percentile(np.abs(errors), 90))}


def start_process(module: str, params: Path, env: dict[str, str], log: Path, extra: list[str] = ()) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", module, "--ros-args", "--params-file", str(params), *extra],
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def stop_processes(procs: dict[str, subprocess.Popen]) -> dict[str, int | None]:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    codes = {}
    for name, proc in procs.items():
        try:
            codes[name] = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            codes[name] = None
    return codes


def wait_until(ready: Any, procs: dict[str, subprocess.Popen], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        dead = [name for name, p in procs.items() if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up ({', '.join(dead) + ' stopped' if dead else 'timed out'})")
        time.sleep(0.2)


def run_audio_check(env: dict[str, str], params: Path, out: Path) -> Path | None:
    target = out / "audio_check.yaml"
    result = subprocess.run([sys.executable, "-m", "avs_depth_ros.cli", "audio-check", "--params-file", str(params),
                             "--chirps", "20", "--out", str(target)], env=env, capture_output=True, text=True,
                            timeout=180)
    text = "\n".join(line for line in (result.stdout + result.stderr).splitlines() if not line.startswith("ALSA lib"))
    print("audio-check:\n  " + text.replace("\n", "\n  "), flush=True)
    return target if result.returncode == 0 and target.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo_audio", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of the pipeline (default 40)")
    parser.add_argument("--out", default="out/demo-audio", help="figures, logs and per-frame JSON (default out/demo-audio)")
    parser.add_argument("--params-file", default=str(ROOT / "config" / "avs_depth.yaml"))
    parser.add_argument("--skip-audio-check", action="store_true", help="run echo_node with its parameters as they are")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        server = PrivateAudioServer("room").start()
    except AudioServerError as err:
        print(f"demo-audio: error: {err}", file=sys.stderr)
        return 1
    try:
        return run(args, server, out)
    except RuntimeError as err:
        print(f"demo-audio: error: {err}; logs in {out}/", file=sys.stderr)
        return 1
    finally:
        server.stop()


def run(args: argparse.Namespace, server: PrivateAudioServer, out: Path) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    audio_env = {**env, **server.client_env()}
    params = demo_params(Path(args.params_file), out, None)
    procs: dict[str, subprocess.Popen] = {}
    rclpy.init()
    node = rclpy.create_node("demo_audio_monitor")
    monitor = Monitor(node)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    codes: dict[str, int | None] = {}
    try:
        procs["sim_sensors_node"] = start_process("avs_depth_ros.sim_sensors_node", params, env, out / "sim_sensors.log")
        procs["room_loop"] = start_process("avs_depth_ros.room_loop", params, audio_env, out / "room_loop.log")
        wait_until(lambda: node.count_subscribers("camera/pose") > 0, procs, 180, "the room loop's stream")
        calibration = None if args.skip_audio_check else run_audio_check(audio_env, params, out)
        params = demo_params(Path(args.params_file), out, calibration)
        procs["depth_node"] = start_process("avs_depth_ros.depth_node", params, env, out / "depth_node.log")
        procs["echo_node"] = start_process("avs_depth_ros.echo_node", params, audio_env, out / "echo_node.log")
        launched = time.monotonic()
        wait_until(lambda: monitor.echoes > 0 and len(monitor.frames) > 0, procs, 300, "the first depth image")
        start = time.monotonic()
        monitor.started_s = time.time()
        print(f"demo-audio: first echo and depth image after {start - launched:.1f} s (model loading included); "
              f"running {args.duration:g} s (logs in {out}/)", flush=True)
        next_report = start + REPORT_PERIOD_S
        while time.monotonic() - start < args.duration:
            time.sleep(0.2)
            dead = [name for name, p in procs.items() if p.poll() is not None]
            if dead:
                print(f"demo-audio: error: {', '.join(dead)} stopped; see {out}/*.log", file=sys.stderr)
                break
            if time.monotonic() >= next_report:
                next_report += REPORT_PERIOD_S
                print(f"[{time.monotonic() - start:5.1f} s] {report(monitor)}", flush=True)
    finally:
        codes = stop_processes(procs)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return finish(monitor, codes, out)


def report(monitor: Monitor) -> str:
    s = monitor.summary(since_s=time.time() - REPORT_PERIOD_S)
    d = monitor.echo_diagnostics
    text = f"echoes {monitor.echoes} (echo_node: {d.get('message', 'no diagnostics yet')}, xruns {d.get('xruns', '?')}, " \
           f"loop delay {d.get('loop_delay_ms', '?')} ms); depth frames with ground truth: {s['frames']}"
    if s["frames"]:
        text += f", scale within 15 %: {100 * s['within_15_percent']:.0f} %, median |error| " \
                f"{100 * s['median_abs_scale_error']:.1f} %"
    return text


def finish(monitor: Monitor, codes: dict[str, int | None], out: Path) -> int:
    summary = {**monitor.summary(since_s=monitor.started_s), "echoes": monitor.echoes, "echo_node": monitor.echo_diagnostics,
               "exit_codes": codes, "load_average_1min": os.getloadavg()[0]}
    (out / "demo_audio.json").write_text(json.dumps({"summary": summary, "frames": monitor.frames}, indent=1))
    write_figures(monitor, out)
    print(f"summary: {json.dumps(summary, indent=1)}", flush=True)
    if not summary["frames"]:
        print("demo-audio: error: no depth image with ground truth arrived", file=sys.stderr)
        return 1
    return 0 if all(code == 0 for code in codes.values()) else 1


def write_figures(monitor: Monitor, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if monitor.frames:
        t0 = monitor.frames[0]["stamp_ns"]
        t = [(f["stamp_ns"] - t0) / 1e9 for f in monitor.frames]
        err = [100 * f["scale_error"] for f in monitor.frames]
        fig, ax = plt.subplots(figsize=(8, 3), constrained_layout=True)
        ax.plot(t, err, ".", ms=3)
        ax.axhspan(-100 * SCALE_TOLERANCE, 100 * SCALE_TOLERANCE, color="g", alpha=0.15, label="within 15 %")
        ax.set_xlabel("image stamp (s)")
        ax.set_ylabel("median(depth) / median(truth) - 1 (%)")
        ax.set_title("metric depth scale against the simulator, real audio with the room in the loop")
        ax.legend()
        fig.savefig(out / "scale_error.png", dpi=90)
        plt.close(fig)
    for i, (stamp, depth, truth) in enumerate(monitor.snapshots):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3), constrained_layout=True)
        vmax = float(np.nanpercentile(truth, 99))
        for ax, image, title in ((axes[0], depth, "/avs/metric_depth (m)"), (axes[1], truth, "ground truth (m)")):
            im = ax.imshow(image, cmap="magma_r", vmin=0, vmax=vmax)
            ax.set_title(f"{title}, stamp {stamp / 1e9:.2f}")
            ax.axis("off")
            fig.colorbar(im, ax=ax, shrink=0.8)
        fig.savefig(out / f"depth_{i:02d}.png", dpi=90)
        plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
