"""Retraining on mined dynamic-region labels (train/dynamic_labels.py): the label file, the dataset wrapper, the loss
term with mirrored samples, config errors, and the whole chain on a tiny dynamic bag: stage 1, `avs-depth mine-labels`,
`avs-depth train --dynamic-labels --init`."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from avs_depth_core.cli import main
from avs_depth_core.models.monodepth2 import Monodepth2Config, load_monodepth2
from avs_depth_core.train.dynamic_labels import (
    DynamicLabelsConfig,
    WithDynamicLabels,
    dynamic_term,
    load_labels,
    photometric_exclusion,
    save_labels,
)
from avs_depth_core.train.logs import read_csv
from avs_depth_core.train.monodepth2 import Monodepth2Model, init_from_checkpoint


class FakeTriples:
    def __init__(self, stamps, size):
        self.bag = "fake"
        self.settings = SimpleNamespace(image_size=size)
        self.cache = SimpleNamespace(array=lambda name: np.asarray(stamps))
        self.stamps = stamps

    def __len__(self):
        return len(self.stamps)

    def __getitem__(self, i):
        return {"stamp_ns": self.stamps[i]}


def test_label_file_round_trip_and_wrapper_resizes(tmp_path):
    label = np.zeros((2, 4, 8), np.float32)
    label[0] = 3.0
    mask = np.zeros((2, 4, 8), bool)
    mask[0, :2, :4] = True
    path = save_labels(tmp_path / "l.npz", np.array([10, 20]), label, mask, {"frames": 2})
    labels, meta = load_labels(path)
    assert meta == {"frames": 2} and labels[10][0].max() == 3.0 and labels[10][1].sum() == 8
    ds = WithDynamicLabels(FakeTriples([10, 20, 30], (8, 16)), path)
    first, last = ds[0], ds[2]
    assert first["dynamic_label"].shape == (1, 8, 16) and first["dynamic_mask"].sum() == 32  # nearest x2 each way
    assert last["dynamic_label"].abs().sum() == 0 and not last["dynamic_mask"].any()  # no label for stamp 30
    with pytest.raises(ValueError, match="no label for any frame"):
        WithDynamicLabels(FakeTriples([99], (4, 8)), path)


def test_term_supervises_only_the_mask_and_mirrors_with_the_sample():
    h, w = 8, 16
    label = torch.full((2, 1, h, w), 2.0)
    label[:, :, :, :4] = 1.0  # nearer object on the left in the unmirrored frame
    mask = torch.zeros(2, 1, h, w, dtype=torch.bool)
    mask[:, :, :, :4] = True
    batch = {"dynamic_label": label, "dynamic_mask": mask}
    torch.manual_seed(0)
    disp_right = 0.2 + 0.6 * torch.rand(2, 1, h, w)  # a spread of depths: the label's kept range is [min, p90] of them
    disps = {("disp", 0): disp_right, ("disp", 1): disp_right[..., ::2, ::2]}
    cfg = DynamicLabelsConfig(weight=0.1)
    term0, stats = dynamic_term(disps, batch, torch.tensor([False, False]), cfg, (0.1, 10.0))
    assert term0 > 0 and stats["dynamic_pixels"] == pytest.approx(0.25)
    # A prediction that has the object nearer on the mirrored side is right for a mirrored sample only.
    disp = torch.full((2, 1, h, w), 0.2)
    disp[..., -4:] = 0.45
    disps = {("disp", 0): disp}
    flipped, _ = dynamic_term(disps, batch, torch.tensor([True, True]), cfg, (0.1, 10.0))
    unflipped, _ = dynamic_term(disps, batch, torch.tensor([False, False]), cfg, (0.1, 10.0))
    assert flipped < unflipped
    none, _ = dynamic_term(disps, {"dynamic_label": label, "dynamic_mask": torch.zeros_like(mask)},
                           torch.tensor([False, False]), cfg, (0.1, 10.0))
    assert none == 0


def test_static_weight_adds_the_term_outside_the_mask_only():
    h, w = 8, 16
    label = torch.full((1, 1, h, w), 2.0)
    label[..., :4] = 1.0
    mask = torch.zeros(1, 1, h, w, dtype=torch.bool)
    mask[..., :4] = True
    batch = {"dynamic_label": label, "dynamic_mask": mask}
    right = (1.0 / label - 0.1) / 9.9  # the sigmoid output whose depth (range [0.1, 10]) is the label everywhere
    off = right.clone()
    off[..., 4:8] = (1.0 / 3.0 - 0.1) / 9.9  # the static scene next to the object wrong (3 m, not 2); the object right
    off_only_static = dynamic_term({("disp", 0): off}, batch, torch.tensor([False]),
                                   DynamicLabelsConfig(label_range="none"), (0.1, 10.0))
    assert off_only_static[0] == pytest.approx(0.0, abs=1e-6) and "static_term" not in off_only_static[1]
    anchored, stats = dynamic_term({("disp", 0): off}, batch, torch.tensor([False]),
                                   DynamicLabelsConfig(label_range="none", static_weight=0.5), (0.1, 10.0))
    assert anchored > 0.01 and stats["static_term"] > 0
    exact, _ = dynamic_term({("disp", 0): right}, batch, torch.tensor([False]),
                            DynamicLabelsConfig(label_range="none", static_weight=0.5), (0.1, 10.0))
    assert exact < 1e-3
    with pytest.raises(ValueError, match="train.dynamic_labels.static_weight"):
        DynamicLabelsConfig(static_weight=-1).check()


def test_photometric_exclusion_is_the_labelled_mask_mirrored_with_the_sample():
    mask = torch.zeros(2, 1, 4, 8, dtype=torch.bool)
    mask[:, :, :, :2] = True
    label = torch.where(mask, 1.5, 0.0)
    label[1, :, 0, 0] = 0.0  # masked but without a label: stays in the photometric term
    out = photometric_exclusion({"dynamic_label": label, "dynamic_mask": mask}, torch.tensor([False, True]),
                                torch.device("cpu"))
    assert out.shape == mask.shape and out[0].sum() == 8 and out[0, :, :, :2].all()
    assert out[1, :, :, -2:].sum() == 7 and not out[1, 0, 0, -1] and not out[1, :, :, :2].any()


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.dynamic_labels.labels"):
        DynamicLabelsConfig(labels=str(tmp_path / "none.npz")).check()
    with pytest.raises(ValueError, match="train.dynamic_labels.weight"):
        DynamicLabelsConfig(weight=0).check()


def test_mine_and_retrain_on_a_tiny_dynamic_bag(tmp_path, sim, tiny_checkpoint, capsys):
    bag = tmp_path / "bag"
    assert main(["simulate", "--preset", "bv1", "--dynamic", "--sequences", "3", "--frames", "6", "--seed", "3",
                 "--out", str(bag), "--height", str(sim.H), "--width", str(sim.W), "--splits", "0.34", "0.33", "0.33"]) == 0
    config = sim.write_config(tmp_path / "md2.yaml")
    stage1 = tmp_path / "stage1"
    assert main(sim.train_args(bag, stage1, tmp_path / "cache", config, "--set", "train.validate=false")) == 0
    teacher = tiny_checkpoint(tmp_path / "teacher", max_depth=sim.MAX_DEPTH)
    labels = tmp_path / "labels.npz"
    capsys.readouterr()
    assert main(["mine-labels", "--bag", str(bag), "--depth", str(stage1 / "checkpoints" / "last"), "--avsnet",
                 str(teacher), "--out", str(labels), "--set", "regions=oracle", "--set", "gate=none",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] > 0 and summary["objects"]["objects"] > 0 and summary["frames_with_dynamic_label"] > 0
    assert math.isfinite(summary["objects"]["echo_log_error_median"])
    run = tmp_path / "stage4"
    assert main(sim.train_args(bag, run, tmp_path / "cache", config, "--dynamic-labels", str(labels), "--init",
                               str(stage1 / "checkpoints" / "last"), "--set", "train.validate=false")) == 0
    log = read_csv(run / "train_log.csv")
    assert any(r["dynamic_term"] > 0 for r in log) and all(math.isfinite(r["dynamic_term"]) for r in log)
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["train"]["dynamic_labels"]["labels"] == str(labels)
    assert main(sim.train_args(bag, tmp_path / "r3", tmp_path / "cache", config, "--init", str(labels))) == 2
    assert "--init starts the retraining on --dynamic-labels" in capsys.readouterr().err


def test_init_loads_both_networks(tmp_path, sim):
    from avs_depth_core.models.monodepth2 import save_monodepth2

    cfg = Monodepth2Config.from_dict({**Monodepth2Config().to_dict(), **sim.TINY_MODEL, "num_epochs": 1})
    torch.manual_seed(1)
    source = Monodepth2Model(cfg, load_pretrained=False)
    path = save_monodepth2(tmp_path / "ck", source.depth, cfg, source.pose)
    torch.manual_seed(2)
    target = Monodepth2Model(cfg, load_pretrained=False)
    init_from_checkpoint(target, path)
    for a, b in zip(source.state_dict().values(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert load_monodepth2(path, with_pose=True).pose_net is not None
