"""`avs-depth-ros bringup --sim` watched by an independent rclpy subscriber, and `avs-depth-ros record` into a rosbag2."""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("avs_depth_msgs.msg")

from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from avs_depth_core.data import topics
from avs_depth_core.data.bag import open_bag, read_topic
from avs_depth_core.data.messages import echo_to_array, image_to_depth, image_to_rgb, stamp_to_ns
from avs_depth_ros.sim_sensors_node import SimSensorsNode

pytestmark = pytest.mark.timeout(120)
CLI = [sys.executable, "-m", "avs_depth_ros.cli"]


class Watcher(Node):
    """A user's subscriber in another process: default (reliable) QoS on the depth, best effort on the camera."""

    def __init__(self, context: Any) -> None:
        super().__init__("independent_watcher", context=context)
        self.camera: dict[int, Any] = {}
        self.depth: list[Image] = []
        self.create_subscription(Image, "camera/color/image_raw",
                                 lambda m: self.camera.__setitem__(stamp_to_ns(m.header.stamp), m.header),
                                 QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT))
        self.create_subscription(Image, "/avs/metric_depth", self.depth.append, 10)


def test_bringup_sim_serves_depth_to_an_independent_subscriber(spinner, ros_context, tiny_params_file, child_env,
                                                               tmp_path):
    watcher = Watcher(ros_context)
    spinner.add(watcher)
    figures = tmp_path / "figures"
    process = subprocess.Popen([*CLI, "bringup", "--sim", "--duration", "60", "--params-file", str(tiny_params_file),
                                "--figures", str(figures), "--figure-count", "2"], env=child_env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        spinner.wait_for(lambda: len(watcher.depth) >= 8 or process.poll() is not None, 90, "eight depth images")
    finally:
        process.send_signal(signal.SIGTERM)  # stops like Ctrl-C: summary and figures still written
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert len(watcher.depth) >= 8, output
    # every depth carries the header of a camera image (the ones stamped before this watcher saw the camera aside)
    watched = [d for d in watcher.depth if stamp_to_ns(d.header.stamp) >= min(watcher.camera)]
    assert len(watched) >= len(watcher.depth) - 2
    for depth in watched:
        assert depth.encoding == "32FC1" and (depth.height, depth.width) == (96, 160)
        assert depth.header == watcher.camera.get(stamp_to_ns(depth.header.stamp)), "header of a published image"
    finite = [np.isfinite(image_to_depth(d)).mean() for d in watcher.depth]
    first = next(i for i, f in enumerate(finite) if f > 0)
    after = finite[first:]
    # NaN until the first echo has arrived; after it "mostly finite": a frame may be NaN only if the scale hold ran out
    # (no fresh echo for max_scale_hold_s), which a badly overloaded machine can cause, so allow at most one in ten
    assert first <= 2 and all(f in (0.0, 1.0) for f in after), (finite, output)
    assert sum(f == 0.0 for f in after) <= max(1, len(after) // 10), (finite, output)
    values = np.concatenate([image_to_depth(d)[np.isfinite(image_to_depth(d))] for d in watcher.depth])
    assert values.min() >= 1e-3 and values.max() <= 30.0  # the model's depth range
    assert "summary after" in output and "with the header of a published camera image" in output
    written = sorted(p.name for p in figures.iterdir())
    assert written and set(written) <= {"depth_00.png", "depth_01.png"} and f"wrote {len(written)} figures" in output


def test_bringup_reports_configuration_errors(tmp_path, child_env):
    result = subprocess.run([*CLI, "bringup", "--sim", "--params-file", str(tmp_path / "missing.yaml")],
                            capture_output=True, text=True, timeout=60, env=child_env)
    assert result.returncode == 2 and "missing.yaml: params file not found" in result.stderr


def test_record_writes_the_sensor_topics_into_a_bag(spinner, ros_context, child_env, tmp_path):
    sim = SimSensorsNode(context=ros_context, parameter_overrides=[
        Parameter("height", value=48), Parameter("width", value=80), Parameter("loop_frames", value=5)])
    spinner.add(sim)
    bag = tmp_path / "recorded"
    result = subprocess.run([*CLI, "record", "--out", str(bag), "--duration", "4", "--storage", "sqlite3"],
                            capture_output=True, text=True, timeout=90, env=child_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{topics.IMAGE}: " in result.stdout and "written" in result.stdout
    with open_bag(bag) as reader:
        images = list(read_topic(reader, topics.IMAGE))
        depths = {m.stamp_ns for m in read_topic(reader, topics.DEPTH)}
        infos = {m.stamp_ns for m in read_topic(reader, topics.CAMERA_INFO)}
        echoes = list(read_topic(reader, topics.ECHO))
    assert len(images) >= 5 and len(echoes) >= 3
    assert {m.stamp_ns for m in images} <= depths | {images[-1].stamp_ns} and len(infos) >= len(images) - 1
    assert image_to_rgb(images[0].msg).shape == (48, 80, 3)
    assert echo_to_array(echoes[0].msg).shape[0] == 2 and echoes[0].msg.sample_rate == 44100

    again = subprocess.run([*CLI, "record", "--out", str(bag), "--duration", "1"], capture_output=True, text=True,
                           timeout=60, env=child_env)
    assert again.returncode == 2 and "already exists" in again.stderr
