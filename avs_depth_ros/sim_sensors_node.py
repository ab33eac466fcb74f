"""sim_sensors_node: a robot moving through the synthetic world (avs_depth_core.sim), published as its sensors would be.

Topics (relative names, remappable): camera/color/image_raw (rgb8 or bgr8), camera/color/camera_info, camera/depth/image
(ground truth, 32FC1 metres, NaN invalid), camera/pose (ground truth, geometry_msgs/PoseStamped, camera optical frame
in the world), audio/echo (EchoStamped; off with publish_echo false). Images, camera_info, ground truth and pose share the
capture stamp; an echo carries its emission stamp and is published only after its window, as echo_node does
(avs_depth_ros.sim_source). `use_sim:=true` and `make demo` run this in place of the camera driver and echo_node.
"""

from __future__ import annotations

import sys
from typing import Any

from avs_depth_msgs.msg import EchoStamped
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from avs_depth_core.data import topics
from avs_depth_core.sim.world import SimWorld
from avs_depth_ros.conversions import camera_info_msg, echo_msg, header, image_msg, pose_msg
from avs_depth_ros.params import SIM_SENSORS_NODE, declare_parameters
from avs_depth_ros.qos import overridable, reliable_output
from avs_depth_ros.runner import node_main, publish_while_running, shutdown_on_error
from avs_depth_ros.sim_source import FrameCache, SimSensors
from avs_depth_ros.workers import DriverThread

FIRST_FRAME_TIMEOUT_S = 120.0
MAX_WAIT_S = 0.05


class SimSensorsNode(Node):
    def __init__(self, *, node_name: str = "sim_sensors_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params = p = declare_parameters(self, SIM_SENSORS_NODE)
        log = self.get_logger()
        world = SimWorld(preset=p["preset"], seed=p["seed"], height=p["height"], width=p["width"],
                         rate_hz=p["camera_rate"])
        self.speed_of_sound = world.acoustics.c
        self.frames = FrameCache(world.sequence(p["sequence"]), p["loop_frames"], log.info)
        if self.frames.wait_for(0, FIRST_FRAME_TIMEOUT_S) is None:
            raise RuntimeError(f"the simulated world rendered no frame within {FIRST_FRAME_TIMEOUT_S:g} s")
        self.sensors = SimSensors(self.frames, p["camera_rate"], p["chirp_rate"] if p["publish_echo"] else None,
                                  start_ns=self._now_ns())

        def publisher(msg_type: Any, topic: str, depth: int) -> Any:
            return self.create_publisher(msg_type, topic, reliable_output(depth), qos_overriding_options=overridable())

        # Reliable, like most camera drivers: reaches best-effort (depth_node) and reliable (recorders) subscribers.
        self._pub_image = publisher(Image, topics.relative(topics.IMAGE), 5)
        self._pub_info = publisher(CameraInfo, topics.relative(topics.CAMERA_INFO), 5)
        self._pub_depth = publisher(Image, topics.relative(topics.DEPTH), 5) if p["publish_depth"] else None
        self._pub_pose = publisher(PoseStamped, topics.relative(topics.POSE), 5) if p["publish_pose"] else None
        self._pub_echo = publisher(EchoStamped, topics.relative(topics.ECHO), 10) if p["publish_echo"] else None
        self.published = {"image": 0, "echo": 0}
        # Published from its own thread, as a camera driver does (see avs_depth_ros.workers for why not an rclpy timer).
        self._driver = DriverThread("sim-sensors", self._tick, shutdown_on_error(self, "simulated sensors"))
        self._driver.start()
        echoes = f"echoes at {p['chirp_rate']:g} Hz" if p["publish_echo"] else "no echoes"
        log.info(f"simulating {p['preset']} (seed {p['seed']}, sequence {p['sequence']}): {p['width']}x{p['height']} "
                 f"{p['encoding']} at {p['camera_rate']:g} Hz, {echoes}, looping {p['loop_frames']} frames")

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _tick(self) -> float:
        """Publish what is due now; seconds until the next capture, chirp or echo release."""
        p = self.params
        captures, echoes = self.sensors.step(self._now_ns())
        for capture in captures:
            f = capture.frame
            hdr = header(capture.stamp_ns, p["camera_frame_id"])
            rgb = f.rgb if p["encoding"] == "rgb8" else f.rgb[..., ::-1]
            messages = [(self._pub_image, image_msg(rgb, p["encoding"], hdr)),
                        (self._pub_info, camera_info_msg(f.K, f.rgb.shape[1], f.rgb.shape[0], hdr))]
            if self._pub_depth is not None:
                messages.append((self._pub_depth, image_msg(f.depth, "32FC1", hdr)))
            if self._pub_pose is not None:
                messages.append((self._pub_pose, pose_msg(f.pose, header(capture.stamp_ns, p["world_frame_id"]))))
            if not all(publish_while_running(self, pub, msg) for pub, msg in messages):
                return MAX_WAIT_S  # shutting down: destroy_node stops this thread
            self.published["image"] += 1
        for echo in echoes:  # none without publish_echo
            msg = echo_msg(echo.samples, echo.sample_rate, echo.chirp, echo.emission_offset, self.speed_of_sound,
                           "left,right", header(echo.stamp_ns, p["mic_frame_id"]))
            if not publish_while_running(self, self._pub_echo, msg):
                return MAX_WAIT_S
            self.published["echo"] += 1
        return (self.sensors.next_event_ns() - self._now_ns()) / 1e9

    @property
    def error(self) -> BaseException | None:
        return self._driver.error

    def destroy_node(self) -> None:
        self._driver.stop()
        self.frames.close()
        super().destroy_node()


main = node_main(SimSensorsNode, "sim_sensors_node")


if __name__ == "__main__":
    sys.exit(main())
