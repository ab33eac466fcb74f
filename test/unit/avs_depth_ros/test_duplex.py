"""Emit-and-record stamping (avs_depth_ros.duplex, avs_depth_ros.stamping) on a simulated full-duplex sound card that
misbehaves the way PulseAudio through ALSA's pulse plugin was measured to (../shared/reference/audio_loopback.md):
a start-up burst of filler callbacks and a stall, capture times off by 0.2 s for the first 1.5 s, DAC times off by
11 ms for good, xruns that shift the output. No rclpy, no sound card."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from avs_depth_core.audio.chirp import BATVISION_CHIRP, synthesize_chirp
from avs_depth_ros import duplex
from avs_depth_ros.duplex import (
    MAX_LOOP_S,
    PROBE_TRIES,
    AudioUnavailableError,
    DuplexEchoRecorder,
    ReopeningRecorder,
    find_direct_path,
    parse_device,
    parse_latency,
    stream_flags,
)
from avs_depth_ros.stamping import ChirpSchedule, LoopDelay, SampleClock

FS = 44_100
SYS0 = 1_700_000_000_000_000_000


class FakeStream:
    def __init__(self, card: FakeCard, callback, channels, blocksize, **_kwargs) -> None:
        self.card, self.callback, self.channels = card, callback, channels
        self.blocksize = blocksize or 256
        self.latency = 0.007
        self.active = False

    def start(self) -> None:
        self.active = True

    def abort(self) -> None:
        self.active = False

    stop = abort

    def close(self) -> None:
        self.card.closed = True


class FakeCard:
    """A sound card in a room: output sample e leaves the speaker when input sample e + `loop` is captured, reaches the
    microphones `direct` samples after that, and an echo at `echo_m`. Input sample j is captured at system time
    SYS0 + j / fs (+ stall_s once the start-up burst is over); its block's input callback runs `delivery_s` plus up to
    2 ms after the block's last sample. Input and output streams run block by block, output first.

    burst: that many filler input callbacks at start (input underflow, no time passing), then a stall of stall_s.
    adc_error_s: the host API's capture times are this much too early while t < adc_error_until_s (PulseAudio: 0.2 s).
    dac_error_s: outputBufferDacTime misreported by this much for good (PulseAudio: 11 ms). zero_times: no times at all.
    xrun_at: {block index: (flag name, output slip in samples)} -- an xrun that delays the output by the slip.
    """

    def __init__(self, loop=617, direct_m=0.1, echo_m=2.0, delivery_s=0.0003, burst=0, stall_s=0.0, adc_error_s=0.0,
                 adc_error_until_s=0.0, dac_error_s=0.0, zero_times=False, xrun_at=None, seed=0) -> None:
        self.loop = loop
        self.direct = int(round(direct_m / 343.0 * FS))
        self.echo = int(round(2 * echo_m / 343.0 * FS))
        self.delivery_s, self.burst, self.stall_s = delivery_s, burst, stall_s
        self.adc_error_s, self.adc_error_until_s = adc_error_s, adc_error_until_s
        self.dac_error_s, self.zero_times = dac_error_s, zero_times
        self.xrun_at = xrun_at or {}
        self.rng = np.random.default_rng(seed)
        self.input: FakeStream | None = None
        self.output: FakeStream | None = None
        self.closed = False
        self.now_ns = SYS0
        self._reset()

    def _reset(self) -> None:
        self.out = np.zeros(0, np.float32)  # what left the speaker, indexed like the input (minus `loop`)
        self.blocks = self.slip = 0
        self.inserted: list[tuple[int, int]] = []  # (position in out, samples of silence inserted there)

    def check_input_settings(self, device=None, **_kwargs) -> None:
        if device == "missing":
            raise ValueError(f"No input device matching {device!r}")

    def check_output_settings(self, **_kwargs) -> None:
        pass

    def InputStream(self, **kwargs) -> FakeStream:
        self.input = FakeStream(self, **kwargs)
        self._reset()
        return self.input

    def OutputStream(self, **kwargs) -> FakeStream:
        self.output = FakeStream(self, **kwargs)
        return self.output

    def query_devices(self) -> str:
        return "  0 Fake duplex card, ALSA (2 in, 2 out)"

    def capture_s(self, j: int) -> float:
        """System time (s after SYS0) at which input sample j was captured."""
        return j / FS + (self.stall_s if j >= self.burst * self.input.blocksize else 0.0)

    def run(self, seconds: float) -> None:
        for _ in range(int(seconds * FS / self.input.blocksize)):
            self._block(self.input.blocksize)

    def _block(self, n: int) -> None:
        pos = self.blocks * n
        in_status: object = 0
        out_status: object = 0
        flag = self.xrun_at.get(self.blocks)
        if flag is not None:
            if flag[0].startswith("output"):
                out_status = SimpleNamespace(**{flag[0]: True})
            else:
                in_status = SimpleNamespace(**{flag[0]: True})
            self.inserted.append((len(self.out), flag[1]))
            self.out = np.concatenate([self.out, np.zeros(flag[1], np.float32)])  # silence inserted: the output slips
            self.slip += flag[1]
        if self.blocks < self.burst:
            in_status = SimpleNamespace(input_underflow=True)
            now_s = 0.0
        else:
            now_s = self.capture_s(pos + n - 1) + 1 / FS + self.delivery_s + float(self.rng.uniform(0, 0.002))
        self.now_ns = SYS0 + int(round(now_s * 1e9))
        adc = self.capture_s(pos) - (self.adc_error_s if now_s < self.adc_error_until_s else 0.0)
        dac = self.capture_s(pos + self.loop + self.slip) + self.dac_error_s
        out_info = SimpleNamespace(outputBufferDacTime=dac, currentTime=now_s)
        in_info = SimpleNamespace(inputBufferAdcTime=adc, currentTime=now_s)
        if self.zero_times:
            out_info = SimpleNamespace(outputBufferDacTime=0.0, currentTime=0.0)
            in_info = SimpleNamespace(inputBufferAdcTime=0.0, currentTime=0.0)
        outdata = np.zeros((n, self.output.channels), np.float32)
        self.output.callback(outdata, n, out_info, out_status)
        self.out = np.concatenate([self.out, outdata[:, 0]])
        heard = np.zeros(n, np.float32)
        if self.blocks >= self.burst:
            idx = np.arange(pos, pos + n)
            for delay, gain in ((self.loop + self.direct, 0.5), (self.loop + self.echo, 0.2)):
                src = idx - delay
                ok = (src >= 0) & (src < len(self.out))
                heard[ok] += gain * self.out[src[ok]]
        indata = np.stack([heard, 0.9 * heard], axis=1) + self.rng.normal(0, 1e-4, (n, 2)).astype(np.float32)
        self.input.callback(indata, n, in_info, in_status)
        self.blocks += 1

    def true_emission_ns(self, out_index: int) -> int:
        """System time at which output sample `out_index` left the speaker (after the slips of earlier xruns)."""
        j = out_index + self.loop + sum(slip for block, (_, slip) in self.xrun_at.items()
                                        if block * self.input.blocksize <= out_index)
        return SYS0 + int(round(self.capture_s(j) * 1e9))

    def played(self) -> list[int]:
        """Output indices where a chirp began, read from what the recorder wrote (not from its bookkeeping)."""
        loud = np.abs(self.out) > 1e-6
        starts = np.nonzero(loud[1:] & ~loud[:-1])[0] + 1
        chirp = synthesize_chirp(BATVISION_CHIRP)
        starts = [max(range(i - 3, i + 4), key=lambda j: float(np.dot(self.out[j:j + len(chirp)], chirp[:len(
            self.out[j:j + len(chirp)])]))) for i in starts if not loud[max(0, i - 300):i].any()]  # exact onset
        return [i - sum(n for at, n in self.inserted if at <= i) for i in starts]  # as the recorder numbered them


def make_recorder(card: FakeCard, **kwargs) -> DuplexEchoRecorder:
    settings = dict(chirp=synthesize_chirp(BATVISION_CHIRP), sample_rate=FS, chirp_rate=10.0, window_s=0.2,
                    pre_roll_s=0.002, input_channels=[0, 1], gain=0.5, direct_path_s=0.1 / 343.0, tolerance_s=0.001,
                    sounddevice_module=card, clock_ns=lambda: card.now_ns)
    settings.update(kwargs)
    recorder = DuplexEchoRecorder(**settings)
    recorder.start()
    return recorder


def emission_times(card: FakeCard, count: int | None = None, skip: int = 0) -> list[int]:
    """True emission times of the chirps the card played, in order."""
    played = card.played()[skip:]
    return [card.true_emission_ns(e) for e in played[:count]]


def assert_on_true_emissions(captures, card: FakeCard, tolerance_ns: float = 0.5e6) -> None:
    """Every capture stamped within tolerance of a chirp the card played, in order, with its direct path in place."""
    truth = np.array(emission_times(card))
    chirp = synthesize_chirp(BATVISION_CHIRP)
    assert captures
    for capture in captures:
        assert np.min(np.abs(truth - capture.stamp_ns)) < tolerance_ns
        found = find_direct_path(capture.samples, chirp, 0, capture.samples.shape[1] - len(chirp))
        assert found == capture.emission_offset + card.direct
    assert np.all(np.diff([c.stamp_ns for c in captures]) > 0)


def assert_stamped(captures, truth, card: FakeCard, tolerance_ns: float = 0.5e6) -> None:
    chirp = synthesize_chirp(BATVISION_CHIRP)
    assert len(captures) == len(truth) > 0
    for capture, true_ns in zip(captures, truth, strict=True):
        assert abs(capture.stamp_ns - true_ns) < tolerance_ns
        found = find_direct_path(capture.samples, chirp, 0, capture.samples.shape[1] - len(chirp))
        assert found == capture.emission_offset + card.direct  # the direct path where the acoustics put it


def test_duplex_stamps_emissions_from_the_direct_path_and_callback_times():
    card = FakeCard(dac_error_s=0.011)  # the host API's DAC time is 11 ms off for good (as measured on PulseAudio)
    rec = make_recorder(card)
    card.run(3.3)
    captures = rec.poll()
    assert rec.first_emission >= 0.5 * FS - 256  # the stream settled (0.5 s) before the first chirp
    played = card.played()
    gap = int(MAX_LOOP_S * FS)
    assert played[:3] == [rec.first_emission, rec.first_emission + gap, rec.first_emission + 2 * gap]  # probe pair
    assert_stamped(captures, emission_times(card, len(captures)), card)
    assert len(captures) >= 8 and rec.loop.value == card.loop and rec.timing == "direct_path"
    assert all(abs(c.direct_path_error_ms) < 0.05 and c.timing == "direct_path" for c in captures)
    assert rec.lost_windows == 0 and rec.xruns == 0 and rec.corrections == 0
    assert captures[0].samples.shape == (2, rec.pre_roll + rec.window) and captures[0].emission_offset == rec.pre_roll


def test_duplex_measures_a_loop_delay_longer_than_the_chirp_period():
    card = FakeCard(loop=int(0.23 * FS))  # a room loop or a Bluetooth speaker: 230 ms at 10 chirps per second
    rec = make_recorder(card)
    card.run(3.0)
    captures = rec.poll()
    assert rec.loop.value == card.loop and len(captures) >= 6
    assert_stamped(captures, emission_times(card, len(captures)), card)


def test_duplex_start_up_burst_stall_and_wrong_capture_times_do_not_reach_the_stamps():
    """PulseAudio's start: 4 filler callbacks, a 1.5 s stall, capture times 0.2 s early for the first 1.5 s."""
    card = FakeCard(burst=4, stall_s=1.5, adc_error_s=0.2, adc_error_until_s=4.8)
    rec = make_recorder(card)
    card.run(2.8)
    captures = rec.poll()
    assert rec.stats.startup_flags == 4 and rec.xruns == 0  # the burst is not an underrun of the running stream
    assert_stamped(captures, emission_times(card, len(captures)), card)
    assert rec.clock.source == "callback_bound"  # the early host times were refused
    card.run(2.0)
    later = rec.poll()
    assert_stamped(later, emission_times(card, len(later), skip=len(captures)), card)
    assert rec.clock.source == "host_times"  # once they agree with the callbacks they are used


def test_duplex_xruns_never_leave_a_window_on_the_wrong_emission():
    card = FakeCard(xrun_at={600: ("output_underflow", 500)})  # block 600 (3.5 s): the output slips 500 samples
    rec = make_recorder(card)
    captures = []
    for _ in range(14):
        card.run(0.5)
        captures += rec.poll()
    # the slipped windows are moved to their direct path (11 ms off, within the search range), then the lock follows
    assert rec.stats.xruns == {"output_underflow": 1} and rec.loop.value == card.loop + 500 and rec.loop.relocks == 1
    assert rec.corrections >= 1 and rec.lost_windows == 0 and len(captures) >= 40
    assert_on_true_emissions(captures, card)  # each window stamped with the emission it came from

    card = FakeCard(xrun_at={600: ("output_underflow", 3000)})  # 68 ms: beyond the search range
    rec = make_recorder(card)
    captures = []
    for _ in range(16):
        card.run(0.5)
        captures += rec.poll()
    assert rec.loop.value == card.loop + 3000 and rec.stats.lost_windows["no_direct_path"] == 3
    assert rec.stats.lost_windows["reacquire"] >= 1 and len(captures) >= 30  # three misses, then a new probe pair
    assert_on_true_emissions(captures, card)

    card = FakeCard(xrun_at={500: ("input_overflow", 0)})  # the input lost samples: its timeline starts anew
    rec = make_recorder(card)
    card.run(2.8)
    captures = rec.poll()
    card.run(3.2)
    captures += rec.poll()
    assert 1 <= rec.stats.lost_windows.get("xrun", 0) <= 4 and rec.clock.segment == 1 and rec.timing == "direct_path"
    assert_on_true_emissions(captures, card)


def test_duplex_trusts_stream_times_when_asked_and_without_a_direct_path():
    card = FakeCard(dac_error_s=0.005)
    rec = make_recorder(card, correct_with_direct_path=False)
    card.run(1.2)
    captures = rec.poll()
    assert captures and all(c.timing == "stream_times" for c in captures)
    truth = emission_times(card, len(captures))
    assert all(c.stamp_ns - t == pytest.approx(5e6, abs=0.1e6) for c, t in zip(captures, truth, strict=True))

    card = FakeCard()
    rec = make_recorder(card, gain=0.0)  # muted speaker: no direct path to lock to
    for _ in range(24):
        card.run(0.5)
        captures = rec.poll()
    assert rec.stats.failed_probes == PROBE_TRIES and rec.timing == "stream_times"
    assert captures and all(c.timing == "stream_times" and math.isnan(c.direct_path_error_ms) for c in captures)


def test_duplex_without_host_times_and_late_poll():
    card = FakeCard(zero_times=True)  # DirectSound/WDM-KS report zeros (PortAudio#121, #531)
    rec = make_recorder(card)
    card.run(2.5)
    captures = rec.poll()
    assert_stamped(captures, emission_times(card, len(captures)), card)

    card = FakeCard()
    rec = make_recorder(card)
    card.run(1.5)
    rec.poll()  # locked
    card.run(6.0)  # the ring holds 4 s: the oldest windows are gone by the time poll() comes
    captures = rec.poll()
    lost = rec.stats.lost_windows.get("late", 0)
    assert lost > 0 and captures
    assert_on_true_emissions(captures, card)


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
    rec._streams[0].active = False  # device unplugged
    with pytest.raises(AudioUnavailableError, match="stream stopped"):
        rec.poll()
    card = FakeCard()
    rec = make_recorder(card)
    card.run(0.2)
    rec._last_input -= 4.0  # no input callback for 4 s while the streams still claim to be active
    with pytest.raises(AudioUnavailableError, match="no input for 3 s: the stream hung"):
        rec.poll()
    with pytest.raises(ValueError, match="fewer than"):
        make_recorder(FakeCard(), chirp_rate=400.0)
    assert parse_device("") is None and parse_device("3") == 3 and parse_device("USB Audio") == "USB Audio"
    assert parse_latency("low") == "low" and parse_latency("0.02") == 0.02
    with pytest.raises(ValueError, match="latency 'soon'"):
        parse_latency("soon")
    assert stream_flags(0) == [] and stream_flags(SimpleNamespace(output_underflow=True)) == ["output_underflow"]
    assert stream_flags(SimpleNamespace(priming_output=True)) == []


def test_reopening_recorder_backs_off_and_counts():
    card = FakeCard()
    rec = make_recorder(card)
    lines: list[str] = []
    audio = ReopeningRecorder(rec, lines.append, first_backoff_s=0.5, max_backoff_s=2.0)
    card.run(2.0)
    assert audio.poll(0.0) and audio.state == "running"
    card.input.active = False  # PortAudio dropped the stream
    assert audio.poll(1.0) == [] and audio.state == "reopening" and audio.drops == 1
    assert audio.poll(1.4) == []  # still backing off
    card.check_input_settings = lambda **_kw: (_ for _ in ()).throw(ValueError("device busy"))
    audio.poll(1.5)
    assert audio.failed_reopens == 1 and "device busy" in lines[-1] and "next try in 1 s" in lines[-1]
    del card.check_input_settings
    audio.poll(2.0)
    assert audio.reopens == 0  # 1 s backoff not over yet
    audio.poll(2.6)
    assert audio.reopens == 1 and audio.state == "running" and "reopened" in lines[-1]
    card.run(2.0)
    captures = audio.poll(4.0)
    assert_stamped(captures, emission_times(card, len(captures)), card)  # a fresh timeline after the reopen


def test_loop_delay_locks_ignores_an_outlier_and_relocks():
    loop = LoopDelay(tolerance=3, needed=3)
    assert not loop.add(100) and not loop.add(140) and loop.value is None
    assert not loop.add(101) and loop.value is None  # 100, 140, 101 do not agree
    assert not loop.add(102) and loop.value is None  # 140, 101, 102 neither
    assert loop.add(100) and loop.value == 101  # 101, 102, 100
    assert loop.add(103) and not loop.add(500) and loop.value == 101 and loop.outliers == 1
    assert loop.add(101)  # the outlier is forgotten
    assert not loop.add(600) and not loop.add(601) and loop.add(602) and loop.value == 601 and loop.relocks == 1


def test_sample_clock_settles_breaks_on_impossible_samples_and_keeps_through_slower_delivery():
    clock = SampleClock(FS, settle_s=0.5)
    block = 441
    t = [0.0]

    def callbacks(n: int, start: int, offset_s: float = 0.0) -> int:
        pos = start
        for _ in range(n):
            clock.add(SYS0 + int((pos + block) / FS * 1e9 + offset_s * 1e9 + 2e5), pos, block)
            pos += block
        t[0] = pos
        return pos

    pos = callbacks(40, 0)
    assert not clock.settled  # 0.4 s
    pos = callbacks(20, pos)
    assert clock.settled and abs(clock.time_ns(0) - SYS0) < 0.3e6 and clock.source == "callback_bound"
    segment = clock.segment
    pos = callbacks(5, pos, offset_s=-0.01)  # samples 10 ms earlier than possible: silence was inserted
    assert clock.segment == segment + 1 and clock.breaks == 1 and not clock.settled
    assert clock.time_ns(0, segment) is None  # stamps of the old segment are refused from now on
    clock = SampleClock(FS, settle_s=0.5)
    pos = callbacks(600, 0)
    pos = callbacks(60, pos, offset_s=0.02)  # callbacks 20 ms later from now on (the server raised its latency)
    assert abs(clock.time_ns(pos) - (SYS0 + pos / FS * 1e9)) < 0.3e6 and clock.breaks == 0  # capture times kept


def test_chirp_schedule_probe_pair_then_period():
    schedule = ChirpSchedule(period=100, gap=500)
    assert schedule.overlapping(0, 10_000, 10) == []  # silent until started
    schedule.restart(1000, probing=True)
    assert [e for _, e in schedule.overlapping(0, 2400, 10)] == [1000, 1500, 2000, 2100, 2200, 2300]
    assert schedule.overlapping(1005, 1006, 10) == [(0, 1000)]  # a chirp sounding across a block boundary
    schedule.restart(50, probing=False)
    assert [k for k, _ in schedule.overlapping(0, 400, 10)] == [0, 1, 2, 3] and schedule.id == 2


@pytest.mark.parametrize("ppm", [430.0, -430.0, 0.0])
def test_sample_clock_follows_a_drifting_sample_clock(ppm):
    """PulseAudio's null sink ran 430 ppm fast against the system clock; sound cards run tens of ppm either way."""
    clock = SampleClock(FS, settle_s=0.5)
    rng = np.random.default_rng(1)
    rate = FS * (1 + ppm * 1e-6)  # samples per second of system time
    pos, block = 0, 441
    for _ in range(1200):  # 12 s
        late = float(rng.exponential(0.003)) + 0.0002  # callbacks come 0.2 ms or more after their last sample
        clock.add(SYS0 + int(((pos + block) / rate + late) * 1e9), pos, block)
        pos += block
    for index in (pos - 11_025, pos - 44_100):  # 0.25 s and 1 s back, where windows are cut
        assert abs(clock.time_ns(index) - (SYS0 + index / rate * 1e9)) < 0.5e6
