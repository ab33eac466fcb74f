"""QoS of the nodes' topics. Every one can be changed from YAML without code (qos_overrides.<topic>.<publisher|
subscription>.<policy>), because the nodes create their endpoints with QoSOverridingOptions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions


def sensor_input(depth: int) -> QoSProfile:
    """Best effort, keep last `depth`: a late message is worth less than the next one; matches reliable publishers of
    small messages (echoes, camera_info) too. Camera-sized images: MatchingSubscription."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT)


def reliable_output(depth: int) -> QoSProfile:
    """Reliable, keep last `depth`: reaches reliable (rviz, recorders) and best-effort subscribers alike, never blocks."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE)


def overridable() -> QoSOverridingOptions:
    return QoSOverridingOptions.with_default_policies()


class MatchingSubscription:
    """A subscription that takes the reliability its publishers offer; for camera-sized images.

    Why: a best-effort subscription to a reliable camera driver (the default of rclpy and most drivers) received 0 of 100
    images at 1280x720 here (Fast DDS, loopback: the samples travel in fragments that best effort does not repair);
    matched as reliable, 100 of 100 at 720p and 1080p
    (benchmarks/image_transport.py). So it is created BEST_AVAILABLE (ROS 2 Iron and later), which resolves to reliable
    while every publisher found is reliable or none is found yet, and re-created best effort when a best-effort publisher
    appears later (the middleware reports a requested-incompatible QoS), which then matches every publisher; once every
    publisher is gone it goes back to BEST_AVAILABLE, so a reliable driver started next is matched reliable. A best-effort
    driver of camera-sized images needs a large shared-memory segment in its own process
    (config/fastdds_large_messages.xml); no subscriber setting helps. A reliability set through
    qos_overrides.<topic>.subscription.reliability is kept as it is.
    """

    def __init__(self, node: Any, msg_type: Any, topic: str, callback: Callable[[Any], None], depth: int,
                 callback_group: Any = None, log: Callable[[str], None] | None = None) -> None:
        self._node, self._args = node, (msg_type, topic, callback)
        self._depth, self._group = depth, callback_group
        self._log = log or node.get_logger().info
        self.switches = 0
        self.subscription = self._create(ReliabilityPolicy.BEST_AVAILABLE, overridable())
        self.adaptive = self.subscription.qos_profile.reliability == ReliabilityPolicy.BEST_AVAILABLE

    def _create(self, reliability: ReliabilityPolicy, overriding: QoSOverridingOptions | None) -> Any:
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self._depth, reliability=reliability)
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible, matched=self._on_matched)
        return self._node.create_subscription(*self._args, qos, callback_group=self._group, event_callbacks=events,
                                              qos_overriding_options=overriding)

    @property
    def reliability(self) -> str:
        return self.subscription.qos_profile.reliability.name.lower()

    def _recreate(self, reliability: ReliabilityPolicy) -> None:
        self._node.destroy_subscription(self.subscription)
        self.subscription = self._create(reliability, None)  # the overrides were applied at the first creation
        self.switches += 1

    def _on_matched(self, info: Any) -> None:
        best_effort = self.subscription.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        if self.adaptive and best_effort and info.current_count == 0:
            self._recreate(ReliabilityPolicy.BEST_AVAILABLE)

    def _on_incompatible(self, _info: Any) -> None:
        if not self.adaptive or self.subscription.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT:
            return
        topic = self.subscription.topic_name
        self._recreate(ReliabilityPolicy.BEST_EFFORT)
        self._log(f"a best-effort publisher appeared on {topic}: subscription re-created best effort to match it "
                  f"(camera-sized images arrive only if that publisher's process has a large shared-memory segment, "
                  f"e.g. FASTDDS_DEFAULT_PROFILES_FILE=config/fastdds_large_messages.xml)")
