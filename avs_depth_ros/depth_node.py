"""depth_node: camera image (+ CameraInfo) and binaural echoes in, metric depth out (AVS-Net + relative depth + scale).

Topics (relative names, remappable):
  in   camera/color/image_raw (sensor_msgs/Image: rgb8, bgr8, mono8), camera/color/camera_info, audio/echo (EchoStamped);
       keep last 1 (images, camera_info) / echo_queue_size (echoes); images with the reliability the camera driver
       offers (avs_depth_ros.qos.MatchingSubscription), camera_info and echoes best effort; overridable with
       qos_overrides.<topic>.subscription.* parameters
  out  avs/metric_depth (32FC1 metres, NaN = no estimate, the image's header), avs/metric_depth/camera_info (the
       image's CameraInfo under the same header), avs/pseudo_metric_depth and avs/relative_depth (optional),
       avs/scale (ScaleEstimate), /diagnostics (rate, latency from the image stamp, dropped and rejected frames)

Threads: the input callbacks only check and store. Inference runs in the node's own worker thread
(avs_depth_ros.workers.LatestFrameWorker) on the newest image: a newer one replaces it (counted as dropped), nothing
queues, and a slow model never blocks the inputs or the parameter services. The node spins on a SingleThreadedExecutor
(avs_depth_ros.runner), the placement benchmarks/node_latency.py measured fastest with rclpy (README, Threads). Nothing is
computed while no one subscribes to an output. Echoes are paired with images by the core pairing rule
(avs_depth_core.data.pairing.EchoBuffer, bounded by echo_queue_size), the rule the bag datasets use.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from avs_depth_msgs.msg import EchoStamped, ScaleEstimate
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from avs_depth_core.data import topics
from avs_depth_core.data.messages import echo_to_array, image_to_rgb
from avs_depth_core.data.pairing import EchoBuffer
from avs_depth_core.pipeline import DepthPipeline, DepthResult, EchoInput, PipelineSettings
from avs_depth_ros.conversions import copy_camera_info, fill, image_msg, stamp_to_ns
from avs_depth_ros.params import DEPTH_NODE, declare_parameters
from avs_depth_ros.qos import MatchingSubscription, overridable, reliable_output, sensor_input
from avs_depth_ros.runner import node_main, shutdown_on_error
from avs_depth_ros.stats import RateMeter, Summary, ThrottledReporter
from avs_depth_ros.workers import LatestFrameWorker


@dataclass
class Counters:
    images_in: int = 0
    echoes_in: int = 0
    frames_out: int = 0
    dropped_stale: int = 0  # replaced by a newer frame before the model was free, or older than max_image_age_s
    idle: int = 0  # arrived while no one subscribed
    rejected: dict[str, int] = field(default_factory=dict)  # by reason: encoding, future_stamp, echo_rate, ...

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


class _EchoStore:
    """Echoes by emission stamp in the core EchoBuffer (bounded by count and age), matched to images by the core pairing
    rule. Thread-safe."""

    def __init__(self, tolerance_ns: int, size: int, max_age_ns: int) -> None:
        self._buffer = EchoBuffer(tolerance_ns, size, max_age_ns)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buffer)

    def push(self, stamp_ns: int, echo: EchoInput, now_ns: int) -> None:
        with self._lock:
            self._buffer.push(stamp_ns, echo)
            self._buffer.prune(now_ns)

    def prune(self, now_ns: int) -> None:
        with self._lock:
            self._buffer.prune(now_ns)

    def match(self, image_stamp_ns: int) -> EchoInput | None:
        with self._lock:
            found = self._buffer.match(image_stamp_ns)
        return None if found is None else found[0]


class DepthNode(Node):
    def __init__(self, *, pipeline: DepthPipeline | None = None, node_name: str = "depth_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params = p = declare_parameters(self, DEPTH_NODE)
        log = self.get_logger()
        self._report = ThrottledReporter(log.error)
        self._report_warn = ThrottledReporter(log.warning)
        if p["torch_threads"]:
            torch.set_num_threads(p["torch_threads"])
        if pipeline is None:
            pipeline = DepthPipeline.from_settings(PipelineSettings.from_params(p), warn=log.warning)
        self.pipeline = pipeline
        log.info(f"{p['backend']} backend, models on {self.pipeline.device}"
                 f"{' (fp16)' if self.pipeline.half else ''}, input {self.pipeline.cfg.image_size[1]}x"
                 f"{self.pipeline.cfg.image_size[0]}, depth range {self.pipeline.cfg.min_depth:g}-"
                 f"{self.pipeline.cfg.max_depth:g} m, echoes {'fused' if self.pipeline.uses_echo else 'not used'}")
        if p["warmup_iterations"]:
            ms = self.pipeline.warmup(p["warmup_iterations"])
            log.info(f"warm-up: {p['warmup_iterations']} passes, {ms:.1f} ms each")

        self.counters = Counters()
        self._in_rate, self._out_rate = RateMeter(), RateMeter()
        self._latency_ms, self._forward_ms, self._node_ms = Summary(), Summary(), Summary()
        self._camera_info: CameraInfo | None = None
        self._last_result: DepthResult | None = None
        self._last_echo_stamp_ns: int | None = None

        inputs = MutuallyExclusiveCallbackGroup()
        # Reliability as the camera driver offers it: a best-effort subscription got nothing from a reliable 720p driver.
        self._image_sub = MatchingSubscription(self, Image, topics.relative(topics.IMAGE), self._on_image, 1,
                                               callback_group=inputs)
        self.create_subscription(CameraInfo, topics.relative(topics.CAMERA_INFO), self._on_camera_info, sensor_input(1),
                                 callback_group=inputs, qos_overriding_options=overridable())
        # An echo older than max_image_age_s + echo_tolerance_s could only pair with an image dropped as stale.
        self._echo_max_age_s = p["max_image_age_s"] + p["echo_tolerance_s"]
        self._echoes = _EchoStore(int(p["echo_tolerance_s"] * 1e9), p["echo_queue_size"], int(self._echo_max_age_s * 1e9))
        self.create_subscription(EchoStamped, topics.relative(topics.ECHO), self._on_echo,
                                 sensor_input(p["echo_queue_size"]), callback_group=inputs,
                                 qos_overriding_options=overridable())
        self._image_topic = self.resolve_topic_name(topics.relative(topics.IMAGE))
        self._echo_topic = self.resolve_topic_name(topics.relative(topics.ECHO))

        self._pub_metric = self.create_publisher(Image, topics.relative(topics.METRIC_DEPTH), reliable_output(1),
                                                 qos_overriding_options=overridable())
        self._pub_info = self.create_publisher(CameraInfo, topics.relative(topics.METRIC_DEPTH_INFO), reliable_output(1),
                                               qos_overriding_options=overridable())
        self._pub_pseudo = self.create_publisher(Image, topics.relative(topics.PSEUDO_METRIC_DEPTH), reliable_output(1)) \
            if p["publish_pseudo_metric"] else None
        self._pub_relative = self.create_publisher(Image, topics.relative(topics.RELATIVE_DEPTH), reliable_output(1)) \
            if p["publish_relative"] else None
        self._pub_scale = self.create_publisher(ScaleEstimate, topics.relative(topics.SCALE), QoSProfile(depth=10))
        self._pub_diag = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, QoSProfile(depth=10))
        self._outputs = [pub for pub in (self._pub_metric, self._pub_info, self._pub_pseudo, self._pub_relative,
                                         self._pub_scale) if pub is not None]
        # a bug, not bad input (that is rejected per frame): end the node loudly, as a callback's exception would
        self._worker: LatestFrameWorker[Image] = LatestFrameWorker(
            "depth-inference", self._process, shutdown_on_error(self, "depth inference"))
        self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics, callback_group=inputs)
        log.info(f"pairing echoes with EchoBuffer, tolerance {p['echo_tolerance_s']:g} s; listening on "
                 f"{self._image_topic} and {self._echo_topic}")

    # -- inputs (fast: store and return) -------------------------------------------------------------------------
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def has_subscribers(self) -> bool:
        return any(pub.get_subscription_count() > 0 for pub in self._outputs)

    def _on_image(self, msg: Image) -> None:
        now = self._now_ns()
        self.counters.images_in += 1
        self._in_rate.tick(now)
        if not self.has_subscribers():
            self.counters.idle += 1
            return
        if self._worker.submit(msg):
            self.counters.dropped_stale += 1

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_echo(self, msg: EchoStamped) -> None:
        self.counters.echoes_in += 1
        if not self.pipeline.uses_echo:  # an Only-RGB model: nothing will ever be paired, so nothing is kept
            return
        stamp = stamp_to_ns(msg.header.stamp)
        now = self._now_ns()
        if stamp - now > self.params["max_future_s"] * 1e9:
            self._reject("echo_future_stamp", f"echo stamped {(stamp - now) / 1e9:.3f} s in the future on "
                         f"{self._echo_topic} (clocks out of step? use_sim_time?); ignored")
            return
        too_old_s = self._echo_max_age_s
        if now - stamp > too_old_s * 1e9:  # could only pair with an image that would be dropped as stale
            self._reject("echo_stale", f"echo on {self._echo_topic} is {(now - stamp) / 1e9:.3f} s old, more than "
                         f"max_image_age_s + echo_tolerance_s = {too_old_s:g} s; ignored")
            return
        try:
            samples = echo_to_array(msg, where=self._echo_topic)
        except ValueError as err:
            self._reject("echo_malformed", f"{err}; ignored")
            return
        problem = self.pipeline.check_echo(samples, msg.sample_rate, msg.emission_offset)
        if problem is not None:
            self._reject("echo_unusable", f"echo on {self._echo_topic} not usable: {problem}; ignored")
            return
        self._last_echo_stamp_ns = stamp
        self._echoes.push(stamp, EchoInput(samples, int(msg.sample_rate), int(msg.emission_offset), stamp), now)

    def _reject(self, reason: str, text: str) -> None:
        self.counters.reject(reason)
        self._report(reason, text)

    # -- inference (the worker thread) ---------------------------------------------------------------------------
    @property
    def error(self) -> BaseException | None:
        """What stopped the inference thread (None while it runs)."""
        return self._worker.error

    def _process(self, msg: Image) -> None:
        start = time.perf_counter()
        topic = self._image_topic
        stamp = stamp_to_ns(msg.header.stamp)
        now = self._now_ns()
        if stamp - now > self.params["max_future_s"] * 1e9:
            self._reject("image_future_stamp", f"image on {topic} stamped {(stamp - now) / 1e9:.3f} s in the future "
                         f"(clocks out of step? use_sim_time?); dropped")
            return
        if now - stamp > self.params["max_image_age_s"] * 1e9:
            self.counters.dropped_stale += 1
            self._report_warn("image_stale", f"image on {topic} is {(now - stamp) / 1e9:.3f} s old, more than "
                              f"max_image_age_s={self.params['max_image_age_s']:g}; dropped")
            return
        try:
            rgb = image_to_rgb(msg, where=topic)
        except ValueError as err:
            self._reject("image_encoding", f"{err}; dropped")
            return
        echo = self._echoes.match(stamp) if self.pipeline.uses_echo else None
        if echo is None and self.pipeline.uses_echo:
            self._report_warn("no_echo", self._no_echo_text(stamp))
        try:
            result = self.pipeline(rgb, echo, stamp, want_pseudo=self._pub_pseudo is not None,
                                   want_relative=self._pub_relative is not None)
        except (ValueError, RuntimeError) as err:  # a model that rejects this input; the next frame may be fine
            self._reject("model_error", f"depth for the image stamped {stamp / 1e9:.3f} failed: {err}")
            return
        self._publish(msg, result)
        done = self._now_ns()
        self._last_result = result
        self.counters.frames_out += 1
        self._out_rate.tick(done)
        self._latency_ms.add((done - stamp) / 1e6)
        self._forward_ms.add(result.forward_ms)
        self._node_ms.add((time.perf_counter() - start) * 1000.0 - result.forward_ms)

    def _no_echo_text(self, stamp: int) -> str:
        last = self._last_echo_stamp_ns
        when = "no echo received yet" if last is None else \
            f"the newest echo was emitted {(stamp - last) / 1e9:.3f} s before the image"
        return (f"no echo within echo_tolerance_s={self.params['echo_tolerance_s']:g} of the image stamped "
                f"{stamp / 1e9:.3f} ({when}); holding the last scale for up to max_scale_hold_s="
                f"{self.params['max_scale_hold_s']:g} s, then publishing NaN depth")

    def _publish(self, msg: Image, result: DepthResult) -> None:
        hdr = msg.header
        self._pub_metric.publish(image_msg(result.metric, "32FC1", hdr))
        info = self._camera_info
        if info is not None:
            if (info.width, info.height) == (msg.width, msg.height):
                self._pub_info.publish(copy_camera_info(info, hdr))
            else:
                self._reject("camera_info_size", f"camera_info is {info.width}x{info.height} but the image is "
                             f"{msg.width}x{msg.height}; depth published without camera_info")
        if self._pub_pseudo is not None and result.pseudo_metric is not None:
            self._pub_pseudo.publish(image_msg(result.pseudo_metric, "32FC1", hdr))
        if self._pub_relative is not None and result.relative is not None:
            self._pub_relative.publish(image_msg(result.relative, "32FC1", hdr))
        s = result.scale
        self._pub_scale.publish(fill(ScaleEstimate(header=hdr), {
            "scale": s.scale if s.ok else math.nan, "pseudo_metric_median": s.pseudo_metric_median,
            "relative_median": s.relative_median, "pixels": int(s.pixels), "method": s.method,
            "echo_used": result.echo_used, "echo_age_s": result.echo_age_s, "held": s.held,
            "held_for_s": float(s.held_for)}))

    # -- diagnostics -----------------------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now = self._now_ns()
        self._echoes.prune(now)  # echoes age out even while no image and no echo arrives
        c = self.counters
        in_rate, out_rate = self._in_rate.rate(now), self._out_rate.rate(now)
        last = self._last_result
        level, summary = DiagnosticStatus.OK, "ok"
        if not self.has_subscribers():
            summary = "idle: no subscribers"
        elif c.images_in == 0 or in_rate == 0.0:
            level, summary = DiagnosticStatus.WARN, f"no images on {self._image_topic}"
        elif last is not None and not last.scale.ok:
            level, summary = DiagnosticStatus.ERROR, "no scale: no fresh echo within the hold time, depth is NaN"
        elif last is not None and last.scale.held:
            level, summary = DiagnosticStatus.WARN, f"scale held for {last.scale.held_for:.2f} s (no fresh echo)"
        elif out_rate < self.params["min_rate_hz"]:
            level, summary = DiagnosticStatus.WARN, f"output {out_rate:.1f} Hz below min_rate_hz"
        values = {
            "input_rate_hz": f"{in_rate:.2f}", "output_rate_hz": f"{out_rate:.2f}",
            "latency_ms_mean": f"{self._latency_ms.mean:.1f}", "latency_ms_max": f"{self._latency_ms.max:.1f}",
            "forward_ms_mean": f"{self._forward_ms.mean:.1f}", "node_overhead_ms_mean": f"{self._node_ms.mean:.2f}",
            "images_in": str(c.images_in), "frames_out": str(c.frames_out), "dropped_frames": str(c.dropped_stale),
            "idle_frames": str(c.idle), "echoes_in": str(c.echoes_in),
            "rejected": str(sum(c.rejected.values())),
            **{f"rejected_{reason}": str(n) for reason, n in sorted(c.rejected.items())},
            "scale": f"{last.scale.scale:.4g}" if last is not None else "nan",
            "scale_held": str(bool(last and last.scale.held)),
            "echo_age_s": f"{last.echo_age_s:.3f}" if last is not None else "nan",
            "device": str(self.pipeline.device), "image_reliability": self._image_sub.reliability,
        }
        for summary_ in (self._latency_ms, self._forward_ms, self._node_ms):
            summary_.reset()
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: metric depth", message=summary,
                                  hardware_id=str(self.pipeline.device),
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        self._pub_diag.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))

    def destroy_node(self) -> None:
        if getattr(self, "_worker", None) is not None:  # None when __init__ failed before starting it
            self._worker.stop()  # the frame in progress finishes and is published before the publishers go
        super().destroy_node()


main = node_main(DepthNode, "depth_node")


if __name__ == "__main__":
    sys.exit(main())
