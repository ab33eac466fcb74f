"""The room in the loop without audio hardware (its processing, block by block) and the audio-check calibration file
echo_node reads. No rclpy, no sound card."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from avs_depth_ros.audio_check import apply_calibration, load_calibration
from avs_depth_ros.params import ECHO_NODE
from avs_depth_ros.room_audio import RoomAudio


def test_room_audio_convolves_the_speaker_with_the_room_block_by_block():
    room = RoomAudio(sample_rate=44_100, max_response=400, block=128, reference_gain=0.5)
    h = np.random.default_rng(1).normal(0, 0.02, (2, 400))  # keeps the output inside full scale
    room.set_response(h)
    x = np.zeros(128 * 20)
    x[200:332] = 0.5 * np.sin(np.arange(132) * 0.7)  # a chirp-like burst at the reference gain
    y = np.concatenate([room.process(x[i:i + 128]) for i in range(0, len(x), 128)])
    expected = np.stack([np.convolve(x / 0.5, h[c])[:len(x)] for c in range(2)], axis=1)
    assert y.dtype == np.float32 and y.shape == (len(x), 2) and np.allclose(y, expected, atol=1e-5)
    noisy = RoomAudio(sample_rate=44_100, max_response=400, block=128, ambient_noise=1e-3, mic_noise=3e-4,
                      limiter=(0.8, 0.98))
    quiet = np.concatenate([noisy.process(np.zeros(128)) for _ in range(200)])
    assert 0.5e-3 < quiet.std() < 3e-3  # the simulator's background and microphone noise levels


def test_calibration_file_is_checked_and_applied(tmp_path):
    params = {spec.name: spec.default for spec in ECHO_NODE}
    good = tmp_path / "audio_check.yaml"
    good.write_text(yaml.safe_dump({"audio_check": {"measured_at": "today", "loop_delay_ms": {"median": 23.3},
                                                    "snr_db": [40.0, 41.0]},
                                    "echo_node": {"gain": 0.42, "latency": "0.1", "device": "USB"}}))
    lines: list[str] = []
    merged = apply_calibration(params, good, lines.append)
    assert merged["gain"] == 0.42 and merged["device"] == "USB" and merged["chirp_rate"] == params["chirp_rate"]
    assert "gain 0.5 -> 0.42" in lines[0] and "loop delay 23.3 ms" in lines[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"echo_node": {"chirp_rate": 20.0}}))
    with pytest.raises(ValueError, match="bad.yaml: echo_node.chirp_rate is not a setting audio-check writes"):
        load_calibration(bad)
    bad.write_text(yaml.safe_dump({"echo_node": {"gain": "loud"}}))
    with pytest.raises(ValueError, match="echo_node.gain is 'loud'; expected a float"):
        load_calibration(bad)
    bad.write_text(yaml.safe_dump({"echo_node": {"gain": 3.0}}))
    with pytest.raises(ValueError, match="'gain' is 3.0"):
        apply_calibration(params, bad)
    with pytest.raises(FileNotFoundError, match="missing.yaml: not found"):
        load_calibration(tmp_path / "missing.yaml")
