"""Recordings for echo-stats from a wav, a BatVision folder (the real sample, read in place) and a simulated bag."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from avs_depth_core.audio.wav import write_wav
from avs_depth_core.cli import main
from avs_depth_core.data.echo_sources import load_records

ROOT = Path(__file__).resolve().parents[4]
SAMPLE = ROOT.parent / "shared" / "fixtures" / "batvision_bv2_sample"


def test_a_wav_with_its_emission_offset(tmp_path):
    path = tmp_path / "echo.wav"
    write_wav(path, np.zeros((2, 500)), 44_100)
    (record,) = load_records(path, emission_offset=7)
    assert record.samples.shape == (2, 500) and record.sample_rate == 44_100 and record.emission_offset == 7
    assert math.isnan(record.depth_median_m)


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="../shared/fixtures/batvision_bv2_sample not present")
def test_the_real_batvision_folder_read_in_place():
    (record,) = load_records(SAMPLE)
    assert record.samples.shape == (2, 20_000) and record.emission_offset == 0
    assert record.depth_median_m == pytest.approx(1.03, abs=0.01)


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="../shared/fixtures/batvision_bv2_sample not present")
def test_a_bv2_root_with_location_csvs(tmp_path):
    location = tmp_path / "bv2" / "hall"
    (location / "audio").mkdir(parents=True)
    (location / "depth").mkdir()
    shutil.copy(SAMPLE / "audio_47.wav", location / "audio" / "audio_47.wav")   # a temporary copy, outside the repository
    shutil.copy(SAMPLE / "depth_47.npy", location / "depth" / "depth_47.npy")
    (location / "train.csv").write_text("depth path,depth file name,audio path,audio file name,camera path,camera file name\n"
                                        "hall/depth,depth_47.npy,hall/audio,audio_47.wav,hall/camera,camera_47.jpeg\n")
    (record,) = load_records(tmp_path / "bv2")
    assert record.depth_median_m == pytest.approx(1.03, abs=0.01)


def test_a_simulated_bag_gives_echoes_with_their_depth(tmp_path):
    bag = tmp_path / "bag"
    assert main(["simulate", "--preset", "bv1", "--sequences", "1", "--frames", "3", "--height", "16", "--width", "32",
                 "--out", str(bag)]) == 0
    records = load_records(bag)
    assert len(records) == 3
    assert all(r.emission_offset == 256 and r.samples.shape[0] == 2 for r in records)
    assert all(0 < r.depth_median_m < 12 for r in records)
    assert len(load_records(bag, limit=2)) == 2


def test_inputs_that_are_no_recordings(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_records(tmp_path / "missing.wav")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a .wav file"):
        load_records(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no BatVision recordings"):
        load_records(tmp_path / "empty")
