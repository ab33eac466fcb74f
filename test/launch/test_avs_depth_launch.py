"""launch/avs_depth.launch.py under launch_pytest: with use_sim:=true in a namespace, an independent subscriber receives
32FC1 depth carrying the header of a published camera image.

Needs a full ROS 2 install (launch, launch_ros, launch_pytest, ament_index_python) with this package built and
sourced; skipped cleanly elsewhere (the PyPI wheels have no launch).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

launch_pytest = pytest.importorskip("launch_pytest")
pytest.importorskip("launch_ros")
rclpy = pytest.importorskip("rclpy")
pytest.importorskip("avs_depth_msgs.msg")

from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from launch import LaunchDescription  # noqa: E402

# A launch fixture that fails at run time hangs the test (ros2/launch#732): always bounded.
pytestmark = pytest.mark.timeout(180)
NAMESPACE = "launch_test"


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory) -> dict[str, str]:
    import torch

    from avs_depth_core.models.avsnet import AVSNet, AVSNetConfig

    folder = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    small = dict(backbone="tiny", image_size=(64, 128), n_bins=16, bin_embedding_dim=32)
    return {"avsnet_checkpoint": str(AVSNet(AVSNetConfig(**small)).save(folder / "avsnet")),
            "relative_checkpoint": str(AVSNet(AVSNetConfig(**small, use_echo=False)).save(folder / "avsnet_rgb"))}


@launch_pytest.fixture
def avs_depth_sim(tiny_checkpoints):
    launch_file = Path(get_package_share_directory("avs_depth_ros")) / "launch" / "avs_depth.launch.py"
    arguments = {"use_sim": "true", "device": "cpu", "namespace": NAMESPACE, "log_level": "info", **tiny_checkpoints}
    return LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(launch_file)), launch_arguments=arguments.items()),
        launch_pytest.actions.ReadyToTest(),
    ])


@pytest.mark.launch(fixture=avs_depth_sim)
def test_launch_file_serves_metric_depth():
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("launch_test_listener", context=context)
    camera: dict[tuple[int, int], object] = {}
    depth: list[Image] = []
    node.create_subscription(Image, f"/{NAMESPACE}/camera/color/image_raw",
                             lambda m: camera.__setitem__((m.header.stamp.sec, m.header.stamp.nanosec), m.header),
                             QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT))
    node.create_subscription(Image, f"/{NAMESPACE}/avs/metric_depth", depth.append, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while len(depth) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(depth) >= 3, "no metric depth from the launched nodes within 120 s"
        for msg in depth:
            assert msg.encoding == "32FC1"
            assert camera.get((msg.header.stamp.sec, msg.header.stamp.nanosec)) == msg.header
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
