"""echo_node: emits the chirp at chirp_rate Hz and publishes each binaural echo window as avs_depth_msgs/EchoStamped on
audio/echo, header.stamp = the emission time on the ROS clock (see avs_depth_ros.duplex for how it is measured), and
its audio health on /diagnostics (rate, xruns, lost windows, loop delay, stream reopens).

backend: sounddevice  one full-duplex PortAudio stream (Debian: libportaudio2). No PortAudio, no such device, or a
                      stream that cannot be opened at start: one clear error line and exit status 1. A stream that dies
                      later is reopened with backoff (0.5 s doubling to 10 s), counted in /diagnostics.
backend: sim          the synthetic world stands in for the sound card (machines without audio).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from avs_depth_msgs.msg import EchoStamped
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import QoSProfile
from std_msgs.msg import Header

from avs_depth_core.audio.chirp import ChirpSpec, synthesize_chirp
from avs_depth_core.data import topics
from avs_depth_core.data.messages import echo_problem
from avs_depth_ros.conversions import echo_msg, header
from avs_depth_ros.duplex import DuplexEchoRecorder, EchoCapture, ReopeningRecorder
from avs_depth_ros.params import ECHO_NODE, declare_parameters
from avs_depth_ros.qos import overridable, reliable_output
from avs_depth_ros.runner import node_main, publish_while_running, shutdown_on_error
from avs_depth_ros.sim_source import FrameCache, SimSensors
from avs_depth_ros.stats import RateMeter, ThrottledReporter
from avs_depth_ros.workers import DriverThread

ECHO_TOPIC = topics.relative(topics.ECHO)
DIAGNOSTICS_TOPIC = topics.DIAGNOSTICS
POLL_PERIOD_S = 0.01  # how often finished windows are collected: adds at most this much to the publish delay


class EchoNode(Node):
    def __init__(self, *, sounddevice_module: Any = None, node_name: str = "echo_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params = p = declare_parameters(self, ECHO_NODE)
        log = self.get_logger()
        if p["calibration_file"]:
            from avs_depth_ros.audio_check import apply_calibration

            self.params = p = apply_calibration(p, p["calibration_file"], log.info)
        self._warn = ThrottledReporter(log.warning)
        self.published = 0
        self._rate = RateMeter()
        self._pub = self.create_publisher(EchoStamped, ECHO_TOPIC, reliable_output(10),
                                          qos_overriding_options=overridable())
        self._pub_diag = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, QoSProfile(depth=10))
        self._audio: ReopeningRecorder | None = None
        self._sim: SimSensors | None = None
        self._frames: FrameCache | None = None
        self.direct_path_missing = 0
        self._xruns_reported = 0
        if p["backend"] == "sounddevice":
            self._open_sound_card(p, sounddevice_module)
        else:
            self._open_sim(p)
        self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics)
        # Collected and published from its own thread, as audio drivers do (see avs_depth_ros.workers: not an rclpy timer).
        self._driver = DriverThread("echo-capture", self._poll, shutdown_on_error(self, "echo capture"))
        self._driver.start()

    def _open_sound_card(self, p: dict[str, Any], sounddevice_module: Any) -> None:
        self.chirp = ChirpSpec(p["chirp_start_hz"], p["chirp_end_hz"], p["chirp_duration_s"], p["sample_rate"],
                               p["chirp_method"])
        recorder = DuplexEchoRecorder(
            chirp=synthesize_chirp(self.chirp), sample_rate=p["sample_rate"], chirp_rate=p["chirp_rate"],
            window_s=p["window_s"], pre_roll_s=p["pre_roll_s"], input_channels=list(p["input_channels"]),
            output_channels=p["output_channels"], gain=p["gain"], device=p["device"], blocksize=p["blocksize"],
            latency=p["latency"], output_latency=p["output_latency"],
            direct_path_s=p["mic_speaker_distance_m"] / p["speed_of_sound"],
            tolerance_s=p["direct_path_tolerance_ms"] / 1000.0, correct_with_direct_path=p["correct_with_direct_path"],
            realtime_priority=p["realtime_priority"], sounddevice_module=sounddevice_module)
        if p["window_s"] > 1.0 / p["chirp_rate"]:
            self.get_logger().warning(
                f"window_s {p['window_s']:g} s is longer than the chirp period {1 / p['chirp_rate']:g} s: every window "
                f"holds the next chirp's direct path, which the models never saw in training; lower chirp_rate to "
                f"{1 / p['window_s']:g} Hz or less")
        recorder.start()  # AudioUnavailableError (a RuntimeError) ends the node with one clear line
        self._audio = ReopeningRecorder(recorder, self.get_logger().warning)
        self.speed_of_sound = p["speed_of_sound"]
        self.get_logger().info(
            f"input and output streams on device {p['device'] or '(default)'}: {p['sample_rate']} Hz, latency "
            f"{p['latency']} in, {p['output_latency']} out, inputs {list(p['input_channels'])} as "
            f"{p['channel_order']}, chirp every {1 / p['chirp_rate']:.3f} s once the input has settled")

    def _open_sim(self, p: dict[str, Any]) -> None:
        from avs_depth_core.sim.world import SimWorld

        world = SimWorld(preset=p["sim_preset"], seed=p["sim_seed"], height=64, width=128, rate_hz=p["chirp_rate"])
        self._frames = FrameCache(world.sequence(p["sim_sequence"]), 10 * int(math.ceil(p["chirp_rate"])),
                                  self.get_logger().info)
        self._sim = SimSensors(self._frames, camera_rate=p["chirp_rate"], chirp_rate=p["chirp_rate"],
                               start_ns=self._now_ns())
        self.chirp = None  # taken from the world's frames
        self.speed_of_sound = world.acoustics.c
        self.get_logger().info(f"simulated echoes ({p['sim_preset']}, seed {p['sim_seed']}, sequence "
                               f"{p['sim_sequence']}) every {1 / p['chirp_rate']:.3f} s")

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    @property
    def error(self) -> BaseException | None:
        return self._driver.error

    @property
    def recorder(self) -> DuplexEchoRecorder | None:
        return self._audio.recorder if self._audio is not None else None

    def _poll(self) -> float:
        """Publish the echoes whose windows are complete; seconds until the next look."""
        if not self.context.ok():
            return POLL_PERIOD_S  # shutting down: destroy_node stops this thread
        if self._audio is not None:
            ros_minus_system_ns = self._now_ns() - time.time_ns()
            captures = self._audio.poll(time.monotonic())
        else:
            ros_minus_system_ns = 0  # the simulation runs on the ROS clock already
            _, captures = self._sim.step(self._now_ns())
        for capture in captures:
            self._check(capture)
            msg = echo_msg(capture.samples, capture.sample_rate, capture.chirp or self.chirp, capture.emission_offset,
                           self.speed_of_sound, self.params["channel_order"],
                           header(capture.stamp_ns + ros_minus_system_ns, self.params["frame_id"]))
            if not publish_while_running(self, self._pub, msg):
                return POLL_PERIOD_S
            self.published += 1
            self._rate.tick(self._now_ns())
        if self._sim is not None:
            return (self._sim.next_event_ns() - self._now_ns()) / 1e9
        return POLL_PERIOD_S

    def _check(self, capture: EchoCapture) -> None:
        problem = echo_problem(capture.samples)
        if problem is not None:
            self._warn("echo_problem", f"echo {problem} (check the microphones and gain)")
        if self._audio is None:
            return
        error = capture.direct_path_error_ms
        if math.isnan(error):
            self.direct_path_missing += 1
            self._warn("direct_path_missing", "direct speaker-to-microphone path not found in the echo window "
                       "(speaker muted, gain too low, or the loop delay moved by more than 20 ms); stamp unchecked")
        elif abs(error) > self.params["direct_path_tolerance_ms"]:
            self._warn("direct_path_offset", f"direct path arrives {error:+.2f} ms from where the locked loop delay "
                       f"puts it (tolerance {self.params['direct_path_tolerance_ms']:g} ms); window moved to it")
        if capture.timing == "stream_times" and self.params["correct_with_direct_path"]:
            self._warn("stream_times", "no consistent direct path in the first chirps: emissions placed with the "
                       "stream's DAC/ADC times, which PulseAudio was measured to misreport (run audio-check)")

    def _publish_diagnostics(self) -> None:
        level, message, values = self._audio_status() if self._audio is not None else (
            DiagnosticStatus.OK, "simulated echoes", {})
        now = self._now_ns()
        rate = self._rate.rate(now)
        expected = self.params["chirp_rate"]
        if level == DiagnosticStatus.OK and self.published and rate < 0.8 * expected:
            level, message = DiagnosticStatus.WARN, f"echo rate {rate:.1f} Hz below the chirp rate {expected:g} Hz"
        values = {"published": str(self.published), "rate_hz": f"{rate:.2f}", "chirp_rate_hz": f"{expected:g}",
                  "backend": self.params["backend"], **values}
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: echoes", message=message,
                                  hardware_id=self.params["device"] or "default",
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        stamp = self.get_clock().now().to_msg()
        publish_while_running(self, self._pub_diag, DiagnosticArray(header=Header(stamp=stamp), status=[status]))

    def _audio_status(self) -> tuple[int, str, dict[str, str]]:
        audio, rec = self._audio, self._audio.recorder
        s = rec.stats
        loop = rec.loop.value
        values = {
            "stream": audio.state, "stream_drops": str(audio.drops), "stream_reopens": str(audio.reopens),
            "failed_reopens": str(audio.failed_reopens), "last_stream_error": audio.last_error,
            "xruns": str(rec.xruns), **{f"xruns_{k}": str(v) for k, v in sorted(s.xruns.items())},
            "startup_flags": str(s.startup_flags), "lost_windows": str(rec.lost_windows),
            **{f"lost_windows_{k}": str(v) for k, v in sorted(s.lost_windows.items())},
            "timing": rec.timing or "settling", "loop_delay_samples": "" if loop is None else str(loop),
            "loop_delay_ms": "" if loop is None else f"{loop * 1000.0 / rec.fs:.3f}",
            "loop_delay_relocks": str(rec.loop.relocks), "direct_path_corrections": str(rec.corrections),
            "direct_path_missing": str(self.direct_path_missing), "clock_segments": str(rec.clock.segment),
            "clock_breaks": str(rec.clock.breaks), "callback_realtime": s.realtime,
        }
        new_xruns, self._xruns_reported = rec.xruns - self._xruns_reported, rec.xruns
        if audio.state != "running":
            return DiagnosticStatus.ERROR, f"audio stream lost, reopening: {audio.last_error}", values
        if new_xruns > 0:
            return DiagnosticStatus.WARN, f"{new_xruns} xruns (under/overflows) since the last report", values
        if rec.timing == "stream_times" and self.params["correct_with_direct_path"]:
            return DiagnosticStatus.WARN, "no direct path: stamps from the host API's times, unchecked", values
        return DiagnosticStatus.OK, "ok" if rec.timing else "settling", values

    def destroy_node(self) -> None:
        if getattr(self, "_driver", None) is not None:
            self._driver.stop()
        if self._audio is not None:
            self._audio.recorder.close()
        if self._frames is not None:
            self._frames.close()
        super().destroy_node()


main = node_main(EchoNode, "echo_node")


if __name__ == "__main__":
    sys.exit(main())
