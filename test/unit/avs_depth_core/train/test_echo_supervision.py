"""Echo-supervised Monodepth2 (train/echo_supervision.py): the pseudo-label term and its mask, the confidence filter, the
schedule, mirrored samples, config errors, and one tiny run whose checkpoint then loads as a metric model."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from avs_depth_core.checkpoint import load_checkpoint
from avs_depth_core.cli import main
from avs_depth_core.models.monodepth2 import load_monodepth2
from avs_depth_core.relative import RelativeDepthModel
from avs_depth_core.train.echo_supervision import (
    EchoSupervision,
    EchoSupervisionConfig,
    PseudoMetricTeacher,
    confidence_mask,
    pseudo_label_loss,
)
from avs_depth_core.train.logs import read_csv
from avs_depth_core.train.monodepth2 import Monodepth2Trainer, echo_supervision_config


def test_log_l1_term_counts_only_masked_pixels():
    depth = torch.full((1, 1, 2, 2), 2.0)
    pseudo = torch.tensor([[[[2.0, 4.0], [2.0, 100.0]]]])
    mask = torch.tensor([[[[True, True], [True, False]]]])
    assert float(pseudo_label_loss(depth, pseudo, mask)) == pytest.approx(math.log(2) / 3)
    empty = torch.zeros_like(mask)
    depth.requires_grad_(True)
    zero = pseudo_label_loss(depth, pseudo, empty)
    zero.backward()  # still part of the graph
    assert float(zero.detach()) == 0.0 and depth.grad is not None


def test_scale_term_ignores_shape_and_pulls_towards_the_pseudo_label():
    pseudo = torch.tensor([[[[1.0, 4.0]]]])
    same_scale = torch.tensor([[[[2.0, 2.0]]]])  # same geometric mean, other shape
    mask = torch.ones_like(pseudo, dtype=torch.bool)
    assert float(pseudo_label_loss(same_scale, pseudo, mask, "scale")) == pytest.approx(0.0, abs=1e-6)
    assert float(pseudo_label_loss(same_scale, pseudo, mask, "log_l1")) > 0.5
    too_near = torch.tensor([[[[0.5, 2.0]]]], requires_grad=True)
    pseudo_label_loss(too_near, pseudo, mask, "scale").backward()
    assert (too_near.grad < 0).all()  # descending the loss makes the depth larger
    with pytest.raises(ValueError, match="choose from"):
        pseudo_label_loss(same_scale, pseudo, mask, "l2")


def _triple(medians: tuple[float, float, float]) -> torch.Tensor:
    return torch.stack([torch.full((1, 4, 4), m) for m in medians])[None]  # (1, 3, 1, 4, 4)


def test_triple_median_filter_keeps_frames_whose_neighbours_agree():
    cfg = EchoSupervisionConfig(checkpoint="x", tolerance=0.2)
    every = torch.tensor([[True, True, True]])
    assert confidence_mask(_triple((3.0, 3.2, 3.1)), every, cfg, (0.1, 12.0)).all()
    assert not confidence_mask(_triple((3.0, 6.0, 6.1)), every, cfg, (0.1, 12.0)).any()  # one neighbour disagrees
    # A neighbour without an echo is not asked; with no neighbour echo at all nothing confirms the frame.
    assert confidence_mask(_triple((9.0, 3.0, 3.1)), torch.tensor([[False, True, True]]), cfg, (0.1, 12.0)).all()
    assert not confidence_mask(_triple((3.0, 3.0, 3.0)), torch.tensor([[False, True, False]]), cfg, (0.1, 12.0)).any()
    assert not confidence_mask(_triple((3.0, 3.0, 3.0)), torch.tensor([[True, False, True]]), cfg, (0.1, 12.0)).any()
    none = EchoSupervisionConfig(checkpoint="x", filter="none")
    assert confidence_mask(_triple((3.0, 6.0, 6.1)), every, none, (0.1, 12.0)).all()
    # Pixels outside the open depth range are never selected.
    mp = _triple((3.0, 3.0, 3.0))
    mp[0, 1, 0, 0, 0] = 12.0
    mask = confidence_mask(mp, every, none, (0.1, 12.0))
    assert not mask[0, 0, 0, 0] and int(mask.sum()) == 15


def test_schedule_and_config_errors():
    cfg = EchoSupervisionConfig(checkpoint="x", weight=0.4, start_step=2, ramp_steps=4)
    assert [cfg.weight_at(s) for s in (0, 1, 2, 5, 9)] == pytest.approx([0.0, 0.0, 0.1, 0.4, 0.4])
    assert not echo_supervision_config({}).enabled
    assert echo_supervision_config({"train": {"echo_supervision": {"checkpoint": "a/b"}}}).checkpoint == "a/b"
    with pytest.raises(ValueError, match="train.echo_supervision.term"):
        echo_supervision_config({"train": {"echo_supervision": {"checkpoint": "a", "term": "l2"}}})
    with pytest.raises(ValueError, match="train.echo_supervision.wieght"):
        echo_supervision_config({"train": {"echo_supervision": {"wieght": 1}}})
    with pytest.raises(ValueError, match="train.echo_supervision.weight must be positive"):
        echo_supervision_config({"train": {"echo_supervision": {"weight": 0}}})
    with pytest.raises(ValueError, match="model.depth_units metres needs train.echo_supervision.checkpoint"):
        Monodepth2Trainer({"model": {"depth_units": "metres"}})


def test_teacher_must_be_an_rgb_echoes_avsnet(tmp_path, tiny_checkpoint):
    with pytest.raises(FileNotFoundError, match="echo-supervision checkpoint not found"):
        PseudoMetricTeacher(tmp_path / "missing")
    with pytest.raises(ValueError, match="Only-RGB AVS-Net"):
        PseudoMetricTeacher(tiny_checkpoint(tmp_path / "rgb", use_echo=False))


def test_mirrored_samples_get_the_mirrored_pseudo_label(tmp_path, tiny_checkpoint):
    echo = EchoSupervision(EchoSupervisionConfig(checkpoint=str(tiny_checkpoint(tmp_path / "t")), filter="none"), "cpu",
                           (0.01, 100.0))
    torch.manual_seed(0)
    batch = {"rgb": torch.rand(2, 3, 3, 64, 128), "echo_triple": torch.rand(2, 3, 2, 64, 64),
             "has_echo_triple": torch.ones(2, 3, dtype=torch.bool)}
    plain, _ = echo.pseudo_labels(batch, torch.tensor([False, False]))
    mixed, _ = echo.pseudo_labels(batch, torch.tensor([False, True]))
    torch.testing.assert_close(mixed[0], plain[0])
    torch.testing.assert_close(mixed[1], plain[1].flip(-1))
    assert not torch.equal(plain[1], plain[1].flip(-1))
    batch["pseudo_label_mask"] = torch.zeros(2, 1, 64, 128, dtype=torch.bool)
    batch["pseudo_label_mask"][:, :, :, :10] = True  # the left 10 columns of the unmirrored frame
    _, mask = echo.pseudo_labels(batch, torch.tensor([False, True]))
    assert mask[0, 0, :, :10].all() and not mask[0, 0, :, 10:].any()
    assert mask[1, 0, :, -10:].all() and not mask[1, 0, :, :-10].any()


def test_echo_supervised_run_stores_a_metric_depthnet(sim_bag, tmp_path, capsys, sim, tiny_checkpoint):
    teacher = tiny_checkpoint(tmp_path / "teacher", max_depth=sim.MAX_DEPTH)
    config = sim.write_config(tmp_path / "md2.yaml")
    out = tmp_path / "run"
    args = sim.train_args(sim_bag, out, tmp_path / "cache", config, "--echo-supervision", str(teacher), "--set",
                          "train.echo_supervision.filter=none")
    assert main(args) == 0, capsys.readouterr().err
    log = read_csv(out / "train_log.csv")
    assert all(math.isfinite(r["echo_term"]) and r["echo_term"] > 0 and 0 < r["echo_selected"] <= 1 for r in log)
    loaded = load_monodepth2(out / "checkpoints" / "last")
    assert loaded.config.depth_units == "metres"
    _, _, _, meta = load_checkpoint(out / "checkpoints" / "last")
    assert {"abs_rel", "metric_abs_rel", "metric_delta1"} <= set(meta["val"])  # unscaled metrics of the metric DepthNet
    assert meta["val"]["metric_abs_rel"] != meta["val"]["abs_rel"]
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["train"]["echo_supervision"]["checkpoint"] == str(teacher)
    model = RelativeDepthModel.monodepth2(out / "checkpoints" / "best")
    assert model.is_metric
    depth = model(torch.rand(1, 3, sim.H, sim.W))
    assert depth.shape == (1, 1, sim.H, sim.W) and (depth >= loaded.config.min_depth).all()
    # The teacher's echo window must be the data's.
    wrong = tiny_checkpoint(tmp_path / "wrong")  # max_depth 30 m, the bag's data.max_depth 12 m
    assert main(sim.train_args(sim_bag, tmp_path / "r2", tmp_path / "cache", config, "--echo-supervision", str(wrong))) == 2
    assert "data.max_depth 12.0 differs from the echo-supervision AVS-Net's max_depth 30.0" in capsys.readouterr().err
    assert main(["train", "--model", "avsnet", "--bag", str(sim_bag), "--echo-supervision", str(teacher)]) == 2
    assert "--echo-supervision applies to --model monodepth2" in capsys.readouterr().err
