"""The learned Depth Scale Alignment (models/depth_scale_alignment.py, train/scale_alignment.py) and its use in mining:
the network's layout, the loss, that training on static objects learns to read the scene context, and that
mine-labels' object_scale dsa and gate echo_dsa route its scale."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from avs_depth_core.models.depth_scale_alignment import DepthScaleAlignmentNet
from avs_depth_core.train.mining import MiningConfig, frame_labels, static_object_ids
from avs_depth_core.train.scale_alignment import (
    AlignmentFrame,
    ScaleAlignmentConfig,
    alignment_input,
    alignment_loss,
    normalised_object_depth,
    train_scale_alignment,
)


def test_network_is_a_groupnorm_resnet_with_a_scalar_head():
    net = DepthScaleAlignmentNet(width=8)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, nn.GroupNorm) and m.num_groups == 1 for m in net.modules())
    assert net(torch.rand(3, 5, 32, 64)).shape == (3,)
    with pytest.raises(ValueError, match="expected"):
        net(torch.rand(1, 3, 32, 64))


def test_input_holds_context_outside_the_box_and_the_normalised_object_inside():
    scene = np.full((32, 64), 3.0, np.float32)
    mask = np.zeros((32, 64), bool)
    mask[10:20, 20:30] = True
    depth = np.where(mask, 6.0, 3.0).astype(np.float32)
    frame = AlignmentFrame(torch.zeros(3, 32, 64), scene, depth, mask)
    x = alignment_input(frame, mask, box_margin=2)
    assert x.shape == (5, 32, 64)
    assert torch.allclose(x[3][mask], torch.ones(100)) and torch.allclose(x[4][mask], torch.ones(100))
    assert float(x[3, 9, 25]) == 0.0 and float(x[3, 7, 25]) == 3.0  # the grown box is cut out, the scene beyond is not
    assert float(x[4][~mask].abs().sum()) == 0.0
    assert np.allclose(normalised_object_depth(depth, mask)[mask], 1.0)


def test_loss_is_zero_at_the_scale_that_matches_the_scene():
    shape = torch.ones(2, 8, 8)
    scene = torch.stack([torch.full((8, 8), 2.0), torch.full((8, 8), 5.0)])
    mask = torch.zeros(2, 8, 8)
    mask[:, 2:5, 2:5] = 1
    assert float(alignment_loss(torch.tensor([2.0, 5.0]), shape, scene, mask, 0.005)) == pytest.approx(0.0)
    # Huber: delta x (|error| - delta / 2) beyond delta
    assert float(alignment_loss(torch.tensor([1.0, 5.0]), shape, scene, mask, 0.005)) > 0.002


def scene_frame(rng: np.random.Generator) -> tuple[AlignmentFrame, np.ndarray, float]:
    """A floor receding from 4 c (bottom row) to c (top row), c random (stage 1's units change from frame to frame); one
    static object standing on it, at the floor's depth under its lowest row. Returns the frame, mask and that depth."""
    h, w = 32, 64
    c = float(rng.uniform(0.5, 2.0))
    floor = c * (1.0 + 3.0 * np.arange(h, dtype=np.float32) / (h - 1))[:, None].repeat(w, 1)
    mask = np.zeros((h, w), bool)
    top, left = int(rng.integers(0, h - 9)), int(rng.integers(2, w - 14))
    mask[top: top + 8, left: left + 12] = True
    depth = float(floor[min(top + 8, h - 1), left])
    scene = np.where(mask, depth, floor).astype(np.float32)
    return AlignmentFrame(torch.rand(3, h, w), scene, scene, mask), mask, depth


def test_training_on_static_objects_learns_the_scale_from_the_context():
    rng = np.random.default_rng(0)
    frames, samples = [], []
    for i in range(96):
        f, m, _ = scene_frame(rng)
        frames.append(f)
        samples.append((i, m))
    cfg = ScaleAlignmentConfig(width=8, epochs=30, batch_size=16, milestones=[20, 26], learning_rate=3e-3)
    aligner, log = train_scale_alignment(frames, samples, cfg)
    assert log["samples"] == 96 and log["epoch_loss"][-1] < 0.3 * log["epoch_loss"][0]
    assert log["train_log_error_median"] < 0.1
    errors, at_median = [], []
    for _ in range(12):  # frames it never saw
        f, m, depth = scene_frame(rng)
        errors.append(abs(math.log(aligner.scale(f, m) / depth)))
        at_median.append(abs(math.log(float(np.median(f.scene[~m])) / depth)))
    assert np.median(errors) < 0.1 and np.median(errors) < 0.5 * np.median(at_median)
    raw = ScaleAlignmentConfig(width=8, epochs=2, batch_size=16, normalise=False)  # theirs: raw depth in and out
    assert train_scale_alignment(frames, samples, raw)[1]["samples"] == 96
    with pytest.raises(ValueError, match="no static object"):
        train_scale_alignment(frames, [], cfg)


class FixedAligner:
    """Stands in for a trained DSA: beta for the mean-normalised object depth, in R's units."""

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def scale(self, frame: AlignmentFrame, mask: np.ndarray) -> float:
        return self.beta


def moving_object_frame():
    """Background R 2 (Mp 4 m: s_t = 2), a moving object the scene net puts at R 5 that is at 2 m (Mp 2)."""
    h, w = 40, 80
    inst = np.zeros((h, w), np.uint16)
    inst[10:20, 10:30] = 7
    scene = np.full((h, w), 2.0)
    scene[inst == 7] = 5.0
    mp = np.full((h, w), 4.0)
    mp[inst == 7] = 2.0
    return scene, mp, inst, mp.copy()


def test_dsa_scale_labels_the_object_and_the_echo_dsa_gate_compares_the_two():
    scene, mp, inst, gt = moving_object_frame()
    rgb = torch.zeros(3, 40, 80)
    still = np.zeros_like(scene)
    # A DSA that says 1 R unit (= 2 m at s_t 2): the object's label is 2 m, where the echo has it too.
    cfg = MiningConfig(regions="oracle", object_scale="dsa", gate="none")
    label, dyn, (rec,) = frame_labels(cfg, scene, mp, still, inst, {7}, gt, None, FixedAligner(1.0), rgb)
    assert dyn.sum() == 200 and np.allclose(label[inst == 7], 2.0)
    assert rec["beta_dsa"] == pytest.approx(0.4) and rec["dsa_log_error"] == pytest.approx(0.0, abs=1e-9)
    gate = MiningConfig(regions="oracle", gate="echo_dsa")
    _, dyn, (rec,) = frame_labels(gate, scene, mp, still, inst, {7}, gt, None, FixedAligner(1.0), rgb)
    assert rec["accepted"] and dyn.sum() == 200
    _, dyn, (rec,) = frame_labels(gate, scene, mp, still, inst, {7}, gt, None, FixedAligner(3.0), rgb)  # 6 m vs 2 m
    assert not rec["accepted"] and not dyn.any() and rec["dsa_log_error"] == pytest.approx(math.log(3.0))
    with pytest.raises(ValueError, match="need the trained DSA"):
        frame_labels(gate, scene, mp, still, inst, {7}, gt)
    # measure_dsa: the echo's label, the DSA's scale and error recorded beside it (and no DSA needed to label).
    measure = MiningConfig(regions="oracle", gate="none", measure_dsa=True)
    label, _, (rec,) = frame_labels(measure, scene, mp, still, inst, {7}, gt, None, FixedAligner(3.0), rgb)
    assert np.allclose(label[inst == 7], 2.0) and rec["beta_dsa"] == pytest.approx(1.2)
    assert math.isnan(frame_labels(measure, scene, mp, still, inst, {7}, gt)[2][0]["beta_dsa"])


def test_static_objects_and_settings_of_the_dsa():
    inst = np.zeros((40, 80), np.uint16)
    inst[2:12, 2:22] = 3   # static, off the central strip
    inst[20:30, 2:22] = 7  # moving
    inst[0, 79] = 9        # too small
    cfg = MiningConfig(regions="oracle")
    assert static_object_ids(cfg, inst, {7}, np.zeros((40, 80))) == [3]
    assert static_object_ids(MiningConfig(), inst, set(), np.zeros((40, 80))) == [3, 7]
    cfg = MiningConfig.from_assignments(["object_scale=dsa", "dsa.epochs=3", "dsa.width=8"])
    assert cfg.needs_dsa and cfg.dsa == ScaleAlignmentConfig(epochs=3, width=8)
    with pytest.raises(ValueError, match="unknown key"):
        MiningConfig.from_assignments(["dsa.nope=1"])
    with pytest.raises(ValueError, match="static instances"):
        MiningConfig.from_assignments(["gate=echo_dsa", "regions=motion"])
    with pytest.raises(ValueError, match="epochs"):
        MiningConfig.from_assignments(["object_scale=dsa", "dsa.epochs=0"])
