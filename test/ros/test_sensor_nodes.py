"""echo_node (sound card missing, a simulated full-duplex card, the sim backend) and sim_sensors_node over rclpy."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("avs_depth_msgs.msg")

from avs_depth_msgs.msg import EchoStamped
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from avs_depth_core.data.messages import camera_info_to_K, echo_to_array, image_to_depth, image_to_rgb, stamp_to_ns
from avs_depth_ros.duplex import MAX_LOOP_S
from avs_depth_ros.echo_node import EchoNode
from avs_depth_ros.sim_sensors_node import SimSensorsNode

pytestmark = pytest.mark.timeout(90)
FS = 44_100


class Collector(Node):
    def __init__(self, context: Any) -> None:
        super().__init__("test_collector", context=context)
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.got: dict[str, list[tuple[int, Any]]] = {"image": [], "info": [], "depth": [], "echo": []}
        for key, msg_type, topic in (("image", Image, "camera/color/image_raw"), ("info", CameraInfo,
                                     "camera/color/camera_info"), ("depth", Image, "camera/depth/image"),
                                     ("echo", EchoStamped, "audio/echo")):
            self.create_subscription(msg_type, topic, lambda m, k=key: self._store(k, m), qos)

    def _store(self, key: str, msg: Any) -> None:
        self.got[key].append((self.get_clock().now().nanoseconds, msg))


def overrides(**values: Any) -> list[Parameter]:
    return [Parameter(k, value=v) for k, v in values.items()]


def test_echo_node_without_a_sound_card_exits_with_one_clear_error(child_env, tmp_path):
    # a home and runtime folder of its own: ALSA's pulse plugin (where installed) leaves its state folders there
    env = {**child_env, "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)}
    for name in ("PULSE_SERVER", "PULSE_COOKIE", "PULSE_SINK", "PULSE_SOURCE"):
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-m", "avs_depth_ros.echo_node", "--ros-args", "-p", "backend:=sounddevice"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1, result.stderr
    # without libportaudio2: "PortAudio library not found ... libportaudio2"; with it but no card: "cannot open a
    # full-duplex stream ... available devices"
    assert "PortAudio library not found" in result.stderr or "cannot open a full-duplex stream" in result.stderr
    assert "Traceback" not in result.stderr


class RealtimeCard:
    """sounddevice stand-in: an input and an output stream run from one thread in real time; what is played comes back
    on the input 10 ms later."""

    def __init__(self) -> None:
        self.streams: list[Any] = []

    def check_input_settings(self, **_kwargs: Any) -> None:
        pass

    check_output_settings = check_input_settings

    def query_devices(self) -> str:
        return "0 realtime fake"

    def _stream(self, callback: Any, channels: int) -> Any:
        card = self

        class Stream:
            latency = 0.005
            active = False

            def __init__(self) -> None:
                self.callback, self.channels = callback, channels

            def start(self) -> None:
                self.active = True
                if len(card.streams) == 2 and all(s.active for s in card.streams):
                    threading.Thread(target=card.run, daemon=True).start()

            def abort(self) -> None:
                self.active = False

            def close(self) -> None:
                self.active = False  # ends card.run: a card left running would keep allocating into later tests

        self.streams.append(Stream())
        return self.streams[-1]

    def InputStream(self, callback: Any, channels: int, **_kwargs: Any) -> Any:
        return self._stream(callback, channels)

    def OutputStream(self, callback: Any, channels: int, **_kwargs: Any) -> Any:
        return self._stream(callback, channels)

    def run(self) -> None:
        source, sink = self.streams
        block, delay = 441, 441 + 4
        out = np.zeros(0, np.float32)  # what was played, from sample `base` on (the last delay + block samples)
        base = 0
        t0 = time.monotonic()
        pos = 0
        while source.active and sink.active:
            outdata = np.zeros((block, sink.channels), np.float32)
            sink.callback(outdata, block, SimpleNamespace(outputBufferDacTime=t0 + (pos + delay) / FS,
                                                          currentTime=t0 + pos / FS), 0)
            out = np.concatenate([out, outdata[:, 0]])
            src = np.arange(pos, pos + block) - delay
            heard = np.where(src >= 0, out[np.clip(src - base, 0, len(out) - 1)], 0)
            drop = max(0, len(out) - (delay + block))
            out, base = out[drop:], base + drop
            indata = np.stack([heard, heard], 1).astype(np.float32) * 0.5
            indata += np.random.default_rng(pos).normal(0, 1e-4, indata.shape).astype(np.float32)
            source.callback(indata, block, SimpleNamespace(inputBufferAdcTime=t0 + pos / FS,
                                                           currentTime=t0 + (pos + block) / FS), 0)
            pos += block
            time.sleep(max(0.0, t0 + pos / FS - time.monotonic()))


def test_echo_node_publishes_stamped_windows_from_a_duplex_stream(spinner, ros_context):
    node = EchoNode(context=ros_context, sounddevice_module=RealtimeCard(),
                    parameter_overrides=overrides(mic_speaker_distance_m=0.0, chirp_rate=20.0, window_s=0.1))
    collector = Collector(ros_context)
    spinner.add(node, collector)
    spinner.wait_for(lambda: len(collector.got["echo"]) >= 5, 30, "five echoes")
    received, msg = collector.got["echo"][1]
    samples = echo_to_array(msg)
    pre = int(round(0.002 * FS))
    assert samples.shape == (2, pre + int(round(0.1 * FS))) and msg.emission_offset == pre
    assert (msg.sample_rate, msg.channels, msg.channel_order, msg.header.frame_id) == (FS, 2, "left,right", "mic_array")
    assert (msg.chirp_start_hz, msg.chirp_end_hz, msg.chirp_method) == (20.0, 20000.0, "linear")
    # the chirp comes back at the emission offset (zero distance, the card's own timestamps are right)
    assert int(np.argmax(np.abs(samples[0, :pre + 200]))) in range(pre, pre + 140)
    # stamped at emission, published after the window: the stamp is at least the window older than the receipt
    assert 0.1e9 <= received - stamp_to_ns(msg.header.stamp) < 2e9
    stamps = [stamp_to_ns(m.header.stamp) for _, m in collector.got["echo"]]
    # the probe pair (MAX_LOOP_S apart, to measure the loop delay), then chirp_rate 20 Hz on the sample clock
    assert np.allclose(np.diff(stamps[:3]), MAX_LOOP_S * 1e9, atol=1e6)
    assert np.allclose(np.diff(stamps[2:]), 0.05e9, atol=1e6)


def test_echo_node_sim_backend(spinner, ros_context):
    node = EchoNode(context=ros_context, parameter_overrides=overrides(backend="sim"))
    collector = Collector(ros_context)
    spinner.add(node, collector)
    spinner.wait_for(lambda: len(collector.got["echo"]) >= 2, 30, "two simulated echoes")
    received, msg = collector.got["echo"][0]
    samples = echo_to_array(msg)
    assert samples.shape[0] == 2 and msg.sample_rate == FS and msg.emission_offset > 0
    window_ns = (samples.shape[1] - msg.emission_offset) / FS * 1e9
    assert received - stamp_to_ns(msg.header.stamp) >= window_ns
    assert np.abs(samples).max() > 0.01 and msg.speed_of_sound > 300


def test_sim_sensors_node_publishes_a_camera_and_echoes(spinner, ros_context):
    node = SimSensorsNode(context=ros_context, parameter_overrides=overrides(height=48, width=80, loop_frames=5,
                                                                             camera_rate=20.0, encoding="bgr8"))
    collector = Collector(ros_context)
    spinner.add(node, collector)
    spinner.wait_for(lambda: len(collector.got["image"]) >= 8 and len(collector.got["echo"]) >= 3, 30,
                     "images and echoes")
    images = {stamp_to_ns(m.header.stamp): m for _, m in collector.got["image"]}
    infos = {stamp_to_ns(m.header.stamp): m for _, m in collector.got["info"]}
    depths = {stamp_to_ns(m.header.stamp): m for _, m in collector.got["depth"]}
    shared = set(images) & set(infos) & set(depths)
    assert len(shared) >= 5
    stamp = sorted(shared)[2]
    image, info, depth = images[stamp], infos[stamp], depths[stamp]
    assert image.encoding == "bgr8" and image.header.frame_id == "camera_color_optical_frame"
    assert info.header == image.header == depth.header
    rgb = image_to_rgb(image)
    truth = image_to_depth(depth)
    assert rgb.shape == (48, 80, 3) and truth.shape == (48, 80) and np.isfinite(truth).mean() > 0.5
    K = camera_info_to_K(info)
    assert K[0, 2] == pytest.approx(40 - 0.5, abs=1.0) and (info.width, info.height) == (80, 48)
    diffs = np.diff(sorted(images))
    assert np.all(np.abs(diffs / 0.05e9 - np.round(diffs / 0.05e9)) < 1e-3)  # capture stamps on the 20 Hz grid
    received, echo = collector.got["echo"][0]
    assert received - stamp_to_ns(echo.header.stamp) >= (len(echo.data) / 2 - echo.emission_offset) / FS * 1e9
    assert echo.header.frame_id == "mic_array"


def test_a_failing_driver_thread_ends_run_node_with_status_1():
    """A node's own thread that fails (here a driver raising) shuts the node down: run_node returns 1, not 0."""
    from avs_depth_ros.runner import run_node, shutdown_on_error
    from avs_depth_ros.workers import DriverThread

    class FailingDriverNode(Node):
        def __init__(self) -> None:
            super().__init__("failing_driver")
            self._driver = DriverThread("failing", self._step, shutdown_on_error(self, "test driver"))
            self._driver.start()

        @staticmethod
        def _step() -> float:
            raise RuntimeError("device unplugged")

        @property
        def error(self) -> BaseException | None:
            return self._driver.error

    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(run_node(FailingDriverNode, "failing_driver", [])))
    thread.start()
    thread.join(timeout=30)
    assert result == [1]
