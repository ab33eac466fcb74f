"""QoS of the nodes' topics. Every one can be changed from YAML without code (qos_overrides.<topic>.<publisher|
subscription>.<policy>), because the nodes create their endpoints with QoSOverridingOptions."""

from __future__ import annotations

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions


def sensor_input(depth: int) -> QoSProfile:
    """Best effort, keep last `depth`: a late frame is worth less than the next one; matches reliable publishers too."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT)


def reliable_output(depth: int) -> QoSProfile:
    """Reliable, keep last `depth`: reaches reliable (rviz, recorders) and best-effort subscribers alike, never blocks."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE)


def overridable() -> QoSOverridingOptions:
    return QoSOverridingOptions.with_default_policies()
