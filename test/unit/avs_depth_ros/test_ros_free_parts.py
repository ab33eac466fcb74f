"""The ROS-free parts of avs_depth_ros: emit-and-record stamping (with a simulated sound card), the simulated sensors'
schedule, parameter tables against config/avs_depth.yaml, rates and throttled reports. No rclpy needed."""

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

from avs_depth_core.audio.chirp import BATVISION_CHIRP, synthesize_chirp
from avs_depth_ros import duplex
from avs_depth_ros.duplex import AudioUnavailableError, DuplexEchoRecorder, find_direct_path, parse_device, parse_latency
from avs_depth_ros.params import NODE_PARAMS, ParamSpec, validate
from avs_depth_ros.sim_source import FrameCache, SimSensors
from avs_depth_ros.stats import RateMeter, Summary, ThrottledReporter

ROOT = Path(__file__).resolve().parents[3]
FS = 44_100


# ------------------------------------------------------------------------------------------ a simulated sound card
class FakeStream:
    def __init__(self, card: FakeCard, callback, channels, blocksize, **_kwargs) -> None:
        self.card, self.callback = card, callback
        self.n_in, self.n_out = channels
        self.blocksize = blocksize or 256
        self.latency = (card.lat_in, card.lat_out)
        self.active = False

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False

    def close(self) -> None:
        self.card.closed = True


class FakeCard:
    """A duplex sound card in a room: the speaker's sample e leaves the DAC (lat_in + lat_out) after it was handed to
    the stream, reaches the microphones `direct` samples later, and an echo `echo` samples later.

    Stream clock: ADC time of input sample j is T0 + j / fs. The callback for the block starting at `pos` runs when the
    block's last sample has been captured plus the input latency (plus scheduling jitter), on both clocks.
    `dac_error_s` makes the host API misreport outputBufferDacTime; `zero_times` reports no times at all.
    """

    T0 = 1000.0
    SYS0 = 1_700_000_000_000_000_000

    def __init__(self, lat_in=0.006, lat_out=0.008, direct_m=0.1, echo_m=2.0, dac_error_s=0.0, zero_times=False,
                 reported_latency_error_s=0.0, seed=0) -> None:
        self.lat_in, self.lat_out = lat_in, lat_out
        self.loop = int(round((lat_in + lat_out) * FS))
        self.direct = int(round(direct_m / 343.0 * FS))
        self.echo = int(round(2 * echo_m / 343.0 * FS))
        self.dac_error_s, self.zero_times = dac_error_s, zero_times
        self.lat_out += reported_latency_error_s  # what the stream reports, not what happens
        self.rng = np.random.default_rng(seed)
        self.out = np.zeros(0, np.float32)
        self.stream: FakeStream | None = None
        self.closed = False
        self.now_ns = 0

    # the sounddevice API the recorder uses
    def check_input_settings(self, device=None, **_kwargs) -> None:
        if device == "missing":
            raise ValueError(f"No input device matching {device!r}")

    def check_output_settings(self, **_kwargs) -> None:
        pass

    def Stream(self, **kwargs) -> FakeStream:
        self.stream = FakeStream(self, **kwargs)
        return self.stream

    def query_devices(self) -> str:
        return "  0 Fake duplex card, ALSA (2 in, 2 out)"

    def run(self, seconds: float) -> None:
        s = self.stream
        blocks = int(seconds * FS / s.blocksize)
        for _ in range(blocks):
            pos = len(self.out)
            n = s.blocksize
            idx = np.arange(pos, pos + n)
            heard = np.zeros(n, np.float32)
            for delay, gain in ((self.loop + self.direct, 0.5), (self.loop + self.echo, 0.2)):
                src = idx - delay
                ok = (src >= 0) & (src < pos)
                heard[ok] += gain * self.out[src[ok]]
            indata = np.stack([heard, 0.9 * heard] + [np.zeros(n, np.float32)] * (s.n_in - 2), axis=1)
            indata += self.rng.normal(0, 1e-4, indata.shape).astype(np.float32)
            outdata = np.zeros((n, s.n_out), np.float32)
            t_end = self.T0 + (pos + n) / FS + self.lat_in
            jitter = float(self.rng.uniform(0, 0.002))
            self.now_ns = self.SYS0 + int(round((t_end - self.T0 + jitter) * 1e9))
            if self.zero_times:
                info = SimpleNamespace(inputBufferAdcTime=0.0, outputBufferDacTime=0.0, currentTime=0.0)
            else:
                info = SimpleNamespace(inputBufferAdcTime=self.T0 + pos / FS, currentTime=t_end + jitter,
                                       outputBufferDacTime=self.T0 + (pos + self.loop) / FS + self.dac_error_s)
            s.callback(indata, outdata, n, info, 0)
            self.out = np.concatenate([self.out, outdata[:, 0]])

    def true_emission_ns(self, out_index: int) -> int:
        """System time at which output sample `out_index` left the speaker."""
        return self.SYS0 + int(round((out_index + self.loop) / FS * 1e9))


def make_recorder(card: FakeCard, **kwargs) -> DuplexEchoRecorder:
    settings = dict(chirp=synthesize_chirp(BATVISION_CHIRP), sample_rate=FS, chirp_rate=10.0, window_s=0.2,
                    pre_roll_s=0.002, input_channels=[0, 1], gain=0.5, direct_path_s=0.1 / 343.0, tolerance_s=0.001,
                    sounddevice_module=card, clock_ns=lambda: card.now_ns)
    settings.update(kwargs)
    recorder = DuplexEchoRecorder(**settings)
    recorder.start()
    return recorder


def emission_out_indices(recorder: DuplexEchoRecorder, count: int) -> list[int]:
    return [recorder.period // 2 + k * recorder.period for k in range(count)]


def test_duplex_stamps_emission_and_finds_direct_path():
    card = FakeCard()
    rec = make_recorder(card)
    card.run(0.65)
    captures = rec.poll()
    assert len(captures) >= 4
    chirp = synthesize_chirp(BATVISION_CHIRP)
    for capture, out_index in zip(captures, emission_out_indices(rec, len(captures)), strict=False):
        assert capture.samples.shape == (2, rec.pre_roll + rec.window)
        assert capture.emission_offset == rec.pre_roll and capture.sample_rate == FS
        assert abs(capture.stamp_ns - card.true_emission_ns(out_index)) < 1e9 / FS  # within one sample
        assert abs(capture.direct_path_error_ms) < 0.05 and not capture.corrected
        # the direct path (and the echo) sit where the acoustics put them, relative to emission_offset
        found = find_direct_path(capture.samples, chirp, 0, capture.samples.shape[1] - len(chirp))
        assert found == capture.emission_offset + card.direct
    assert rec.lost_windows == 0 and rec.xruns == 0


def test_duplex_corrects_misreported_dac_time_with_the_direct_path():
    card = FakeCard(dac_error_s=0.005)  # host API reports output 5 ms late (PortAudio#586-style clock trouble)
    rec = make_recorder(card)
    card.run(0.45)
    captures = rec.poll()
    assert captures
    for capture, out_index in zip(captures, emission_out_indices(rec, len(captures)), strict=False):
        assert capture.corrected
        assert capture.direct_path_error_ms == pytest.approx(-5.0, abs=0.05)
        assert abs(capture.stamp_ns - card.true_emission_ns(out_index)) < 1e9 / FS

    card = FakeCard(dac_error_s=0.005)
    rec = make_recorder(card, correct_with_direct_path=False)
    card.run(0.45)
    capture = rec.poll()[0]
    assert not capture.corrected and capture.direct_path_error_ms == pytest.approx(-5.0, abs=0.05)
    assert capture.stamp_ns - card.true_emission_ns(emission_out_indices(rec, 1)[0]) == pytest.approx(5e6, abs=1e5)


def test_duplex_falls_back_to_stream_latency_without_host_times():
    card = FakeCard(zero_times=True)  # DirectSound/WDM-KS report zeros (PortAudio#121, #531)
    rec = make_recorder(card)
    card.run(0.45)
    captures = rec.poll()
    assert captures
    for capture, out_index in zip(captures, emission_out_indices(rec, len(captures)), strict=False):
        assert not capture.corrected and abs(capture.direct_path_error_ms) < 0.05
        assert abs(capture.stamp_ns - card.true_emission_ns(out_index)) < 2e9 / FS


def test_duplex_without_signal_reports_unchecked_and_late_poll_loses_windows():
    card = FakeCard()
    rec = make_recorder(card, gain=0.0)
    card.run(0.45)
    captures = rec.poll()
    assert captures and all(math.isnan(c.direct_path_error_ms) and not c.corrected for c in captures)

    card = FakeCard()
    rec = make_recorder(card)
    card.run(3.5)  # the ring holds 2 s: windows from the first second are gone by now
    captures = rec.poll()
    truth = [card.true_emission_ns(i) for i in emission_out_indices(rec, len(captures) + rec.lost_windows)]
    assert rec.lost_windows > 0 and captures  # the oldest windows are counted as lost, the newer ones are intact
    assert all(abs(c.stamp_ns - t) < 1e9 / FS for c, t in zip(captures, truth[rec.lost_windows:], strict=True))


def test_duplex_errors_are_clear(monkeypatch):
    card = FakeCard()
    with pytest.raises(AudioUnavailableError, match="(?s)device 'missing'.*No input device.*Fake duplex card"):
        make_recorder(card, device="missing")

    def no_portaudio(name):
        raise OSError("PortAudio library not found")

    monkeypatch.setattr(duplex.importlib, "import_module", no_portaudio)
    with pytest.raises(AudioUnavailableError, match="PortAudio library not found.*libportaudio2"):
        make_recorder(card, sounddevice_module=None)

    rec = make_recorder(FakeCard())
    rec._stream.active = False  # device unplugged
    with pytest.raises(AudioUnavailableError, match="stream stopped"):
        rec.poll()
    with pytest.raises(ValueError, match="fewer than"):
        make_recorder(FakeCard(), chirp_rate=400.0)
    assert parse_device("") is None and parse_device("3") == 3 and parse_device("USB Audio") == "USB Audio"
    assert parse_latency("low") == "low" and parse_latency("0.02") == 0.02
    with pytest.raises(ValueError, match="latency 'soon'"):
        parse_latency("soon")


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
            assert type(value) is type(spec.default), (node, spec.name, value)
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
