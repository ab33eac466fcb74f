"""depth_node's buffers stay bounded by count and age under the conditions that made the echo store grow without bound
(600 echoes, 42 MB in the issue's test): no subscriber, a camera that is down, rejected images, an Only-RGB model, and
message_filters importable (as in every full ROS 2 install, where the node used to pick an unbounded store).

Each test feeds 600 real-sized echoes (2 x 8820 float32 samples, 0.2 s at 44.1 kHz: 70 KB each) to the node's
callbacks and measures what stays allocated with tracemalloc (numpy reports its buffers to it).
"""

from __future__ import annotations

import sys
import time
import tracemalloc
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fault_tools import tiny_avsnet_checkpoint

pytestmark = pytest.mark.ros

ECHOES = 600
ECHO_BYTES = 2 * 8820 * 4
QUEUE = 16  # echo_queue_size (its default)


@pytest.fixture
def context() -> Iterator[Any]:
    rclpy = pytest.importorskip("rclpy")
    pytest.importorskip("avs_depth_msgs.msg")
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        yield ctx
    finally:
        rclpy.try_shutdown(context=ctx)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("node")
    return {"echo": tiny_avsnet_checkpoint(folder / "avsnet"),
            "rgb": tiny_avsnet_checkpoint(folder / "avsnet_rgb", use_echo=False)}


def make_node(context: Any, checkpoints: dict[str, Path], avsnet: str = "echo") -> Any:
    import torch
    from rclpy.parameter import Parameter

    from avs_depth_ros.depth_node import DepthNode

    threads = torch.get_num_threads()
    params = {"avsnet_checkpoint": str(checkpoints[avsnet]), "relative_checkpoint": str(checkpoints["rgb"]),
              "device": "cpu", "warmup_iterations": 0, "echo_queue_size": QUEUE}
    node = DepthNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    torch.set_num_threads(threads)
    return node


def echo(node: Any, stamp_ns: int, rng: np.random.Generator) -> Any:
    from avs_depth_core.audio import BATVISION_CHIRP
    from avs_depth_ros.conversions import echo_msg, header

    samples = rng.normal(0.0, 0.05, (2, 8820)).astype(np.float32)
    return echo_msg(samples, 44_100, BATVISION_CHIRP, 0, 343.0, "left,right", header(stamp_ns, "mic"))


def image(stamp_ns: int, encoding: str = "rgb8") -> Any:
    from avs_depth_ros.conversions import header, image_msg

    if encoding == "rgb8":
        return image_msg(np.zeros((32, 64, 3), np.uint8), "rgb8", header(stamp_ns, "cam"))
    return image_msg(np.zeros((32, 64), np.uint16), encoding, header(stamp_ns, "cam"))


def feed(node: Any, images: str | None = None) -> tuple[int, int]:
    """600 echoes at 10 Hz stamps ending now (and an image after each, of `images` encoding); returns (echoes kept,
    bytes still allocated)."""
    rng = np.random.default_rng(0)
    messages = [echo(node, 0, rng) for _ in range(ECHOES)]  # built first: only what the node keeps is measured
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i, msg in enumerate(messages):
            now = node.get_clock().now().nanoseconds
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now - (ECHOES - i) * 1_000_000, 1_000_000_000)
            node._on_echo(msg)
            if images is not None:
                node._on_image(image(now, images))
            messages[i] = None  # the node's copy is what stays, if anything
        deadline = time.monotonic() + 10.0
        while node._worker.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return len(node._echoes), grown


def bounded(kept: int, grown: int) -> None:
    assert kept <= QUEUE
    assert grown < (QUEUE + 4) * ECHO_BYTES, f"{grown / 1e6:.1f} MB kept for {ECHOES} echoes (unbounded: 42 MB)"


def subscribe(context: Any, node: Any) -> Any:
    """A subscriber to the metric depth, so the node does work; returns its node (destroy it after)."""
    import rclpy
    from sensor_msgs.msg import Image

    listener = rclpy.create_node("listener", context=context)
    listener.create_subscription(Image, "avs/metric_depth", lambda _msg: None, 1)
    deadline = time.monotonic() + 10.0
    while not node.has_subscribers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert node.has_subscribers()
    return listener


def test_no_subscriber(context, checkpoints):
    node = make_node(context, checkpoints)
    try:
        bounded(*feed(node, images="rgb8"))
        assert node.counters.idle == ECHOES
    finally:
        node.destroy_node()


def test_camera_down_then_echoes_age_out(context, checkpoints):
    node = make_node(context, checkpoints)
    listener = subscribe(context, node)
    try:
        bounded(*feed(node))
        time.sleep(node._echo_max_age_s + 0.2)  # nothing arrives any more
        node._publish_diagnostics()  # the diagnostics timer prunes the store by the clock
        assert len(node._echoes) == 0
    finally:
        listener.destroy_node()
        node.destroy_node()


def test_rejected_images(context, checkpoints):
    node = make_node(context, checkpoints)
    listener = subscribe(context, node)
    try:
        bounded(*feed(node, images="16UC1"))
        assert node.counters.rejected.get("image_encoding", 0) > 0
    finally:
        listener.destroy_node()
        node.destroy_node()


def test_only_rgb_model_keeps_no_echo(context, checkpoints):
    node = make_node(context, checkpoints, avsnet="rgb")
    try:
        kept, grown = feed(node)
        assert kept == 0 and grown < 4 * ECHO_BYTES
    finally:
        node.destroy_node()


def test_with_message_filters_installed(context, checkpoints, monkeypatch):
    """A full ROS 2 install has message_filters; the node must not switch to a store that keeps every echo."""
    stored: list[Any] = []

    class Cache:  # what an unbounded time-indexed store would do
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def add(self, msg: Any) -> None:
            stored.append(msg)

    fake = types.ModuleType("message_filters")
    fake.Cache, fake.Subscriber = Cache, lambda *args, **kwargs: types.SimpleNamespace(registerCallback=lambda cb: None)
    monkeypatch.setitem(sys.modules, "message_filters", fake)
    monkeypatch.delitem(sys.modules, "avs_depth_ros.depth_node", raising=False)
    node = make_node(context, checkpoints)
    try:
        bounded(*feed(node))
        assert stored == []
    finally:
        node.destroy_node()
