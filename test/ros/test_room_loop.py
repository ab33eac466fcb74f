"""The room in the loop on a real (private) audio server: sim_sensors_node shows a robot in the synthetic world,
room_loop plays echo_node's chirps through that world's binaural response into the microphones, and echo_node's
published echoes must look like the simulator's own recording at the camera pose of their stamp."""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from scipy.signal import fftconvolve

pytest.importorskip("rclpy")
pytest.importorskip("avs_depth_msgs.msg")

from avs_depth_msgs.msg import EchoStamped
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile

from avs_depth_core.data.messages import echo_to_array, stamp_to_ns
from avs_depth_ros.audio_server import PrivateAudioServer, available
from avs_depth_ros.conversions import pose_from_msg
from avs_depth_ros.sim_sensors_node import SimSensorsNode

pytestmark = pytest.mark.timeout(240)
FS = 44_100


@pytest.fixture
def room_server() -> Any:
    missing = available()
    if missing is not None:
        pytest.skip(missing)
    server = PrivateAudioServer("room").start()
    yield server
    server.stop()


def envelope(x: np.ndarray, width: int = 64) -> np.ndarray:
    return fftconvolve(np.abs(x), np.ones(width) / width, mode="same")


def test_room_loop_echoes_carry_the_simulated_rooms_geometry(room_server, child_env, ros_context, spinner):
    sim = SimSensorsNode(context=ros_context, parameter_overrides=[
        Parameter("height", value=48), Parameter("width", value=80), Parameter("loop_frames", value=200),
        Parameter("publish_echo", value=False)])
    listener = Node("room_listener", context=ros_context)
    echoes: list[EchoStamped] = []
    poses: dict[int, np.ndarray] = {}
    listener.create_subscription(EchoStamped, "audio/echo", echoes.append, QoSProfile(depth=50))
    listener.create_subscription(PoseStamped, "camera/pose",
                                 lambda m: poses.__setitem__(stamp_to_ns(m.header.stamp), pose_from_msg(m)),
                                 QoSProfile(depth=50))
    spinner.add(sim, listener)
    env = {**child_env, **room_server.client_env()}
    room = subprocess.Popen([sys.executable, "-m", "avs_depth_ros.room_loop"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    echo = subprocess.Popen([sys.executable, "-m", "avs_depth_ros.echo_node", "--ros-args", "-p",
                             "mic_speaker_distance_m:=0.1091"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        spinner.wait_for(lambda: len(echoes) >= 15, 150, "15 echoes through the room")
    finally:
        for proc in (echo, room):
            proc.send_signal(signal.SIGINT)
        outputs = [proc.communicate(timeout=30)[0] for proc in (echo, room)]
    assert echo.returncode == 0 and room.returncode == 0, outputs
    seq = sim.frames.sequence
    acoustics = seq.world.acoustics
    stamps = np.array(sorted(poses))
    correlations = []
    for msg in echoes[3:15]:
        samples = echo_to_array(msg)
        shown = stamps[stamps <= stamp_to_ns(msg.header.stamp)][-1]  # the pose the room had when the chirp went out
        truth = acoustics.render(seq.acoustic_scene, poses[int(shown)], None, seq.level, seq.channel_gain,
                                 noise=False, tail=False)
        offset = acoustics.pre_roll - msg.emission_offset  # both aligned at emission
        period = int(FS / 5.0) - msg.emission_offset  # up to the next chirp (echo_node's default chirp_rate 5 Hz)
        n = min(samples.shape[1], truth.shape[1] - offset, period)
        a, b = envelope(samples[0, :n]), envelope(truth[0, offset:offset + n])
        correlations.append(float(np.corrcoef(a, b)[0, 1]))
        direct = np.abs(samples[:, msg.emission_offset:msg.emission_offset + 200]).max()
        assert 0.5 * seq.level < direct < 1.5 * seq.level, outputs[0][-3000:]  # the simulator's level (gain 0.5)
    assert np.median(correlations) > 0.9, correlations
