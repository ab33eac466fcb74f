"""Errors by region (all / static / dynamic) and per object: a hand-made case, and the regions of `avs-depth evaluate`
and `evaluate-scaling` on bags with instance maps."""

import json
import math

import numpy as np
import pytest
import torch

from avs_depth_core.cli import main
from avs_depth_core.data.instances import FrameInstances, ObjectStates
from avs_depth_core.evaluation.echo_scaling import evaluate_scaling
from avs_depth_core.evaluation.regions import REGIONS, RegionAccumulator, RegionSource, region_masks
from avs_depth_core.relative import RelativeDepthModel

H, W = 20, 40  # 800 pixels: 0.5 % is 4


def hand_made():
    gt = torch.full((1, H, W), 2.0)
    instances = np.zeros((H, W), np.uint16)
    instances[0:4, 0:10] = 1     # moving, 40 px
    instances[10, 0:3] = 2       # moving but 3 px < 0.5 %: not a dynamic region, not an object
    instances[10:14, 20:30] = 3  # static, 40 px
    pred = torch.full((1, H, W), 6.0)  # three times too far everywhere ...
    pred[0, 0:4, 0:10] = 12.0          # ... and the moving object twice as far again (as if it moved with the camera)
    return pred, gt, instances


def test_region_masks_keep_moving_instances_of_half_a_percent():
    _, _, instances = hand_made()
    masks = region_masks(torch.from_numpy(instances.astype(np.int64)), {1, 2})
    assert int(masks["dynamic"].sum()) == 40 and int(masks["static"].sum()) == H * W - 40
    assert bool(masks["all"].all())


def test_hand_made_case():
    pred, gt, instances = hand_made()
    acc = RegionAccumulator(1e-3, 30.0)
    acc.update(pred, gt, instances, {1, 2}, {1: {"kind": "person", "motion": "with_camera"},
                                             3: {"kind": "cart", "motion": "static"}}, "seq0")
    # a frame with nothing moving: counts for all and static, not for dynamic
    acc.update(torch.full((1, H, W), 2.0), gt, np.zeros((H, W), np.uint16), set())
    s = acc.summary()
    # metric: static pixels 6 for 2 (abs rel 2), dynamic 12 for 2 (abs rel 5); second frame exact
    assert s["metric"]["static"]["abs_rel"] == pytest.approx((2.0 + 0.0) / 2)
    assert s["metric"]["dynamic"]["abs_rel"] == pytest.approx(5.0)
    assert s["metric"]["all"]["abs_rel"] == pytest.approx((2.0 * 760 / 800 + 5.0 * 40 / 800) / 2)
    assert s["metric"]["dynamic"]["images"] == 1 and s["metric"]["static"]["images"] == 2
    # relative: one median ratio (2 / 6) for the whole image: static exact, the moving object twice too far
    assert s["relative"]["static"]["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert s["relative"]["dynamic"]["abs_rel"] == pytest.approx(1.0)
    assert s["relative"]["dynamic"]["delta1"] == pytest.approx(0.0)
    assert s["relative"]["dynamic"]["scale_log_error"] == pytest.approx(math.log(2))
    assert s["relative"]["static"]["delta1"] == pytest.approx(1.0)
    assert s["dynamic_fraction"] == pytest.approx((40 / 800 + 0) / 2)
    objects = {o["id"]: o for o in s["objects"]}
    assert set(objects) == {1, 3}  # object 2 is under the size threshold
    one = objects[1]
    assert (one["kind"], one["motion"], one["frames"], one["moving_frames"]) == ("person", "with_camera", 1, 1)
    assert one["abs_rel_relative"] == pytest.approx(1.0) and one["abs_rel_metric"] == pytest.approx(5.0)
    assert one["abs_rel_own_median"] == pytest.approx(0.0, abs=1e-12)
    assert one["scale_log_error_metric"] == pytest.approx(math.log(6))
    assert objects[3]["moving_frames"] == 0 and objects[3]["abs_rel_metric"] == pytest.approx(2.0)
    assert s["by_motion"]["with_camera"]["abs_rel_relative"] == pytest.approx(1.0)
    assert s["by_motion"]["static"]["objects"] == 1


def test_prediction_at_another_resolution_and_labels_resized():
    pred, gt, instances = hand_made()
    acc = RegionAccumulator(1e-3, 30.0)
    big_gt = torch.nn.functional.interpolate(gt[None], scale_factor=2, mode="nearest")[0]
    acc.update(pred, big_gt, instances, {1})  # labels (20x40) resized to the 40x80 ground truth, nearest
    s = acc.summary()
    assert s["metric"]["dynamic"]["images"] == 1
    assert s["relative"]["static"]["abs_rel"] < 0.05 and s["relative"]["dynamic"]["abs_rel"] > 0.8


def test_evaluate_reports_regions_on_a_dynamic_bag(tmp_path, tiny_checkpoint, tiny_bag):
    bag = tmp_path / "dyn"
    assert main(["simulate", "--preset", "bv1", "--dynamic", "--sequences", "2", "--frames", "6", "--seed", "1",
                 "--height", "64", "--width", "128", "--out", str(bag)]) == 0
    ckpt = tiny_checkpoint(tmp_path / "tiny", image_size=[64, 128], echo_size=[32, 32], max_depth=12.0)
    out = tmp_path / "res"
    assert main(["evaluate", "--bag", str(bag), "--checkpoint", str(ckpt), "--device", "cpu", "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache"), "--batch-size", "4"]) == 0
    row = json.loads((out / "results.json").read_text())[0]
    regions = row["regions"]
    assert regions["images"] == row["images"] == 6
    for protocol in ("relative", "metric"):
        assert set(regions[protocol]) == set(REGIONS)
        assert regions[protocol]["all"]["images"] == 6
    # AVS-Net's own metres: the metric "all" region is the headline row
    assert regions["metric"]["all"]["abs_rel"] == pytest.approx(row["metrics"]["abs_rel"], rel=1e-6)
    assert regions["metric"]["dynamic"]["images"] > 0 and regions["objects"]
    assert "By region" in (out / "results.md").read_text()
    # A bag without instance maps: the row is what it always was.
    tiny = tiny_bag.write(tmp_path / "plain")
    plain = tmp_path / "plain_res"
    ckpt_plain = tiny_checkpoint(tmp_path / "tiny_plain", image_size=[tiny_bag.H, tiny_bag.W], echo_size=[32, 32],
                                 max_depth=tiny_bag.MAX_DEPTH)
    assert main(["evaluate", "--bag", str(tiny), "--checkpoint", str(ckpt_plain), "--device", "cpu", "--out", str(plain),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "regions" not in json.loads((plain / "results.json").read_text())[0]
    assert "By region" not in (plain / "results.md").read_text()


def test_evaluate_scaling_rows_carry_regions():
    size = (32, 32)
    frames, sources = [], {}
    for i in range(3):
        depth = torch.linspace(1.0, 2.0 + 2 * i, size[1]).expand(1, *size).clone()
        frames.append({"rgb": torch.cat([depth / 10, torch.rand(2, *size)]), "echo": torch.rand(2, 8, 8), "depth": depth,
                       "stamp_ns": 1000 + i})
        instances = np.zeros(size, np.uint16)
        instances[8:16, 8:16] = 1
        objects = ObjectStates(np.array([1], np.uint16), ("cart",), ("crossing",), np.array([True]), np.ones((1, 3)),
                               np.eye(4)[None], np.zeros((1, 3)), np.eye(4)[None], np.eye(4))
        sources[1000 + i] = FrameInstances(1000 + i, instances, objects)
    source = RegionSource(sources, [{"name": "s", "start_ns": 0, "end_ns": 5000}])

    class Fake(torch.nn.Module):
        def __init__(self, fn, use_echo):
            super().__init__()
            self.fn = fn
            from types import SimpleNamespace
            self.cfg = SimpleNamespace(image_size=size, min_depth=1e-3, max_depth=10.0, use_echo=use_echo)

        def forward(self, rgb, echo):
            return {"metric_depth": self.fn(rgb)}

    relative = {"rel": RelativeDepthModel.from_callable(lambda x: x[:, :1] * 5, "depth", name="rel")}
    results, _ = evaluate_scaling(frames, relative, Fake(lambda x: x[:, :1] * 10, True),
                                  Fake(lambda x: torch.full_like(x[:, :1], 2.0), False), torch.device("cpu"), 1e-3, 10.0,
                                  batch_size=2, min_pixels=10, progress=False, regions=source)
    rows = results["rel"]
    for row in rows.values():
        assert row["regions"]["images"] == 3 and row["regions"]["metric"]["dynamic"]["images"] == 3
    # the relative model is half the depth: echo-scaled and median-scaled it is exact in every region
    for region in REGIONS:
        assert rows["rgb_echo"]["regions"]["metric"][region]["abs_rel"] == pytest.approx(0.0, abs=1e-6)
        assert rows["none"]["regions"]["relative"][region]["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert rows["none"]["regions"]["metric"]["dynamic"]["abs_rel"] == pytest.approx(0.5, rel=1e-6)  # half the depth
    assert rows["none"]["regions"]["objects"][0]["sequence"] == "s"
    results_plain, _ = evaluate_scaling(frames, relative, Fake(lambda x: x[:, :1] * 10, True),
                                        Fake(lambda x: torch.full_like(x[:, :1], 2.0), False), torch.device("cpu"), 1e-3,
                                        10.0, batch_size=2, min_pixels=10, progress=False)
    assert "regions" not in results_plain["rel"]["none"]


def test_dynamic_figure_shows_masks_depth_and_predictions(tmp_path):
    from PIL import Image

    from avs_depth_core.evaluation.dynamic_figure import mask_overlay, save_dynamic_figure

    pred, gt, instances = hand_made()
    rgb = np.full((H, W, 3), 200, np.uint8)
    overlay = mask_overlay(rgb, instances, {1})
    assert not np.array_equal(overlay[0, 0], overlay[12, 22])  # moving in colour, still in grey
    assert np.all(overlay[12, 22] == overlay[12, 22][0]) and overlay[0, 0].std() > 0
    plain = save_dynamic_figure(tmp_path / "plain.png", rgb, gt[0], instances, {1})
    both = save_dynamic_figure(tmp_path / "both.png", rgb, gt[0], instances, {1},
                               {"baseline": pred[0], "mined": gt[0]}, max_depth=12.0, title="t")
    assert Image.open(both).size[1] > 2 * Image.open(plain).size[1]  # a row per prediction
