import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))

import dynamic_regions_ablation as dra
import scaling_ablation as sa
from scaling_ablation import monodepth2_config


def test_quick_stage1_is_the_wider_monodepth2_on_the_120_sequence_world(tmp_path):
    quick = dra.SETTINGS["quick"]
    assert (quick["sim"]["sequences"], quick["sim"]["frames"]) == (120, 10)
    config = monodepth2_config("bv1", 0, {"sim": quick["sim"], "monodepth2": quick["monodepth2"]}, tmp_path)
    assert config["model"]["decoder_channels"] == [8, 16, 32, 64, 128]
    assert config["model"]["num_epochs"] == 18


def test_sequences_and_frames_override_the_world(monkeypatch, tmp_path):
    seen = {}

    def fake_simulate(bag, preset, seed, sim, world):
        seen.update(sim)
        raise SystemExit("stop after the world")

    monkeypatch.setattr(sa, "simulate", fake_simulate)
    threads = torch.get_num_threads()  # main() sets one thread for its lanes; the test process keeps its own
    try:
        with pytest.raises(SystemExit, match="stop after the world"):
            dra.main(["--smoke", "--sequences", "9", "--frames", "7", "--work", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    assert (seen["sequences"], seen["frames"]) == (9, 7)
    assert dra.SETTINGS["smoke"]["sim"]["sequences"] == 6  # the setting itself is untouched


def test_a_bag_of_other_world_settings_is_not_reused(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(sa, "simulate", lambda bag, preset, seed, sim, world: calls.append(world) or bag.mkdir() or 1.5)
    sim = dra.SETTINGS["smoke"]["sim"]
    assert sa.ensure_bag(tmp_path, "bv1", 3, sim, world="--dynamic") == 1.5
    assert json.loads((tmp_path / "bag_key.json").read_text())["sequences"] == sim["sequences"]
    assert sa.ensure_bag(tmp_path, "bv1", 3, sim, world="--dynamic") is None  # same world: reused
    with pytest.raises(SystemExit, match="simulated with other settings"):
        sa.ensure_bag(tmp_path, "bv1", 3, {**sim, "sequences": sim["sequences"] + 1})
    (tmp_path / "bag_key.json").unlink()  # a work folder from before the key: not trusted either
    with pytest.raises(SystemExit, match="bag_key.json"):
        sa.ensure_bag(tmp_path, "bv1", 3, sim, world="--dynamic")
    assert calls == ["--dynamic"]
