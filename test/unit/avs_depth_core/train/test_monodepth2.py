"""avs-depth train --model monodepth2: one epoch on a small simulated bag, resume, config sections and aliases,
augmentation (flip with intrinsics, jitter on network inputs only) and bad input (no intrinsics, too few frames for a triple).

The simulated bag and the tiny config: test/unit/conftest.py SimBag.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from avs_depth_core.checkpoint import load_checkpoint, load_checkpoint_extra
from avs_depth_core.cli import main
from avs_depth_core.data import topics
from avs_depth_core.data.bag import BagWriter, make_msg
from avs_depth_core.data.messages import image_fields
from avs_depth_core.models.monodepth2 import Monodepth2Config, load_monodepth2
from avs_depth_core.train.logs import read_csv
from avs_depth_core.train.monodepth2 import (
    augment,
    color_jitter,
    hsv_to_rgb,
    resolve_config,
    rgb_to_hsv,
    sectioned_config,
    split_frames,
)


def test_one_epoch_writes_checkpoints_logs_and_curve(sim_bag, tmp_path, capsys, sim):
    out = tmp_path / "run"
    assert main(sim.train_args(sim_bag, out, tmp_path / "cache", sim.write_config(tmp_path / "md2.yaml"))) == 0
    assert "trained 2 steps" in capsys.readouterr().out  # 8 train triples (12 frames, interval 2), batch 4
    ckpt = out / "checkpoints"
    for name in ("last.safetensors", "last.json", "last.extra.safetensors", "best.safetensors", "best.json"):
        assert (ckpt / name).is_file(), name
    _, config, kind, meta = load_checkpoint(ckpt / "last")
    assert kind == "monodepth2" and meta["epoch"] == 1 and meta["step"] == 2 and meta["train_samples"] == 8
    assert config["frame_interval"] == sim.INTERVAL and config["height"] == sim.H
    assert {"loss", "abs_rel", "delta1", "scale_ratio_median"} <= set(meta["val"])  # the bag has depth: median-scaled metrics
    loaded = load_monodepth2(ckpt / "best", with_pose=True)
    assert loaded.pose_net is not None
    with torch.inference_mode():
        disp = loaded.depth_net(torch.rand(1, 3, sim.H, sim.W))[("disp", 0)]
    assert disp.shape == (1, 1, sim.H, sim.W) and torch.isfinite(disp).all()
    assert (out / "training_curve.png").stat().st_size > 1000
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    log = read_csv(out / "train_log.csv")
    assert [r["step"] for r in log] == [1.0, 2.0] and all(0 <= r["automasked"] <= 1 and math.isfinite(r["loss"]) for r in log)
    assert len(read_csv(out / "val_log.csv")) == 1
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["model"]["batch_size"] == 4 and resolved["data"]["max_depth"] == sim.MAX_DEPTH


def test_resume_continues_exactly(sim_bag, tmp_path, capsys, sim):
    """Two steps in two invocations (stop after 1, --resume) end with the same weights and optimiser as two in one."""
    config = sim.write_config(tmp_path / "md2.yaml", num_epochs=2, batch_size=8)
    cache = tmp_path / "cache"
    assert main(sim.train_args(sim_bag, tmp_path / "straight", cache, config, "--set", "train.validate=false")) == 0
    capsys.readouterr()
    assert main(sim.train_args(sim_bag, tmp_path / "straight", cache, config)) == 2  # never overwrites a run
    assert "already holds a run; add --resume" in capsys.readouterr().err
    split = ["--set", "train.validate=false"]
    assert main(sim.train_args(sim_bag, tmp_path / "split", cache, config, *split, "--set", "train.stop_after_steps=1")) == 0
    _, _, _, meta = load_checkpoint(tmp_path / "split" / "checkpoints" / "last")
    assert meta["step"] == 1
    assert main(sim.train_args(sim_bag, tmp_path / "split", cache, config, *split, "--resume")) == 0
    assert "resumed from" in capsys.readouterr().err
    a, _, _, meta_a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last")
    b, _, _, meta_b = load_checkpoint(tmp_path / "split" / "checkpoints" / "last")
    assert meta_a["step"] == meta_b["step"] == 2 and meta_b["epoch"] == 2
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    extra_a = load_checkpoint_extra(tmp_path / "straight" / "checkpoints" / "last")
    extra_b = load_checkpoint_extra(tmp_path / "split" / "checkpoints" / "last")
    assert extra_a["scheduler"] == extra_b["scheduler"] and extra_b["scheduler"]["last_epoch"] == 2
    assert [r["step"] for r in read_csv(tmp_path / "split" / "train_log.csv")] == [1.0, 2.0]


def test_config_sections_and_aliases(tmp_path):
    flat = sectioned_config({"height": 64, "width": 64, "train": {"seed": 3}}, "flat.yaml")
    assert flat["model"] == {"height": 64, "width": 64} and flat["train"] == {"seed": 3}
    model, train, data = resolve_config({**flat, "train": {"epochs": 2, "lr": 1e-3, "batch_size": 3, "seed": 3}})
    assert (model.num_epochs, model.learning_rate, model.batch_size, train.seed) == (2, 1e-3, 3, 3)
    assert data.max_depth == 30.0
    # YAML 1.1 reads 1e-4 as a string; the section coercion turns it into a number.
    assert resolve_config({"model": {"learning_rate": "1e-4"}})[0].learning_rate == 1e-4
    # The shipped config (sections, the optimisation keys under train:) resolves to Monodepth2's defaults.
    shipped = Path(__file__).resolve().parents[4] / "config" / "monodepth2.yaml"
    assert resolve_config(sectioned_config(yaml.safe_load(shipped.read_text()), str(shipped)))[0] == Monodepth2Config()
    with pytest.raises(ValueError, match="model.hieght"):
        resolve_config({"model": {"hieght": 64}})
    with pytest.raises(ValueError, match="train.sed"):
        resolve_config({"train": {"sed": 1}})
    with pytest.raises(ValueError, match="multiples of 32"):
        resolve_config({"model": {"width": 100}})
    with pytest.raises(ValueError, match="source_offsets.*-1 and \\+1"):
        resolve_config({"model": {"source_offsets": [-2, 1]}})
    with pytest.raises(ValueError, match=r"x.yaml: unknown section\(s\) \['height'\]"):
        sectioned_config({"model": {}, "height": 64}, "x.yaml")


def test_cli_errors_are_one_line(sim_bag, tmp_path, capsys, sim):
    config = sim.write_config(tmp_path / "md2.yaml")
    assert main(sim.train_args(sim_bag, tmp_path / "r", tmp_path / "cache", config, "--no-echo")) == 2
    assert "--no-echo applies to --model avsnet" in capsys.readouterr().err
    assert main(sim.train_args(sim_bag, tmp_path / "r", tmp_path / "cache", config, "--set", "model.num_layers=19")) == 2
    assert "model.num_layers 19: choose a ResNet depth" in capsys.readouterr().err


def test_missing_intrinsics_is_a_clear_error(tmp_path, capsys, sim):
    bag = tmp_path / "no_info"
    with BagWriter(bag) as w:
        for i in range(8):
            rgb = np.full((sim.H, sim.W, 3), 10 * i, np.uint8)
            w.write(topics.IMAGE, make_msg(topics.IMAGE_TYPE, 10**9 + i * 10**8, "cam", image_fields(rgb, "rgb8")),
                    topics.IMAGE_TYPE)
    assert main(sim.train_args(bag, tmp_path / "r", tmp_path / "cache", sim.write_config(tmp_path / "md2.yaml"))) == 2
    err = capsys.readouterr().err
    assert f"topic {topics.CAMERA_INFO} not found" in err and "no_info" in err


def test_sequences_too_short_for_the_interval(sim_bag, tmp_path, capsys, sim):
    """12-frame sequences hold no triple 6 frames either side: the error names the split and counts the frames."""
    config = sim.write_config(tmp_path / "md2.yaml", frame_interval=6)
    assert main(sim.train_args(sim_bag, tmp_path / "r", tmp_path / "cache", config)) == 2
    err = capsys.readouterr().err
    assert re.search(r"split 'train' has no usable frames.*sequence end.*: 12", err), err


def test_augment_flips_images_and_intrinsics_together():
    cfg = Monodepth2Config.tiny(hflip_prob=1.0, color_jitter_prob=0.0)
    frames = torch.rand(2, 3, 3, 64, 64)
    K = torch.tensor([[50.0, 0.0, 30.0], [0.0, 50.0, 33.0], [0.0, 0.0, 1.0]]).expand(2, 3, 3)
    loss_frames, inputs, K_flip = augment(frames, K, cfg)
    torch.testing.assert_close(loss_frames, frames.flip(-1))
    torch.testing.assert_close(inputs, loss_frames)
    # A point (X, Y, Z) seen at column u appears at W - 1 - u in the mirrored image, which sees (-X, Y, Z).
    point, mirrored = torch.tensor([0.7, -0.2, 3.0]), torch.tensor([-0.7, -0.2, 3.0])
    u = (K[0] @ point)[0] / point[2]
    u_flip = (K_flip[0] @ mirrored)[0] / mirrored[2]
    assert float(u_flip) == pytest.approx(63 - float(u), abs=1e-5)
    assert torch.equal(K_flip[:, 1], K[:, 1])


def test_jitter_changes_network_inputs_only_and_alike_for_all_frames():
    cfg = Monodepth2Config.tiny(hflip_prob=0.0, color_jitter_prob=1.0)
    same = torch.rand(1, 1, 3, 64, 64).expand(2, 3, 3, 64, 64).contiguous()
    torch.manual_seed(0)
    loss_frames, inputs, _ = augment(same, torch.eye(3).expand(2, 3, 3), cfg)
    assert torch.equal(loss_frames, same)
    assert not torch.allclose(inputs, same, atol=1e-3)
    for b in range(2):  # one draw per sample, shared by its three frames
        torch.testing.assert_close(inputs[b, 0], inputs[b, 1])
        torch.testing.assert_close(inputs[b, 0], inputs[b, 2])
    assert not torch.allclose(inputs[0], inputs[1])  # different samples, different draws
    assert inputs.min() >= 0 and inputs.max() <= 1
    target, sources = split_frames(inputs, [-1, 1])
    assert torch.equal(target, inputs[:, 1]) and torch.equal(sources[-1], inputs[:, 0]) and torch.equal(sources[1], inputs[:, 2])


def test_colour_helpers():
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5, rtol=0)
    grey = torch.full((1, 3, 4, 4), 0.4)
    assert torch.equal(rgb_to_hsv(grey)[:, 0], torch.zeros(1, 4, 4))  # no hue for grey
    # Zero spreads leave the frames unchanged; brightness alone scales them.
    torch.testing.assert_close(color_jitter(x, 0, 0, 0, 0), x, atol=1e-6, rtol=0)
    gen = torch.Generator().manual_seed(1)
    out = color_jitter(x * 0.5, 0.2, 0, 0, 0, generator=gen)
    ratio = (out / (x * 0.5)).flatten()
    assert 0.8 <= float(ratio.min()) and float(ratio.max()) <= 1.2 and float(ratio.std()) < 1e-4
