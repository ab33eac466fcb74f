"""room_loop: the simulated room between echo_node's speaker and its microphones, for machines without a sound card.

It reads what echo_node plays (the monitor of the private audio server's speaker sink, avs_depth_ros.audio_server
layout "room"), convolves it with the simulated room's binaural response at the camera pose sim_sensors_node shows
(camera/pose), adds the simulator's background and microphone noise and preamp limiter, and plays the result into the
microphones' sink, whose monitor echo_node records. So the whole live pipeline runs on real audio I/O with echoes that
carry the scene's geometry (make demo-audio). The world (preset, seed, sequence, image width and rate) is asked from
sim_sensors_node's parameters, so both always show the same room. The response comes from the simulator's public
EchoSimulator.recording_response (the impulse response, transducers and level render() uses).

What the loop adds: its own delay (parec's and pacat's buffers and one processing block, 100-250 ms) between the chirp
leaving echo_node and its direct path coming back, like a Bluetooth speaker. echo_node measures the loop delay from the
direct path (its probe pair allows up to 0.5 s), so its stamps mark when the sound leaves this virtual speaker, and the
room uses the camera pose current at that time.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.srv import GetParameters
from rclpy.node import Node

from avs_depth_core.data import topics
from avs_depth_ros.conversions import pose_from_msg
from avs_depth_ros.params import ROOM_LOOP, declare_parameters
from avs_depth_ros.room_audio import RoomAudio
from avs_depth_ros.runner import node_main

POSE_TOPIC = topics.relative(topics.POSE)
WORLD_KEYS = ("preset", "seed", "sequence", "height", "width", "camera_rate")  # sim_sensors_node's world


def parameter_value(value: Any) -> Any:
    """The Python value of an rcl_interfaces/ParameterValue (bool, int, float or str)."""
    from rcl_interfaces.msg import ParameterType

    field = {ParameterType.PARAMETER_BOOL: "bool_value", ParameterType.PARAMETER_INTEGER: "integer_value",
             ParameterType.PARAMETER_DOUBLE: "double_value", ParameterType.PARAMETER_STRING: "string_value"}
    if value.type not in field:
        raise ValueError(f"room loop: unexpected parameter type {value.type} (not set on the sim node?)")
    return getattr(value, field[value.type])


class RoomLoopNode(Node):
    def __init__(self, *, node_name: str = "room_loop", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params = p = declare_parameters(self, ROOM_LOOP)
        log = self.get_logger()
        world = self._ask_world(p["sim_node"], p["world_timeout_s"])
        from avs_depth_core.sim.world import SimWorld

        self.sequence = SimWorld(preset=world["preset"], seed=world["seed"], height=world["height"],
                                 width=world["width"], rate_hz=world["camera_rate"]).sequence(world["sequence"])
        self.acoustics = acoustics = self.sequence.world.acoustics
        self.audio = RoomAudio(
            sample_rate=acoustics.fs, max_response=acoustics.num_samples - acoustics.pre_roll, block=p["block"],
            reference_gain=p["reference_gain"], ambient_noise=acoustics.ambient_noise if p["noise"] else 0.0,
            mic_noise=acoustics.mic_noise if p["noise"] else 0.0, limiter=acoustics.limiter,
            source=p["pulse_source"], sink=p["pulse_sink"], latency_ms=p["latency_ms"], seed=world["seed"])
        self._tail_rng = np.random.default_rng([world["seed"], world["sequence"], 7])
        self._set_pose(self.sequence.pose(0))  # until the first camera/pose arrives
        self.audio.start()
        self._restarts = 0
        self.create_subscription(PoseStamped, POSE_TOPIC, self._on_pose, 5)
        self.create_timer(1.0, self._check_stream)
        log.info(f"room loop: {self.sequence.name} ({world['width']}x{world['height']} camera world of "
                 f"{p['sim_node']}), {p['pulse_source']} -> room -> {p['pulse_sink']}, reference gain "
                 f"{p['reference_gain']:g}, block {p['block']}, output latency {p['latency_ms']:g} ms")

    def _ask_world(self, sim_node: str, timeout_s: float) -> dict[str, Any]:
        """The world parameters of sim_sensors_node, from its parameter service."""
        import rclpy

        client = self.create_client(GetParameters, f"/{sim_node.lstrip('/')}/get_parameters")
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise RuntimeError(f"room loop: no parameter service of {sim_node!r} within {timeout_s:g} s (is "
                               f"sim_sensors_node running under that name?)")
        future = client.call_async(GetParameters.Request(names=list(WORLD_KEYS)))
        rclpy.spin_until_future_complete(self, future, timeout_sec=timeout_s)
        if future.result() is None:
            raise RuntimeError(f"room loop: {sim_node!r} did not answer for its parameters {WORLD_KEYS}")
        values = [parameter_value(v) for v in future.result().values]
        self.destroy_client(client)
        return dict(zip(WORLD_KEYS, values, strict=True))

    def _set_pose(self, pose: np.ndarray) -> None:
        seq = self.sequence
        rng = self._tail_rng if self.params["tail"] else None
        self.audio.set_response(self.acoustics.recording_response(seq.acoustic_scene, pose, rng, seq.level,
                                                                  seq.channel_gain, tail=self.params["tail"]))

    def _on_pose(self, msg: PoseStamped) -> None:
        self._set_pose(pose_from_msg(msg))

    def _check_stream(self) -> None:
        """parec or pacat gone (the audio server restarted): start them again."""
        if not self.audio.active:
            self._restarts += 1
            self.get_logger().warning(f"room loop audio stopped ({self.audio.error}); restarting it "
                                      f"(restart {self._restarts})")
            self.audio.close()
            self.audio.error = None
            self.audio.start()

    def destroy_node(self) -> None:
        if getattr(self, "audio", None) is not None:
            self.audio.close()
        super().destroy_node()


main = node_main(RoomLoopNode, "room_loop")


if __name__ == "__main__":
    sys.exit(main())
