"""Soak: `avs-depth-ros bringup --sim` watched by an independent rclpy subscriber for a while, per time window.

    ROS environment (as `make demo` sets it: ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, install/setup.bash), then:
    .venv/bin/python benchmarks/bringup_soak.py --seconds 120 --window 20
    .venv/bin/python benchmarks/bringup_soak.py --params-file my.yaml --seconds 600

Per window: depth images received and their rate, frames whose header is not one the camera published, NaN frames
(no scale), held scales, latency from the image stamp to arrival, and the bringup process's resident memory (from
/proc), so a slow leak or a rate that decays shows. Target: 5 Hz or more on 2 CPU cores, each depth with the
header of a published camera image, mostly finite, for as long as it runs.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ROOT = Path(__file__).resolve().parents[1]


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return math.nan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params-file", default=str(ROOT / "config" / "avs_depth.yaml"))
    parser.add_argument("--seconds", type=float, default=120.0, help="how long to watch (default 120)")
    parser.add_argument("--window", type=float, default=20.0, help="seconds per reported window (default 20)")
    args = parser.parse_args(argv)

    import rclpy
    from avs_depth_msgs.msg import ScaleEstimate
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from avs_depth_core.data.messages import image_to_depth, stamp_to_ns

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rclpy.init()
    node = rclpy.create_node("soak_watcher")
    lock = threading.Lock()
    camera: set[int] = set()
    rows: list[tuple[float, int, float, float]] = []  # arrival, stamp ns, finite fraction, latency ms
    held: list[float] = []

    def on_camera(msg: Image) -> None:
        with lock:
            camera.add(stamp_to_ns(msg.header.stamp))

    def on_depth(msg: Image) -> None:
        now = time.time_ns()
        stamp = stamp_to_ns(msg.header.stamp)
        finite = float(np.isfinite(image_to_depth(msg)).mean())
        with lock:
            rows.append((time.monotonic(), stamp, finite, (now - stamp) / 1e6))

    def on_scale(msg: ScaleEstimate) -> None:
        if msg.held:
            with lock:
                held.append(time.monotonic())

    node.create_subscription(Image, "camera/color/image_raw", on_camera,
                             QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT))
    node.create_subscription(Image, "/avs/metric_depth", on_depth, 10)
    node.create_subscription(ScaleEstimate, "/avs/scale", on_scale, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()

    process = subprocess.Popen([sys.executable, "-m", "avs_depth_ros.cli", "bringup", "--sim", "--params-file",
                                args.params_file], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    print(f"bringup --sim (pid {process.pid}) with {args.params_file}; watching for {args.seconds:g} s")
    deadline = time.monotonic() + 120.0
    while not rows and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    if not rows:
        print("no depth image within 120 s of start", file=sys.stderr)
        process.kill()
        return 1
    start = time.monotonic()
    print(f"first depth after start-up; windows of {args.window:g} s\n")
    print(f"{'window':>11} {'depth':>6} {'Hz':>6} {'foreign hdr':>11} {'NaN':>4} {'held':>5} {'latency p50':>12} "
          f"{'p95':>8} {'RSS MiB':>8}")
    totals = {"depth": 0, "foreign": 0, "nan": 0}
    t0 = start
    while t0 < start + args.seconds and process.poll() is None:
        t1 = min(t0 + args.window, start + args.seconds)
        time.sleep(max(t1 - time.monotonic(), 0.0))
        with lock:
            window = [r for r in rows if t0 <= r[0] < t1]
            first_seen = min(camera, default=0)  # images before the watcher matched the camera are not judged
            foreign = sum(1 for r in window if r[1] >= first_seen and r[1] not in camera)
            n_held = sum(1 for h in held if t0 <= h < t1)
        latency = [r[3] for r in window]
        nan = sum(1 for r in window if r[2] == 0.0)
        p50, p95 = (np.percentile(latency, [50, 95]) if latency else (math.nan, math.nan))
        print(f"{t0 - start:5.0f}-{t1 - start:<5.0f} {len(window):6d} {len(window) / (t1 - t0):6.2f} {foreign:11d} "
              f"{nan:4d} {n_held:5d} {p50:10.1f}ms {p95:6.1f}ms {rss_mib(process.pid):8.1f}", flush=True)
        totals["depth"] += len(window)
        totals["foreign"] += foreign
        totals["nan"] += nan
        t0 = t1
    elapsed = time.monotonic() - start
    alive = process.poll() is None
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()
    rate = totals["depth"] / max(elapsed, 1e-9)
    print(f"\n{totals['depth']} depth images in {elapsed:.0f} s ({rate:.2f} Hz), {totals['foreign']} without a camera "
          f"header, {totals['nan']} NaN frames; bringup {'ran throughout' if alive else 'ENDED EARLY'}, "
          f"exit {process.returncode}")
    ok = alive and rate >= 5.0 and totals["foreign"] == 0 and totals["nan"] <= totals["depth"] // 10
    print(f"target: >= 5 Hz, camera headers, mostly finite, throughout: {'met' if ok else 'missed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
