"""Mined supervision's per-frame steps: instance classification, motion components, echo object scale, the gate,
pseudo labels, and the dynamic-region loss, on hand-made maps with known answers."""

import math

import numpy as np
import pytest
import torch

from avs_depth_core.losses.dynamic import dynamic_depth_loss
from avs_depth_core.train.mined_labels import (
    MinedLabelsConfig,
    classify_instances,
    echo_object_scale,
    motion_components,
    oracle_object_scale,
    pseudo_label,
    scales_agree,
)

H, W = 40, 80  # 3200 px: 0.5 % is 16; the central strip (W / 20) is columns 38-41


def instances():
    inst = np.zeros((H, W), np.uint16)
    inst[5:15, 2:12] = 1    # moves (flow below)
    inst[5:15, 20:30] = 2   # still
    inst[20:30, 36:44] = 3  # still but in the central strip: dynamic by the paper's rule
    inst[30:33, 60:64] = 4  # 12 px: too small
    inst[20:30, 60:70] = 5  # half of it moves: dynamic at the 0.5 threshold
    return inst


def test_classify_instances_by_flow_strip_and_size():
    flow = np.zeros((2, H, W))
    flow[0, 5:15, 2:12] = 1.5
    flow[1, 20:25, 60:70] = 1.0  # 50 of 100 px of instance 5, exactly 1 px
    got = classify_instances(instances(), flow)
    assert got == {1: True, 2: False, 3: True, 5: True}
    assert classify_instances(instances(), flow, MinedLabelsConfig(is_dynamic_threshold=0.6))[5] is False
    road = np.zeros((H, W), bool)
    road[5:15, 2:12] = True  # an instance that is all road disappears
    assert 1 not in classify_instances(instances(), flow, road=road)
    assert classify_instances(instances(), None) == {1: False, 2: False, 3: True, 5: False}


def test_motion_components_split_at_depth_jumps():
    motion = np.zeros((H, W), bool)
    motion[5:15, 5:35] = True  # one blob of motion over two objects at different depths
    motion[30:32, 70:72] = True  # 4 px: dropped
    depth = np.full((H, W), 5.0)
    depth[:, 20:] = 8.0  # log jump 0.47 at column 20
    comp = motion_components(motion, depth)
    assert set(np.unique(comp)) == {0, 1, 2}
    assert len(set(np.unique(comp[5:15, 5:19]))) == 1 and len(set(np.unique(comp[5:15, 21:35]))) == 1
    assert comp[10, 10] != comp[10, 30] and comp[31, 71] == 0
    assert set(np.unique(motion_components(motion, np.full((H, W), 5.0)))) == {0, 1}  # no jump: one object


def test_echo_aligns_an_object_the_relative_net_puts_too_far():
    gt = np.full((H, W), 6.0)
    mask = instances() == 1
    gt[mask] = 2.0                        # a person 2 m away in a room at 6 m
    relative = gt / 3.0                   # the scene net in its own units (true metres / 3) ...
    relative[mask] = 6.0 / 3.0 * 2        # ... but the mover looks as far as twice the wall (moves with the camera)
    object_depth = np.where(mask, 0.5, 0.0)  # the object net's shape, in its own unknown scale
    mp = gt * 1.1                         # AVS-Net's metric map, 10 % too far
    s_t = float(np.median(mp) / np.median(relative))
    beta = echo_object_scale(mp, object_depth, mask)
    assert beta == pytest.approx(2.2 / 0.5)
    label, dynamic = pseudo_label(s_t * relative, {1: object_depth}, {1: mask}, {1: beta})
    assert np.array_equal(dynamic, mask)
    assert label[mask] == pytest.approx(np.full(mask.sum(), 2.2)) and label[~mask] == pytest.approx(6.6)
    # against the oracle in the relative map's units: beta* = (2 / 3) / 0.5; the echo's beta is s_t (3.3) times it
    oracle = oracle_object_scale(gt, relative, object_depth, mask, ~mask)
    assert oracle == pytest.approx((2.0 / 3.0) / 0.5)
    assert echo_object_scale(mp, object_depth, np.zeros_like(mask)) != echo_object_scale(mp, object_depth, mask)
    assert math.isnan(echo_object_scale(mp, object_depth, np.zeros_like(mask)))


def test_gate_and_overlaps():
    assert scales_agree(1.0, 1.2) and not scales_agree(1.0, 1.3) and not scales_agree(1.0, math.nan)
    scene = np.full((H, W), 9.0)
    a = np.zeros((H, W), bool)
    a[0:10, 0:10] = True
    b = np.zeros((H, W), bool)
    b[5:15, 5:15] = True
    label, dynamic = pseudo_label(scene, {1: np.full((H, W), 1.0), 2: np.full((H, W), 1.0)}, {1: a, 2: b},
                                  {1: 4.0, 2: 2.0})
    assert np.array_equal(dynamic, a | b)
    assert label[7, 7] == 2.0 and label[0, 0] == 4.0 and label[14, 14] == 2.0 and label[30, 30] == 9.0
    _, without = pseudo_label(scene, {1: np.ones((H, W))}, {1: a}, {1: math.nan})
    assert not without.any()


def test_dynamic_depth_loss_is_scale_invariant_and_masked():
    torch.manual_seed(0)
    pred = torch.rand(2, 1, H, W) * 5 + 1
    mask = torch.zeros(2, 1, H, W, dtype=torch.bool)
    mask[0, 0, 10:20, 10:20] = True
    # a label equal to the prediction up to scale: no loss; the same label wrong on the mask: loss there only
    assert dynamic_depth_loss(pred, 3 * pred, mask).item() == pytest.approx(0.0, abs=1e-6)
    wrong = 3 * pred.clone()
    wrong[0, 0, 10:20, 10:20] *= 1.2
    loss = dynamic_depth_loss(pred, wrong, mask)
    # the ratio stays 1/3 (the label is right almost everywhere); labels rescaled beyond the prediction's 90th percentile
    # are left out; image 2 has no dynamic pixel and contributes 0
    p0 = pred[0, 0, 10:20, 10:20]
    used = 1.2 * p0 <= torch.quantile(pred[0].flatten(), 0.9)
    assert 0 < used.sum() < used.numel()
    expected = (0.2 * p0[used]).mean() / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    wrong_outside = 3 * pred.clone()
    wrong_outside[0, 0, 30:, :] *= 1.2
    assert dynamic_depth_loss(pred, wrong_outside, mask).item() == pytest.approx(0.0, abs=1e-6)
    p = pred.clone().requires_grad_(True)
    dynamic_depth_loss(p, wrong, mask).backward()
    assert p.grad[0, 0, 10:20, 10:20].abs().sum() > 0 and p.grad[0, 0, 30:].abs().sum() == 0
    with pytest.raises(ValueError, match="one shape"):
        dynamic_depth_loss(pred, pred[:1], mask)


def test_normalised_dynamic_loss_does_not_depend_on_the_depth_units():
    torch.manual_seed(0)
    pred = 0.5 + torch.rand(2, 1, 8, 8)
    label = pred * (1 + 0.3 * torch.rand(2, 1, 8, 8))
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    mask[..., 2:6, 2:6] = True
    raw = dynamic_depth_loss(pred, label, mask)
    assert dynamic_depth_loss(0.01 * pred, label, mask).item() == pytest.approx(0.01 * raw.item(), rel=1e-4)
    normalised = dynamic_depth_loss(pred, label, mask, normalise=True)
    assert dynamic_depth_loss(0.01 * pred, label, mask, normalise=True).item() == pytest.approx(normalised.item(), rel=1e-4)


def test_label_range_none_keeps_the_labels_the_prediction_misplaces():
    torch.manual_seed(0)
    pred = torch.rand(1, 1, H, W) * 5 + 1
    mask = torch.zeros(1, 1, H, W, dtype=torch.bool)
    mask[0, 0, 10:20, 10:20] = True
    label = 3 * pred.clone()
    label[mask] = 3 * 7.0  # the object is farther than anything predicted: their range drops it entirely
    assert dynamic_depth_loss(pred, label, mask).item() == 0.0
    loss = dynamic_depth_loss(pred, label, mask, label_range="none")
    assert loss.item() == pytest.approx((7.0 - pred[mask]).abs().mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="label_range"):
        dynamic_depth_loss(pred, label, mask, label_range="kept")


def test_normalised_dynamic_loss_has_no_gradient_along_the_global_scale():
    """A DepthNet's scale is free (PoseNet's translation follows it): the normalised term must not pull it, or training
    drifts. Its gradient is orthogonal to p (Euler: degree-0 homogeneous); the raw L1's is not."""
    torch.manual_seed(0)
    pred = (0.5 + torch.rand(2, 1, 16, 16)).requires_grad_(True)
    label = 3 * pred.detach() * (1 + 0.4 * torch.rand(2, 1, 16, 16))
    mask = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    mask[..., 4:10, 4:10] = True
    for label_range in ("prediction", "none"):
        pred.grad = None
        dynamic_depth_loss(pred, label, mask, normalise=True, label_range=label_range).backward()
        along = (pred.grad * pred.detach()).sum().item()
        assert abs(along) < 1e-5 * pred.grad.abs().sum().item() * pred.detach().abs().max().item() + 1e-7
        pred.grad = None
        dynamic_depth_loss(pred, label, mask, normalise=False, label_range=label_range).backward()
        assert abs((pred.grad * pred.detach()).sum().item()) > 0.01  # the raw L1's gradient moves the scale
