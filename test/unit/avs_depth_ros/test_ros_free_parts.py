"""The ROS-free parts of avs_depth_ros: the simulated sensors' schedule, parameter tables against config/avs_depth.yaml,
the launch file, rates and throttled reports. No rclpy needed.
(Emit-and-record stamping: test_duplex.py; the room loop: test_room_audio.py.)"""

from __future__ import annotations

import importlib.util
import math
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from avs_depth_core.audio.chirp import BATVISION_CHIRP
from avs_depth_ros.params import NODE_PARAMS, ParamSpec, validate
from avs_depth_ros.sim_source import FrameCache, SimSensors
from avs_depth_ros.stats import RateMeter, Summary, ThrottledReporter

ROOT = Path(__file__).resolve().parents[3]
FS = 44_100


# ------------------------------------------------------------------------------------------ simulated sensors
class FakeSequence:
    """Frames with an echo whose window is 0.1 s; frame(i) blocks until `release` allows index i."""

    def __init__(self, ready: int = 10**9) -> None:
        self.ready = ready
        self.allowed = threading.Condition()

    def allow(self, n: int) -> None:
        with self.allowed:
            self.ready = n
            self.allowed.notify_all()

    def frame(self, i: int) -> SimpleNamespace:
        with self.allowed:
            self.allowed.wait_for(lambda: i < self.ready, timeout=5.0)
        return SimpleNamespace(index=i, echo=np.full((2, 4410 + 10), i, np.float32), emission_offset=10,
                               sample_rate=FS, chirp=BATVISION_CHIRP)


def wait_rendered(cache: FrameCache, n: int) -> None:
    assert cache.wait_for(n - 1, 5.0) is not None


def test_sim_sensors_schedule_stamps_and_echo_release():
    cache = FrameCache(FakeSequence(), 5)
    wait_rendered(cache, 5)
    start = 10_000_000_000
    sensors = SimSensors(cache, camera_rate=10.0, chirp_rate=5.0, start_ns=start)
    images, echoes = [], []
    t = start
    while t < start + 1_000_000_000:
        caps, ech = sensors.step(t)
        images += [(c.stamp_ns, c.index, t) for c in caps]
        echoes += [(e.stamp_ns, int(e.samples[0, 0]), t) for e in ech]
        t += 5_000_000
    assert [s for s, _, _ in images] == [start + k * 100_000_000 for k in range(10)]
    assert [i for _, i, _ in images] == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]  # looped after loop_frames
    # echoes: emitted every 0.2 s from the newest frame, released only after their 0.1 s window
    assert [s for s, _, _ in echoes] == [start + k * 200_000_000 for k in range(5)]
    assert [f for _, f, _ in echoes] == [0, 2, 4, 1, 3]
    assert all(0.1e9 <= released - stamp < 0.1e9 + 5_000_001 for stamp, _, released in echoes)
    cache.close()


def test_sim_sensors_skip_unrendered_frames_and_do_not_burst():
    sequence = FakeSequence(ready=1)
    cache = FrameCache(sequence, 10)
    wait_rendered(cache, 1)
    sensors = SimSensors(cache, camera_rate=10.0, chirp_rate=None, start_ns=0)
    assert [c.index for c in sensors.step(0)[0]] == [0]
    assert sensors.step(100_000_000) == ([], []) and sensors.skipped_captures == 1  # frame 1 not rendered yet
    sequence.allow(10)
    wait_rendered(cache, 10)
    caps, _ = sensors.step(750_000_000)  # late by several periods: one capture, on the grid, not a burst
    assert [(c.index, c.stamp_ns) for c in caps] == [(1, 200_000_000)]
    assert sensors.step(790_000_000) == ([], [])
    assert [c.stamp_ns for c in sensors.step(800_000_000)[0]] == [800_000_000]
    cache.close()


def test_frame_cache_reports_render_errors():
    class Broken:
        def frame(self, i):
            raise ValueError("scene has no floor")

    cache = FrameCache(Broken(), 3)
    cache._thread.join(5.0)
    with pytest.raises(RuntimeError, match="failed to render frame 0: scene has no floor"):
        cache.get(0)


# ------------------------------------------------------------------------------------------ parameters and YAML
def test_yaml_declares_exactly_the_node_parameters_with_their_types():
    config = yaml.safe_load((ROOT / "config" / "avs_depth.yaml").read_text())
    assert set(config) == set(NODE_PARAMS)
    for node, specs in NODE_PARAMS.items():
        values = config[node]["ros__parameters"]
        assert set(values) == {s.name for s in specs}, node
        for spec in specs:
            value = values[spec.name]
            # ROS 2 parameters are typed: 10 is an integer and does not fit a double parameter
            kinds = (str, float, int) if spec.dynamic else (type(spec.default),)
            assert type(value) in kinds, (node, spec.name, value)
            assert spec.description and (not spec.choices or spec.default in spec.choices)
        validate(node, specs, values)


def test_validate_names_the_key():
    specs = [ParamSpec("mode", "a", "mode", None, ("a", "b")), ParamSpec("rate", 1.0, "rate", (0.5, 2.0))]
    with pytest.raises(ValueError, match="depth_node: parameter 'mode' is 'c'; expected one of: a, b"):
        validate("depth_node", specs, {"mode": "c", "rate": 1.0})
    with pytest.raises(ValueError, match="parameter 'rate' is 3.0; expected 0.5 <= value <= 2.0"):
        validate("depth_node", specs, {"mode": "a", "rate": 3.0})


def load_launch_file(monkeypatch, values: dict[str, str]) -> tuple[list, list]:
    """launch/avs_depth.launch.py against minimal stand-ins for launch and launch_ros (not installable here; the
    launch_pytest test in test/launch runs the real thing where ROS 2 is fully installed)."""
    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, _context):
            return values[self.name]

    stand_ins = {
        "ament_index_python.packages": SimpleNamespace(get_package_share_directory=lambda p: f"/opt/share/{p}"),
        "launch": SimpleNamespace(LaunchDescription=list),
        "launch.actions": SimpleNamespace(DeclareLaunchArgument=lambda name, **kw: ("argument", name, kw),
                                          OpaqueFunction=lambda function: ("opaque", function)),
        "launch.substitutions": SimpleNamespace(LaunchConfiguration=LaunchConfiguration),
        "launch_ros.actions": SimpleNamespace(Node=lambda **kw: kw),
    }
    for name, module in stand_ins.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("avs_depth_launch", ROOT / "launch" / "avs_depth.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    actions = module.generate_launch_description()
    arguments = [a for a in actions if a[0] == "argument"]
    return arguments, actions[-1][1](None)


def test_launch_file_arguments_and_nodes(monkeypatch):
    params = str(ROOT / "config" / "avs_depth.yaml")
    values = {"use_sim": "true", "params_file": params, "device": "cpu", "avsnet_checkpoint": "",
              "relative_checkpoint": "/models/rgb.safetensors", "namespace": "robot1", "log_level": "debug"}
    arguments, nodes = load_launch_file(monkeypatch, values)
    assert [a[1] for a in arguments] == list(values)
    assert all(a[2]["description"] for a in arguments)
    assert dict((a[1], a[2]["default_value"]) for a in arguments)["params_file"] == \
        "/opt/share/avs_depth_ros/config/avs_depth.yaml"
    sensors, depth = nodes
    assert sensors["executable"] == "sim_sensors_node" and sensors["parameters"] == [params]
    # launch arguments override the YAML only when given: an empty avsnet_checkpoint keeps the file's value
    assert depth["executable"] == "depth_node" and depth["parameters"] == [
        params, {"device": "cpu", "relative_checkpoint": "/models/rgb.safetensors"}]
    assert all(n["namespace"] == "robot1" and n["arguments"][-1] == "debug" for n in nodes)

    _, nodes = load_launch_file(monkeypatch, {**values, "use_sim": "false"})
    assert nodes[0]["executable"] == "echo_node"
    with pytest.raises(ValueError, match="use_sim:='maybe'"):
        load_launch_file(monkeypatch, {**values, "use_sim": "maybe"})
    with pytest.raises(FileNotFoundError, match="params_file:=/nowhere.yaml"):
        load_launch_file(monkeypatch, {**values, "params_file": "/nowhere.yaml"})


# ------------------------------------------------------------------------------------------ stats
def test_rate_meter_summary_and_throttled_reports():
    meter = RateMeter(window_s=2.0)
    for k in range(31):
        meter.tick(k * 100_000_000)
    assert meter.rate(3_000_000_000) == pytest.approx(10.0, rel=0.01)
    assert meter.rate(60_000_000_000) == 0.0 and meter.count == 31
    summary = Summary()
    assert math.isnan(summary.mean)
    for v in (1.0, 3.0):
        summary.add(v)
    assert summary.mean == 2.0 and summary.max == 3.0

    clock = [0]
    lines: list[str] = []
    report = ThrottledReporter(lines.append, period_s=5.0, clock_ns=lambda: clock[0])
    assert report("encoding", "bad encoding")
    assert not report("encoding", "bad encoding") and not report("encoding", "bad encoding")
    assert report("stamp", "bad stamp")
    clock[0] = 6_000_000_000
    assert report("encoding", "bad encoding")
    assert lines == ["bad encoding", "bad stamp", "bad encoding (2 more since the last report)"]
