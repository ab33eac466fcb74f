"""Mining dynamic-region labels (train/mining.py): block-matched residual flow, their motion post-processing, the
ground-contact scale, one frame's labels with the echo scale and the gate, and the settings' errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avs_depth_core.train.mined_labels import MinedLabelsConfig
from avs_depth_core.train.mining import (
    MiningConfig,
    frame_labels,
    ground_contact_scale,
    matched_residual_flow,
    motion_magnitude,
)


def identity_grid(h: int, w: int) -> torch.Tensor:
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([u / (w - 1) * 2 - 1, v / (h - 1) * 2 - 1], -1)[None]


def test_block_matching_finds_the_shift_of_a_moving_patch():
    torch.manual_seed(0)
    target = torch.rand(1, 3, 32, 48)
    source = target.clone()
    source[..., 10:22, 14:26] = target[..., 10:22, 12:24]  # the object moved 2 px right between the frames
    flow = matched_residual_flow(target, source, identity_grid(32, 48), radius=3, window=5)
    assert (flow[0, 0, 13:19, 17:22] == 2).all() and (flow[0, 1, 13:19, 17:22] == 0).all()
    assert (flow[0, :, :, :6] == 0).all() and (flow[0, :, 26:] == 0).all()  # the static background keeps the rigid grid


def test_motion_needs_both_directions_and_at_least_the_mean_norm():
    f = torch.zeros(1, 2, 4, 4)
    f[0, 0, 0, 0] = 3.0  # moves in both directions
    f[0, 0, 1, 1] = 0.2  # below the image's mean norm
    back = f.clone()
    back[0, 0, 1, 1] = 0.0
    back[0, 0, 2, 2] = 4.0  # only in one direction
    m = motion_magnitude([f, back])[0]
    assert m[0, 0] == pytest.approx(3.0) and m[1, 1] == 0 and m[2, 2] == 0


def test_ground_contact_scale_reads_the_floor_below_the_object():
    mask = np.zeros((20, 20), bool)
    mask[5:10, 5:10] = True
    scene = np.full((20, 20), 9.0)
    scene[10:13] = 4.0  # the floor just below the object, metres
    obj = np.full((20, 20), 2.0)  # object depth in its own units
    assert ground_contact_scale(scene, obj, mask, mask, rows=3, min_pixels=5) == pytest.approx(2.0)
    low = np.zeros((20, 20), bool)
    low[15:20, 5:10] = True  # standing on the image's lower edge: no floor seen
    assert math.isnan(ground_contact_scale(scene, obj, low, low, rows=3, min_pixels=5))


def frame(floor_r: float):
    """A 40x80 frame: background R 2 (Mp 4 m, so s_t = 2), one moving object that the scene net puts too far (R 5)
    at 2 m (Mp 2), standing on floor pixels whose R is floor_r."""
    h, w = 40, 80
    inst = np.zeros((h, w), np.uint16)
    inst[10:20, 10:30] = 7
    scene = np.full((h, w), 2.0)
    scene[20:24, 10:30] = floor_r
    scene[inst == 7] = 5.0
    mp = np.full((h, w), 4.0)
    mp[inst == 7] = 2.0
    gt = mp.copy()
    return scene, mp, inst, gt


def test_echo_scale_puts_the_object_where_the_echo_has_it():
    scene, mp, inst, gt = frame(floor_r=1.0)  # the floor below is at 2 m in metres: it agrees with the echo
    cfg = MiningConfig(regions="oracle")
    label, dyn, recs = frame_labels(cfg, scene, mp, np.zeros_like(scene), inst, {7}, gt, {7: {"motion": "with_camera"}})
    assert dyn.sum() == 200 and np.allclose(label[inst == 7], 2.0) and np.allclose(label[scene == 2.0], 4.0)  # s_t R
    (rec,) = recs
    assert rec["accepted"] and rec["beta_echo"] == pytest.approx(0.4) and rec["beta_ground"] == pytest.approx(0.4)
    assert rec["echo_log_error"] == pytest.approx(0.0, abs=1e-9) and rec["motion"] == "with_camera"


def test_gate_drops_an_object_whose_ground_contact_disagrees():
    scene, mp, inst, gt = frame(floor_r=3.0)  # the floor below says 6 m, the echo 2 m
    label, dyn, recs = frame_labels(MiningConfig(regions="oracle"), scene, mp, np.zeros_like(scene), inst, {7}, gt)
    assert not dyn.any() and not recs[0]["accepted"]
    assert (label[inst == 7] == 0).all() and np.allclose(label[scene == 2.0], 4.0)  # rejected: no label, not s_t R
    label, _, _ = frame_labels(MiningConfig(regions="oracle", rejected_label="scene"), scene, mp, np.zeros_like(scene),
                               inst, {7}, gt)
    assert np.allclose(label[inst == 7], 10.0)  # before session 13: s_t R = 2 x 5, held there by the static term
    _, dyn, recs = frame_labels(MiningConfig(regions="oracle", gate="none"), scene, mp, np.zeros_like(scene), inst, {7})
    assert dyn.sum() == 200 and recs[0]["accepted"]


def test_ground_truth_object_depth_is_an_oracle_at_the_ground_truths_scale():
    scene, mp, inst, gt = frame(floor_r=3.0)  # the gate would drop it; the oracle has no gate
    gt[inst == 7] = np.linspace(1.5, 2.5, 200)
    gt[12, 12] = np.nan  # no ground truth there: no label, not in the mask
    label, dyn, recs = frame_labels(MiningConfig(regions="oracle", object_depth="ground_truth"), scene, mp,
                                    np.zeros_like(scene), inst, {7}, gt)
    assert dyn.sum() == 199 and not dyn[12, 12] and recs[0]["accepted"]
    assert np.allclose(label[dyn], gt[dyn])
    assert np.allclose(label[scene == 2.0], 4.0)  # R x median(gt) / median(R) over the static scene
    with pytest.raises(ValueError, match="ground-truth depth"):
        frame_labels(MiningConfig(regions="oracle", object_depth="ground_truth"), scene, mp, np.zeros_like(scene), inst,
                     {7}, None)


def test_instance_rules_and_motion_components_pick_the_moving_object():
    scene, mp, inst, _ = frame(floor_r=1.0)
    motion = np.zeros_like(scene)
    motion[inst == 7] = 2.0
    _, dyn, _ = frame_labels(MiningConfig(regions="instances"), scene, mp, motion, inst, set())
    assert dyn.sum() == 200
    _, dyn, _ = frame_labels(MiningConfig(regions="instances"), scene, mp, np.zeros_like(scene), inst, set())
    assert not dyn.any()  # no motion and off the central strip: static
    _, dyn, _ = frame_labels(MiningConfig(regions="motion", gate="none"), scene, mp, motion, None, set())
    assert dyn.sum() > 160 and not dyn[inst == 0].any()  # the component loses its edge row/column at the depth jump


def test_label_objects_all_labels_the_static_instances_too():
    scene, mp, inst, _gt = frame(floor_r=1.0)
    inst[28:36, 50:70] = 9  # a static object (no motion, off the central strip), R 5 against its echo's 2 m
    scene[inst == 9] = 5.0
    scene[36:39, 50:70] = 1.0  # its floor at 2 m, as the echo has it: the ground gate accepts
    mp[inst == 9] = 2.0
    motion = np.zeros_like(scene)
    motion[inst == 7] = 2.0
    _, dyn, recs = frame_labels(MiningConfig(regions="instances"), scene, mp, motion, inst, {7})
    assert dyn.sum() == 200 and [r["id"] for r in recs] == [7]  # theirs: the moving one only
    label, dyn, recs = frame_labels(MiningConfig(regions="instances", label_objects="all"), scene, mp, motion, inst, {7})
    assert dyn.sum() == 360 and sorted(r["id"] for r in recs) == [7, 9]
    assert np.allclose(label[inst == 9], 2.0) and not next(r for r in recs if r["id"] == 9)["moving"]
    with pytest.raises(ValueError, match="label_objects all"):
        MiningConfig.from_assignments(["regions=motion", "label_objects=all"])
    with pytest.raises(ValueError, match="label_objects 'some'"):
        MiningConfig.from_assignments(["label_objects=some"])


def test_settings_route_thresholds_and_name_bad_keys():
    cfg = MiningConfig.from_assignments(["regions=oracle", "flow_threshold=1.5", "gate=none"])
    assert cfg.regions == "oracle" and cfg.thresholds == MinedLabelsConfig(flow_threshold=1.5) and cfg.gate == "none"
    with pytest.raises(ValueError, match="unknown key"):
        MiningConfig.from_assignments(["nope=1"])
    with pytest.raises(ValueError, match="regions 'x'"):
        MiningConfig.from_assignments(["regions=x"])
