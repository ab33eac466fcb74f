"""Camera-sized images between processes: depth_node with its defaults (bundled models, CPU) fed by a separate plain
rclpy camera publisher at 1280x720, its depth heard by a third process (this one) with the image's header. And the
image subscription following a best-effort publisher (avs_depth_ros.qos.MatchingSubscription)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("avs_depth_msgs.msg")

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from avs_depth_ros.qos import MatchingSubscription

pytestmark = pytest.mark.timeout(240)
CAMERA = Path(__file__).resolve().parent / "fixtures" / "camera_publisher.py"


class DepthListener(Node):
    def __init__(self, context: Any) -> None:
        super().__init__("depth_listener", context=context)
        self.depth: list[tuple[str, tuple[int, int], int, int, str]] = []  # header, size and encoding, not the pixels
        self.diagnostics: dict[str, str] = {}
        self.create_subscription(Image, "/avs/metric_depth", self._on_depth, QoSProfile(depth=10))
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, QoSProfile(depth=10))

    def _on_depth(self, m: Image) -> None:
        self.depth.append((m.header.frame_id, (m.header.stamp.sec, m.header.stamp.nanosec), m.width, m.height,
                           m.encoding))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith("depth_node"):
                self.diagnostics = {kv.key: kv.value for kv in status.values}


def test_depth_node_defaults_take_720p_from_a_reliable_driver_in_another_process(child_env, ros_context, spinner):
    listener = DepthListener(ros_context)
    spinner.add(listener)
    depth_node = subprocess.Popen([sys.executable, "-m", "avs_depth_ros.depth_node"], env=child_env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        spinner.wait_for(lambda: bool(listener.diagnostics), 120, "depth_node's /diagnostics (models loaded)")
        # 2 Hz: the transport, not the speed (10 Hz on 2 cores is a benchmark: benchmarks/image_transport.py)
        camera = subprocess.run([sys.executable, str(CAMERA), "1280", "720", "2", "20", "reliable"], env=child_env,
                                capture_output=True, text=True, timeout=180)
        assert camera.returncode == 0, camera.stderr
        published = {tuple(s) for s in json.loads(camera.stdout.strip().splitlines()[-1])}
        time.sleep(1.0)
    finally:
        depth_node.terminate()
        output = depth_node.communicate(timeout=30)[0]
    heard = [stamp for frame_id, stamp, *_ in listener.depth if frame_id == "test_camera_optical_frame"]
    assert len(published) == 20
    # most, not all: on the shared 2-core machine at CPU load 10+ a frame now and then waited past max_image_age_s
    assert sum(s in published for s in heard) >= 0.75 * len(published), (len(heard), output[-3000:])
    assert all(size == (1280, 720, "32FC1") for *_, size in [(d[:2], d[2:]) for d in listener.depth])


def test_image_subscription_follows_a_best_effort_publisher_and_back(ros_context, spinner):
    node = Node("matching_test", context=ros_context)
    got: list[Image] = []
    sub = MatchingSubscription(node, Image, "qos_probe", got.append, 1)
    spinner.add(node)
    assert sub.reliability == "best_available"
    small = Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(12))

    def publish_until(pub: Any, what: str) -> None:
        count = len(got)
        deadline = time.monotonic() + 20
        while len(got) == count and time.monotonic() < deadline:
            pub.publish(small)
            time.sleep(0.05)
        assert len(got) > count, what

    best_effort = node.create_publisher(Image, "qos_probe", qos_profile_sensor_data)
    spinner.wait_for(lambda: sub.reliability == "best_effort", 20, "the switch to best effort")
    publish_until(best_effort, "a best-effort sample")
    node.destroy_publisher(best_effort)
    spinner.wait_for(lambda: sub.reliability == "best_available", 20, "the switch back once the publisher left")
    reliable = node.create_publisher(Image, "qos_probe", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    publish_until(reliable, "a reliable sample")
    assert sub.switches == 2
