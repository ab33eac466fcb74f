"""depth_node over real rclpy on loopback: image + echo in, 32FC1 depth with the image's header out; bad input; the hold
policy; dropping stale frames; no work without subscribers; pairing by the core rule."""

from __future__ import annotations

import math
import re
import threading
import time
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("avs_depth_msgs.msg")

from avs_depth_msgs.msg import EchoStamped, ScaleEstimate
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from avs_depth_core.audio.chirp import BATVISION_CHIRP
from avs_depth_core.data.messages import image_to_depth, stamp_to_ns
from avs_depth_ros.conversions import camera_info_msg, echo_msg, header, image_msg
from avs_depth_ros.depth_node import DepthNode

pytestmark = pytest.mark.timeout(90)
SEC = 1_000_000_000
H, W = 48, 80
K = np.array([[60.0, 0, 40], [0, 60, 24], [0, 0, 1]])


class Feeder(Node):
    """Stands in for a camera driver and echo_node."""

    def __init__(self, context: Any) -> None:
        super().__init__("test_feeder", context=context)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.images = self.create_publisher(Image, "camera/color/image_raw", qos)
        self.infos = self.create_publisher(CameraInfo, "camera/color/camera_info", qos)
        self.echoes = self.create_publisher(EchoStamped, "audio/echo", qos)
        self.rng = np.random.default_rng(0)

    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def image(self, stamp_ns: int, encoding: str = "rgb8", size: tuple[int, int] = (H, W), frame_id: str = "cam") -> Any:
        channels = {"rgb8": 3, "bgr8": 3, "mono8": 1, "bgra8": 4, "16UC1": 1}[encoding]
        dtype = np.uint16 if encoding == "16UC1" else np.uint8
        pixels = self.rng.integers(0, 255, (*size, channels)).astype(dtype)
        msg = image_msg(pixels if channels > 1 else pixels[..., 0], encoding, header(stamp_ns, frame_id))
        self.images.publish(msg)
        return msg.header

    def info(self, stamp_ns: int, size: tuple[int, int] = (H, W)) -> None:
        self.infos.publish(camera_info_msg(K, size[1], size[0], header(stamp_ns, "cam")))

    def echo(self, stamp_ns: int, sample_rate: int = 44100, samples: np.ndarray | None = None) -> None:
        if samples is None:
            samples = self.rng.uniform(-0.3, 0.3, (2, 8000)).astype(np.float32)
        self.echoes.publish(echo_msg(samples, sample_rate, BATVISION_CHIRP, 20, 343.0, "left,right",
                                     header(stamp_ns, "mic_array")))


class Listener(Node):
    """An independent subscriber with default (reliable) QoS, as rviz or a planner would have."""

    def __init__(self, context: Any, name: str = "test_listener") -> None:
        super().__init__(name, context=context)
        self.depth: list[Image] = []
        self.info: list[CameraInfo] = []
        self.scale: list[ScaleEstimate] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.create_subscription(Image, "avs/metric_depth", self.depth.append, 10)
        self.create_subscription(CameraInfo, "avs/metric_depth/camera_info", self.info.append, 10)
        self.create_subscription(ScaleEstimate, "avs/scale", self.scale.append, 10)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)


def make_depth_node(context: Any, checkpoints: dict[str, str], pipeline: Any = None, **params: Any) -> DepthNode:
    values = {**checkpoints, "device": "cpu", "warmup_iterations": 1, **params}
    return DepthNode(context=context, pipeline=pipeline,
                     parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])


def connect(spinner: Any, node: DepthNode, feeder: Feeder, listener: Listener | None) -> None:
    spinner.add(*(n for n in (node, feeder, listener) if n is not None))
    spinner.wait_for(lambda: all(p.get_subscription_count() > 0 for p in (feeder.images, feeder.infos, feeder.echoes)),
                     15, "depth_node to discover the feeder")
    if listener is not None:
        spinner.wait_for(node.has_subscribers, 15, "the listener to discover depth_node")
        spinner.wait_for(lambda: node._pub_metric.get_subscription_count() > 0 and
                         node._pub_scale.get_subscription_count() > 0, 15, "all listener subscriptions")


def send_frame(spinner: Any, node: DepthNode, feeder: Feeder, stamp_ns: int, **image_kwargs: Any) -> Any:
    """Publish one image and wait until depth_node has dealt with it (published, dropped or rejected)."""
    before = _handled(node)
    hdr = feeder.image(stamp_ns, **image_kwargs)
    spinner.wait_for(lambda: _handled(node) > before, 20, f"depth_node to handle the image stamped {stamp_ns}")
    return hdr


def _handled(node: DepthNode) -> int:
    c = node.counters
    return c.frames_out + c.dropped_stale + c.idle + sum(v for k, v in c.rejected.items() if k.startswith(("image", "model")))


def send_echo(spinner: Any, node: DepthNode, feeder: Feeder, stamp_ns: int, **kwargs: Any) -> None:
    before = node.counters.echoes_in
    feeder.echo(stamp_ns, **kwargs)
    spinner.wait_for(lambda: node.counters.echoes_in > before, 10, "depth_node to receive the echo")


def test_depth_has_the_image_header_camera_info_scale_and_diagnostics(spinner, ros_context, tiny_checkpoints):
    node = make_depth_node(ros_context, tiny_checkpoints)
    feeder, listener = Feeder(ros_context), Listener(ros_context)
    connect(spinner, node, feeder, listener)
    now = feeder.now_ns()
    feeder.info(now)
    spinner.wait_for(lambda: node._camera_info is not None, 10, "camera_info")
    send_echo(spinner, node, feeder, now - SEC // 20)
    hdr = send_frame(spinner, node, feeder, now, frame_id="camera_color_optical_frame")
    spinner.wait_for(lambda: listener.depth and listener.info and listener.scale, 10, "depth, camera_info and scale")

    depth = listener.depth[0]
    assert depth.encoding == "32FC1" and (depth.height, depth.width, depth.step) == (H, W, 4 * W)
    assert depth.header.stamp == hdr.stamp and depth.header.frame_id == "camera_color_optical_frame"
    metres = image_to_depth(depth)
    cfg = node.pipeline.cfg
    assert np.isfinite(metres).all() and metres.min() >= cfg.min_depth and metres.max() <= cfg.max_depth
    info = listener.info[0]
    assert info.header == depth.header and (info.width, info.height) == (W, H) and list(info.k) == list(K.reshape(-1))
    scale = listener.scale[0]
    assert scale.header == depth.header and scale.echo_used and not scale.held and scale.method == "median"
    assert scale.scale > 0 and scale.pixels > 0 and scale.echo_age_s == pytest.approx(0.05, abs=1e-6)

    spinner.wait_for(lambda: any(int(_diag_values(d).get("frames_out", 0)) >= 1 for d in listener.diagnostics), 10,
                     "diagnostics reporting the published frame")
    values = next(_diag_values(d) for d in reversed(listener.diagnostics) if int(_diag_values(d).get("frames_out", 0)))
    assert float(values["latency_ms_max"]) > 0 or values["latency_ms_max"] == "-inf"  # reset after each period
    assert {"output_rate_hz", "latency_ms_mean", "dropped_frames", "rejected", "echo_age_s"} <= set(values)
    assert listener.diagnostics[-1].status[0].name == "depth_node: metric depth"


def _diag_values(array: DiagnosticArray) -> dict[str, str]:
    return {kv.key: kv.value for status in array.status for kv in status.values}


def test_bad_input_is_rejected_by_name_and_the_node_keeps_running(spinner, ros_context, tiny_checkpoints, caplog):
    node = make_depth_node(ros_context, tiny_checkpoints)
    feeder, listener = Feeder(ros_context), Listener(ros_context)
    connect(spinner, node, feeder, listener)
    errors: list[str] = []
    node._report._emit = errors.append  # what the node logs, captured
    now = feeder.now_ns()

    send_frame(spinner, node, feeder, now, encoding="bgra8")
    send_frame(spinner, node, feeder, now + 1, encoding="16UC1")
    send_frame(spinner, node, feeder, feeder.now_ns() + 10 * SEC)
    send_frame(spinner, node, feeder, feeder.now_ns() - 5 * SEC)
    assert node.counters.rejected["image_encoding"] == 2 and node.counters.rejected["image_future_stamp"] == 1
    assert node.counters.dropped_stale == 1 and not listener.depth
    assert any("'bgra8' is not accepted; expected one of ('rgb8', 'bgr8', 'mono8')" in e for e in errors)
    assert any(re.search(r"stamped (9\.9\d\d|10\.0\d\d) s in the future", e) for e in errors)

    send_echo(spinner, node, feeder, feeder.now_ns(), sample_rate=16000)
    send_echo(spinner, node, feeder, feeder.now_ns(), samples=np.full((2, 8000), np.nan, np.float32))
    send_echo(spinner, node, feeder, feeder.now_ns() + 10 * SEC)
    send_echo(spinner, node, feeder, feeder.now_ns() - 10 * SEC)
    assert node.counters.rejected["echo_unusable"] == 1 and node.counters.rejected["echo_malformed"] == 1
    assert node.counters.rejected["echo_future_stamp"] == 1 and node.counters.rejected["echo_stale"] == 1
    assert any("16000 Hz, expected 44100 Hz" in e for e in errors)

    # a mismatched camera_info: depth still published, camera_info not
    feeder.info(feeder.now_ns(), size=(480, 640))
    spinner.wait_for(lambda: node._camera_info is not None, 10, "camera_info")
    stamp = feeder.now_ns()
    send_echo(spinner, node, feeder, stamp)
    hdr = send_frame(spinner, node, feeder, stamp, encoding="bgr8")
    spinner.wait_for(lambda: listener.depth, 10, "depth after bad input")
    assert listener.depth[-1].header.stamp == hdr.stamp and node.counters.rejected["camera_info_size"] == 1
    assert any("camera_info is 640x480 but the image is 80x48" in e for e in errors)
    time.sleep(0.3)
    assert not listener.info

    hdr = send_frame(spinner, node, feeder, feeder.now_ns(), encoding="mono8", size=(H + 16, W + 32))
    spinner.wait_for(lambda: len(listener.depth) == 2, 10, "depth for a mono8 image of another size")
    assert (listener.depth[-1].height, listener.depth[-1].width) == (H + 16, W + 32)


def test_warnings_and_errors_on_the_node_logger_do_not_collide(spinner, ros_context, tiny_checkpoints):
    """rclpy raises when one logging call site logs at two severities; the node's warning and error reporters share
    a logger, so they must not share a call site (this once stopped bringup's executor)."""
    node = make_depth_node(ros_context, tiny_checkpoints)
    feeder, listener = Feeder(ros_context), Listener(ros_context)
    connect(spinner, node, feeder, listener)
    send_frame(spinner, node, feeder, feeder.now_ns() - 5 * SEC)  # warning: stale image
    send_frame(spinner, node, feeder, feeder.now_ns(), encoding="bgra8")  # error: encoding
    send_frame(spinner, node, feeder, feeder.now_ns())  # warning: no echo; depth published (NaN)
    spinner.wait_for(lambda: listener.depth, 10, "depth after a warning and an error")
    assert node.error is None and node.counters.rejected["image_encoding"] == 1


def test_throttled_reporters_of_two_severities_on_one_rclpy_logger():
    import rclpy.logging

    from avs_depth_ros.stats import ThrottledReporter, log_at

    logger = rclpy.logging.get_logger("avs_depth_test_reporters")
    error, warning = ThrottledReporter(logger.error), ThrottledReporter(logger.warning)
    for k in range(3):
        assert error(f"e{k}", "an error") and warning(f"w{k}", "a warning")
    with pytest.raises(ValueError, match="severity"):
        log_at(logger, "loud")


def test_hold_policy_without_fresh_echoes(spinner, ros_context, tiny_checkpoints):
    node = make_depth_node(ros_context, tiny_checkpoints, max_image_age_s=10.0, max_scale_hold_s=1.0)
    feeder, listener = Feeder(ros_context), Listener(ros_context)
    connect(spinner, node, feeder, listener)
    t0 = feeder.now_ns() - 3 * SEC
    send_frame(spinner, node, feeder, t0 - SEC)  # no echo ever: NaN depth, said so
    send_echo(spinner, node, feeder, t0)
    for stamp in (t0, t0 + SEC // 2, t0 + 2 * SEC):  # fresh, held 0.5 s (echo 0.5 s away > tolerance), expired
        send_frame(spinner, node, feeder, stamp)
    spinner.wait_for(lambda: len(listener.scale) == 4 and len(listener.depth) == 4, 10, "four frames")
    none_yet, fresh, held, expired = listener.scale
    assert math.isnan(none_yet.scale) and not none_yet.echo_used and np.isnan(image_to_depth(listener.depth[0])).all()
    assert fresh.echo_used and not fresh.held and fresh.scale > 0
    assert held.held and held.held_for_s == pytest.approx(0.5) and held.scale == pytest.approx(fresh.scale)
    assert not held.echo_used and math.isnan(held.echo_age_s)
    assert np.isfinite(image_to_depth(listener.depth[2])).all()
    assert math.isnan(expired.scale) and not expired.held and np.isnan(image_to_depth(listener.depth[3])).all()


class GatedPipeline:
    """The real pipeline behind a gate, so a test can hold inference while inputs arrive."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.stamps: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, rgb, echo, stamp_ns, **kwargs):
        self.entered.set()
        assert self.gate.wait(20.0)
        self.stamps.append(stamp_ns)
        return self.inner(rgb, echo, stamp_ns, **kwargs)


def test_stale_frames_are_dropped_not_queued_and_inputs_flow_during_inference(spinner, ros_context, tiny_checkpoints):
    from avs_depth_core.pipeline import DepthPipeline, PipelineSettings

    gated = GatedPipeline(DepthPipeline.from_settings(PipelineSettings.from_params({**tiny_checkpoints, "device": "cpu"})))
    node = make_depth_node(ros_context, {}, pipeline=gated)
    feeder, listener = Feeder(ros_context), Listener(ros_context)
    connect(spinner, node, feeder, listener)
    now = feeder.now_ns()
    feeder.image(now)
    spinner.wait_for(gated.entered.is_set, 10, "inference to start")
    stamps = [now + k * SEC // 100 for k in range(1, 5)]
    for stamp in stamps:  # arrive while the model is busy
        before = node.counters.images_in
        feeder.image(stamp)
        spinner.wait_for(lambda b=before: node.counters.images_in > b, 10, "the image callback (not blocked)")
    send_echo(spinner, node, feeder, now)  # the echo callback runs during inference too
    gated.gate.set()
    spinner.wait_for(lambda: len(listener.depth) == 2, 10, "the first and the newest frame")
    time.sleep(0.3)
    assert gated.stamps == [now, stamps[-1]] and len(listener.depth) == 2
    assert node.counters.dropped_stale == 3 and node.counters.frames_out == 2


def test_a_bug_in_inference_ends_the_node_with_a_fatal_line(spinner, ros_context, tiny_checkpoints):
    """Bad input is rejected per frame; anything else raised in the inference thread stops the node, never silently."""
    from avs_depth_core.pipeline import DepthPipeline, PipelineSettings

    class BrokenPipeline(GatedPipeline):
        def __call__(self, rgb, echo, stamp_ns, **kwargs):
            raise KeyError("a bug in the model code")

    broken = BrokenPipeline(DepthPipeline.from_settings(PipelineSettings.from_params({**tiny_checkpoints, "device": "cpu"})))
    node = make_depth_node(ros_context, {}, pipeline=broken)
    feeder, listener = Feeder(ros_context), Listener(ros_context)
    connect(spinner, node, feeder, listener)
    feeder.image(feeder.now_ns())
    deadline = time.monotonic() + 10
    while ros_context.ok() and time.monotonic() < deadline:  # the spinner ends with the context: poll, do not spin
        time.sleep(0.02)
    assert not ros_context.ok(), "the node shut its context down"
    assert isinstance(node.error, KeyError) and node.counters.frames_out == 0


def test_no_work_while_nobody_subscribes(spinner, ros_context, tiny_checkpoints):
    node = make_depth_node(ros_context, tiny_checkpoints)
    feeder = Feeder(ros_context)
    connect(spinner, node, feeder, None)
    for _ in range(3):
        send_frame(spinner, node, feeder, feeder.now_ns())
    assert node.counters.idle == 3 and node.counters.frames_out == 0 and node.pipeline.tracker.counts["fresh"] == 0


def test_echoes_pair_by_the_core_rule(spinner, ros_context, tiny_checkpoints):
    """The nearest echo within echo_tolerance_s (avs_depth_core.data.pairing, as the bag datasets pair), else none."""
    node = make_depth_node(ros_context, tiny_checkpoints, max_image_age_s=10.0)
    feeder, listener = Feeder(ros_context), Listener(ros_context)
    connect(spinner, node, feeder, listener)
    t0 = feeder.now_ns() - 2 * SEC
    for offset in (-300, -100, 120):  # ms; nearest to the image is -100
        send_echo(spinner, node, feeder, t0 + offset * 1_000_000)
    send_frame(spinner, node, feeder, t0)
    send_frame(spinner, node, feeder, t0 + SEC)  # nothing within 0.35 s
    spinner.wait_for(lambda: len(listener.scale) == 2, 10, "two scale estimates")
    assert listener.scale[0].echo_age_s == pytest.approx(0.1, abs=1e-6) and listener.scale[0].echo_used
    assert not listener.scale[1].echo_used and listener.scale[1].held
    assert stamp_to_ns(listener.depth[0].header.stamp) == t0
