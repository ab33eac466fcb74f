"""echo_node: emits the chirp at chirp_rate Hz and publishes each binaural echo window as avs_depth_msgs/EchoStamped on
audio/echo, header.stamp = the emission time on the ROS clock (see avs_depth_ros.duplex for how it is measured).

backend: sounddevice  one full-duplex PortAudio stream (Debian: libportaudio2). No PortAudio, no such device, or a
                      stream that fails: one clear error line and exit status 1.
backend: sim          the synthetic world stands in for the sound card (machines without audio).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from avs_depth_msgs.msg import EchoStamped
from rclpy.node import Node

from avs_depth_core.audio.chirp import ChirpSpec, synthesize_chirp
from avs_depth_core.data import topics
from avs_depth_core.data.messages import echo_problem
from avs_depth_ros.conversions import echo_msg, header
from avs_depth_ros.duplex import DuplexEchoRecorder, EchoCapture
from avs_depth_ros.params import ECHO_NODE, declare_parameters
from avs_depth_ros.qos import overridable, reliable_output
from avs_depth_ros.runner import node_main, shutdown_on_error
from avs_depth_ros.sim_source import FrameCache, SimSensors
from avs_depth_ros.stats import ThrottledReporter
from avs_depth_ros.workers import DriverThread

ECHO_TOPIC = topics.relative(topics.ECHO)
POLL_PERIOD_S = 0.01  # how often finished windows are collected: adds at most this much to the publish delay


class EchoNode(Node):
    def __init__(self, *, sounddevice_module: Any = None, node_name: str = "echo_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params = p = declare_parameters(self, ECHO_NODE)
        log = self.get_logger()
        self._warn = ThrottledReporter(log.warning)
        self.published = 0
        self._pub = self.create_publisher(EchoStamped, ECHO_TOPIC, reliable_output(10),
                                          qos_overriding_options=overridable())
        self._recorder: DuplexEchoRecorder | None = None
        self._sim: SimSensors | None = None
        self._frames: FrameCache | None = None
        if p["backend"] == "sounddevice":
            self.chirp = ChirpSpec(p["chirp_start_hz"], p["chirp_end_hz"], p["chirp_duration_s"], p["sample_rate"],
                                   p["chirp_method"])
            self._recorder = DuplexEchoRecorder(
                chirp=synthesize_chirp(self.chirp), sample_rate=p["sample_rate"], chirp_rate=p["chirp_rate"],
                window_s=p["window_s"], pre_roll_s=p["pre_roll_s"], input_channels=list(p["input_channels"]),
                output_channels=p["output_channels"], gain=p["gain"], device=p["device"], blocksize=p["blocksize"],
                latency=p["latency"], direct_path_s=p["mic_speaker_distance_m"] / p["speed_of_sound"],
                tolerance_s=p["direct_path_tolerance_ms"] / 1000.0, correct_with_direct_path=p["correct_with_direct_path"],
                sounddevice_module=sounddevice_module)
            self._recorder.start()  # AudioUnavailableError (a RuntimeError) ends the node with one clear line
            self.speed_of_sound = p["speed_of_sound"]
            log.info(f"full-duplex stream on device {p['device'] or '(default)'}: {p['sample_rate']} Hz, inputs "
                     f"{list(p['input_channels'])} as {p['channel_order']}, chirp every {1 / p['chirp_rate']:.3f} s")
        else:
            from avs_depth_core.sim.world import SimWorld

            world = SimWorld(preset=p["sim_preset"], seed=p["sim_seed"], height=64, width=128, rate_hz=p["chirp_rate"])
            self._frames = FrameCache(world.sequence(p["sim_sequence"]), 10 * int(math.ceil(p["chirp_rate"])), log.info)
            self._sim = SimSensors(self._frames, camera_rate=p["chirp_rate"], chirp_rate=p["chirp_rate"],
                                   start_ns=self._now_ns())
            self.chirp = None  # taken from the world's frames
            self.speed_of_sound = world.acoustics.c
            log.info(f"simulated echoes ({p['sim_preset']}, seed {p['sim_seed']}, sequence {p['sim_sequence']}) every "
                     f"{1 / p['chirp_rate']:.3f} s")
        # Collected and published from its own thread, as audio drivers do (see avs_depth_ros.workers: not an rclpy timer).
        self._driver = DriverThread("echo-capture", self._poll, shutdown_on_error(self, "echo capture"))
        self._driver.start()

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    @property
    def error(self) -> BaseException | None:
        return self._driver.error

    def _poll(self) -> float:
        """Publish the echoes whose windows are complete; seconds until the next look."""
        if self._recorder is not None:
            ros_minus_system_ns = self._now_ns() - time.time_ns()
            captures = self._recorder.poll()
        else:
            ros_minus_system_ns = 0  # the simulation runs on the ROS clock already
            _, captures = self._sim.step(self._now_ns())
        for capture in captures:
            self._check(capture)
            self._pub.publish(echo_msg(capture.samples, capture.sample_rate, capture.chirp or self.chirp,
                                       capture.emission_offset, self.speed_of_sound, self.params["channel_order"],
                                       header(capture.stamp_ns + ros_minus_system_ns, self.params["frame_id"])))
            self.published += 1
        if self._sim is not None:
            return (self._sim.next_event_ns() - self._now_ns()) / 1e9
        return POLL_PERIOD_S

    def _check(self, capture: EchoCapture) -> None:
        problem = echo_problem(capture.samples)
        if problem is not None:
            self._warn("echo_problem", f"echo {problem} (check the microphones and gain)")
        if self._recorder is None:
            return
        error = capture.direct_path_error_ms
        if math.isnan(error):
            self._warn("direct_path_missing", "direct speaker-to-microphone path not found in the echo window "
                       "(speaker muted, gain too low, or timestamps off by more than 20 ms); stamps unchecked")
        elif abs(error) > self.params["direct_path_tolerance_ms"]:
            action = "emission moved to the direct path" if capture.corrected else "not corrected"
            self._warn("direct_path_offset", f"direct path arrives {error:+.2f} ms from where the stream's DAC/ADC "
                       f"times put it (tolerance {self.params['direct_path_tolerance_ms']:g} ms); {action}")

    def destroy_node(self) -> None:
        if getattr(self, "_driver", None) is not None:
            self._driver.stop()
        if self._recorder is not None:
            self._recorder.close()
        if self._frames is not None:
            self._frames.close()
        super().destroy_node()


main = node_main(EchoNode, "echo_node")


if __name__ == "__main__":
    sys.exit(main())
