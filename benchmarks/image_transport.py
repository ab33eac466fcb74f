"""Camera-sized images from another process into depth_node, and its depth out to a third process.

    ROS environment (as `make test` sets it; inside `unshare -n` for a private loopback), then:
    .venv/bin/python benchmarks/image_transport.py                          # the default matrix (about 10 minutes)
    .venv/bin/python benchmarks/image_transport.py --target transport --sizes 1280x720 --rates 10 --count 50
    .venv/bin/python benchmarks/image_transport.py --target depth_node --qos reliable --rates 10

A separate plain rclpy process publishes sensor_msgs/Image (rgb8 or bgr8, --count frames at each rate, distinct
stamps) with the QoS a camera driver would offer: `reliable` (rclpy's default profile, depth 10: most drivers) or
`best_effort` (sensor-data QoS); `+shm` loads config/fastdds_large_messages.xml in the publisher's process (the writer's
side decides whether large best-effort samples arrive).
- target transport: this process subscribes as depth_node does (avs_depth_ros.qos.MatchingSubscription, keep last 1)
  and counts what reaches the callback (keep last 1: a sample replaced before this process takes it is not counted).
- target depth_node: depth_node runs in its own process with its defaults (bundled models; echoes from echo_node
  backend sim unless --echoes none) and this process, a third one, listens to /avs/metric_depth with rclpy's default
  (reliable) QoS and counts the depth images carrying the header of a published image.
Prints one row per size, encoding, QoS and rate: published, received, and for depth_node the images it took in, the
depth images it published and those heard here with the image's header. Figures only, nothing asserted.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PROFILE = ROOT / "config" / "fastdds_large_messages.xml"
IMAGE_TOPIC = "camera/color/image_raw"


# ------------------------------------------------------------------------------------------------ publisher role
def run_publisher(args: argparse.Namespace) -> int:
    """A plain rclpy camera stand-in: waits for a subscriber, publishes --count images at --rate, prints JSON."""
    import numpy as np
    import rclpy
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    width, height = parse_size(args.size)
    rclpy.init()
    node = rclpy.create_node("bench_camera")
    qos = QoSProfile(depth=10) if args.qos == "reliable" else qos_profile_sensor_data
    pub = node.create_publisher(Image, IMAGE_TOPIC, qos)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([(x * 255 // width), (y * 255 // height), ((x + y) % 256)], axis=2).astype(np.uint8)
    msg = Image(height=height, width=width, encoding=args.encoding, is_bigendian=0, step=width * 3)
    msg.data = array.array("B", rgb.tobytes())
    msg.header.frame_id = args.frame_id
    deadline = time.monotonic() + 60.0
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # both sides have matched
    stamps = []
    start = time.monotonic()
    for i in range(args.count):
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)
        stamps.append([msg.header.stamp.sec, msg.header.stamp.nanosec])
        time.sleep(max(0.0, start + (i + 1) / args.rate - time.monotonic()))
    elapsed = time.monotonic() - start
    time.sleep(2.0)  # reliable repairs finish before the writer goes
    print(json.dumps({"published": len(stamps), "stamps": stamps, "rate_hz": len(stamps) / elapsed}), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--sizes: {text!r} is not WIDTHxHEIGHT") from None
    return width, height


def publish(size: str, encoding: str, qos: str, rate: float, count: int, frame_id: str) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    if qos.endswith("+shm"):
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    result = subprocess.run([sys.executable, __file__, "--role", "publisher", "--size", size, "--encoding", encoding,
                             "--qos", qos.split("+")[0], "--rate", str(rate), "--count", str(count), "--frame-id",
                             frame_id], env=env, capture_output=True, text=True, timeout=count / rate + 120)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"publisher failed ({result.returncode}): {result.stderr[-2000:]}")
    return json.loads(lines[-1])


# ------------------------------------------------------------------------------------------------ listener (this process)
class Listener:
    """Counts images (depth_node's input QoS) or depth images (default QoS) by frame_id, and depth_node's /diagnostics."""

    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import Image

        from avs_depth_ros.qos import MatchingSubscription

        rclpy.init()
        self.node = rclpy.create_node("bench_listener")
        self.images: dict[str, int] = {}
        self.depth: dict[str, list[tuple[int, int]]] = {}
        self.diagnostics: dict[str, str] = {}
        self._lock = threading.Lock()
        self.image_sub = MatchingSubscription(self.node, Image, IMAGE_TOPIC, self._on_image, 1)
        self.node.create_subscription(Image, "/avs/metric_depth", self._on_depth, QoSProfile(depth=10))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, QoSProfile(depth=10))
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def _on_image(self, msg: Any) -> None:
        with self._lock:
            self.images[msg.header.frame_id] = self.images.get(msg.header.frame_id, 0) + 1

    def _on_depth(self, msg: Any) -> None:
        with self._lock:
            self.depth.setdefault(msg.header.frame_id, []).append((msg.header.stamp.sec, msg.header.stamp.nanosec))

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name.startswith("depth_node"):
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def depth_node_counts(self) -> tuple[int, int]:
        d = self.diagnostics
        return int(d.get("images_in", 0)), int(d.get("frames_out", 0))

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown()


def start_depth_node(echoes: str, profile: bool) -> list[subprocess.Popen]:
    env = dict(os.environ)
    if profile:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    procs = [subprocess.Popen([sys.executable, "-m", "avs_depth_ros.depth_node"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    if echoes == "sim":
        procs.append(subprocess.Popen([sys.executable, "-m", "avs_depth_ros.echo_node", "--ros-args", "-p",
                                       "backend:=sim"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.1)


def run_case(listener: Listener, target: str, size: str, encoding: str, qos: str, rate: float,
             count: int) -> dict[str, Any]:
    frame_id = f"{target}_{size}_{encoding}_{qos}_{rate:g}".replace("+", "_")
    before = listener.depth_node_counts()
    sent = publish(size, encoding, qos, rate, count, frame_id)
    time.sleep(2.5)  # the last depth images and a diagnostics period
    after = listener.depth_node_counts()
    stamps = {tuple(s) for s in sent["stamps"]}
    depth = listener.depth.get(frame_id, [])
    return {"target": target, "size": size, "encoding": encoding, "qos": qos, "rate": rate,
            "published": sent["published"], "publisher_rate_hz": round(sent["rate_hz"], 2),
            "received": listener.images.get(frame_id, 0) if target == "transport" else after[0] - before[0],
            "depth_published": after[1] - before[1] if target == "depth_node" else None,
            "depth_heard_with_header": sum(1 for s in depth if s in stamps) if target == "depth_node" else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["run", "publisher"], default="run", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--frame-id", help=argparse.SUPPRESS)
    parser.add_argument("--encoding", default="rgb8", help=argparse.SUPPRESS)
    parser.add_argument("--target", choices=["transport", "depth_node", "both"], default="both")
    parser.add_argument("--sizes", nargs="+", default=["1280x720", "1920x1080"])
    parser.add_argument("--encodings", nargs="+", default=["rgb8"], choices=["rgb8", "bgr8"])
    parser.add_argument("--qos", nargs="+", default=["reliable", "reliable+shm", "best_effort", "best_effort+shm"],
                        choices=["reliable", "reliable+shm", "best_effort", "best_effort+shm"])
    parser.add_argument("--rates", nargs="+", type=float, default=[10.0, 30.0])
    parser.add_argument("--count", type=int, default=100, help="images per case (default 100)")
    parser.add_argument("--echoes", choices=["sim", "none"], default="sim", help="echo source for depth_node")
    parser.add_argument("--depth-node-profile", action="store_true", help="load config/fastdds_large_messages.xml in "
                        "depth_node's process (for best-effort listeners of its full-resolution depth)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.role == "publisher":
        args.qos = args.qos[0] if isinstance(args.qos, list) else args.qos
        return run_publisher(args)
    targets = ["transport", "depth_node"] if args.target == "both" else [args.target]
    listener = Listener()
    rows: list[dict[str, Any]] = []
    procs: list[subprocess.Popen] = []
    try:
        for target in targets:
            if target == "depth_node":
                procs = start_depth_node(args.echoes, args.depth_node_profile)
                wait_for(lambda: bool(listener.diagnostics), 180, "depth_node's first /diagnostics")
            for size in args.sizes:
                for encoding in args.encodings:
                    for qos in args.qos:
                        for rate in args.rates:
                            row = run_case(listener, target, size, encoding, qos, rate, args.count)
                            rows.append(row)
                            print(format_row(row), flush=True)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=20)
        listener.close()
    print(f"load average: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def format_row(row: dict[str, Any]) -> str:
    text = (f"{row['target']:>10} {row['size']:>9} {row['encoding']} {row['qos']:>15} {row['rate']:>4g} Hz: "
            f"published {row['published']} ({row['publisher_rate_hz']} Hz), received {row['received']}")
    if row["target"] == "depth_node":
        text += f", depth published {row['depth_published']}, heard with the image's header {row['depth_heard_with_header']}"
    return text


if __name__ == "__main__":
    sys.exit(main())
