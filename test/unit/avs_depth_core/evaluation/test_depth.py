"""avs-depth evaluate: Table-1 rows for checkpoints x bags, the seven metrics in JSON and markdown, figures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from avs_depth_core.audio import BATVISION_CHIRP, synthesize_chirp
from avs_depth_core.cli import main
from avs_depth_core.data import topics
from avs_depth_core.data.bag import BagWriter, make_msg
from avs_depth_core.data.datasets import SupervisedBagDataset
from avs_depth_core.data.messages import camera_info_fields, echo_fields, image_fields
from avs_depth_core.evaluation import REPORT_METRICS, check_batch
from avs_depth_core.models.avsnet import AVSNet
from avs_depth_core.visualise import colourise, save_prediction_figure


def test_train_then_evaluate_two_checkpoints_two_bags(tmp_path, capsys, tiny_bag):
    run = tiny_bag.train(tmp_path)
    other_bag = tiny_bag.write(tmp_path / "other_bag", {"test": 3}, seed=5)
    capsys.readouterr()
    out = tmp_path / "results"
    ckpts = [run / "checkpoints" / "best.safetensors", run / "checkpoints" / "last"]
    assert main(["evaluate", "--bag", str(tmp_path / "bag"), str(other_bag), "--checkpoint", *map(str, ckpts),
                 "--out", str(out), "--figures", "2", "--device", "cpu", "--batch-size", "2",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    printed = capsys.readouterr().out
    for header in ("Abs Rel", "Sq Rel", "RMSE", "RMSE log", "δ<1.25", "δ<1.25²", "δ<1.25³", "Scale log err",
                   "averaged per image", "ground-truth median depth"):
        assert header in printed
    rows = json.loads((out / "results.json").read_text())
    assert [(r["label"], r["bag"].split("/")[-1]) for r in rows] == [
        ("run/best", "bag"), ("run/best", "other_bag"), ("run/last", "bag"), ("run/last", "other_bag")]
    for r in rows:
        assert set(REPORT_METRICS) <= set(r["metrics"]) and all(np.isfinite(r["metrics"][m]) for m in REPORT_METRICS)
        assert sum(b["images"] for b in r["by_gt_median"]) == r["images"]
        assert all(np.isfinite(b["scale_log_error"]) for b in r["by_gt_median"])
        assert r["input"] == "RGB-Echoes" and r["max_depth"] == tiny_bag.MAX_DEPTH and r["skipped_no_valid_gt"] == 0
        assert len(r["figures"]) == 2 and all(Image.open(f).size[0] > 300 for f in r["figures"])
    assert rows[0]["images"] == 2 and rows[1]["images"] == 3  # the test splits
    table, breakdown = (out / "results.md").read_text().split("By the images' ground-truth median depth")
    assert table.count("| run/") == 4
    assert breakdown.count("| run/") == sum(len(r["by_gt_median"]) for r in rows)


def test_metric_range_and_errors(tmp_path, capsys, tiny_bag, tiny_checkpoint):
    bag = tiny_bag.write(tmp_path / "bag", {"test": 2})
    ckpt = tiny_checkpoint(tmp_path / "tiny", image_size=[32, 64], echo_size=[32, 32], max_depth=tiny_bag.MAX_DEPTH)
    common = ["evaluate", "--bag", str(bag), "--checkpoint", str(ckpt), "--device", "cpu", "--cache-dir", str(tmp_path / "c"),
              "--out", str(tmp_path / "r")]
    # All walls are 1-6 m away: an evaluation range starting at 7 m leaves no valid pixel in any image.
    assert main([*common, "--min-depth", "7"]) == 2
    assert "no image had valid ground truth in (7.0, 8.0) (2 skipped)" in capsys.readouterr().err
    assert main([*common, "--split", "val"]) == 2
    assert "val" in capsys.readouterr().err
    assert main([*common[:2], str(tmp_path / "nope"), *common[3:]]) == 2
    assert "bag not found" in capsys.readouterr().err


def test_nan_input_is_named():
    batch = {"rgb": torch.zeros(2, 3, 2, 2), "depth": torch.ones(2, 1, 2, 2), "stamp_ns": torch.tensor([5, 6])}
    batch["depth"][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"batch\['depth'\] holds NaN or inf for samples with stamp_ns \[5\]"):
        check_batch(batch)


def test_figure_marks_invalid_pixels_grey(tmp_path):
    depth = np.array([[1.0, np.nan], [2.0, 0.0]], np.float32)
    rgb = colourise(depth, 0.0, 2.0, valid=depth > 0)
    assert tuple(rgb[0, 1]) == (128, 128, 128) and tuple(rgb[1, 1]) == (128, 128, 128)
    assert tuple(rgb[0, 0]) != tuple(rgb[1, 0])
    gt = torch.full((1, 8, 16), 3.0)
    gt[..., :2] = 0
    pred = torch.full((1, 4, 8), 2.5)  # resized to the ground truth's resolution
    pred[0, 0, 0] = float("nan")
    path = save_prediction_figure(tmp_path / "f.png", torch.rand(3, 8, 16), gt, pred, 1e-3, 10.0, "t")
    assert Image.open(path).size[0] > 300


def write_fine_depth_bag(path, tiny, n=3):
    """Test-split frames at the network size (32x64) whose depth is recorded at twice that: a one-pixel checkerboard of
    2 m and 5 m (nearest downsampling keeps only the 2 m squares) with an invalid border column."""
    H, W, K, T0, PERIOD, RATE = tiny.H, tiny.W, tiny.K, tiny.T0, tiny.PERIOD, tiny.RATE
    rng = np.random.default_rng(3)
    chirp = synthesize_chirp(BATVISION_CHIRP)
    yy, xx = np.mgrid[:2 * H, :2 * W]
    depths = []
    with BagWriter(path) as w:
        for i in range(n):
            t = T0 + i * PERIOD
            depth = np.where((yy + xx) % 2 == 0, 2.0, 5.0).astype(np.float32) + 0.25 * i
            depth[:, :3] = np.nan
            depths.append(depth)
            echo = rng.normal(0, 1e-3, (2, 2400)).astype(np.float32)
            echo[:, :chirp.size] += 0.5 * chirp
            rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
            w.write(topics.CAMERA_INFO, make_msg(topics.CAMERA_INFO_TYPE, t, "cam", camera_info_fields(K, W, H)),
                    topics.CAMERA_INFO_TYPE)
            w.write(topics.IMAGE, make_msg(topics.IMAGE_TYPE, t, "cam", image_fields(rgb, "rgb8")), topics.IMAGE_TYPE)
            w.write(topics.DEPTH, make_msg(topics.IMAGE_TYPE, t, "cam", image_fields(depth, "32FC1")), topics.IMAGE_TYPE)
            w.write(topics.ECHO, make_msg(topics.ECHO_TYPE, t, "mic", echo_fields(echo, RATE, BATVISION_CHIRP)),
                    topics.ECHO_TYPE)
        w.add_sequence("test0", "test", T0, T0 + (n - 1) * PERIOD)
    return path, depths


def test_metrics_at_the_ground_truths_native_resolution(tmp_path, tiny_bag, tiny_checkpoint):
    H, W, MAX_DEPTH = tiny_bag.H, tiny_bag.W, tiny_bag.MAX_DEPTH
    bag, depths = write_fine_depth_bag(tmp_path / "bag", tiny_bag)
    ckpt = tiny_checkpoint(tmp_path / "tiny", image_size=[H, W], echo_size=[32, 32], max_depth=MAX_DEPTH)
    rows = {}
    for resolution in ("native", "network"):
        out = tmp_path / resolution
        assert main(["evaluate", "--bag", str(bag), "--checkpoint", str(ckpt), "--device", "cpu", "--out", str(out),
                     "--cache-dir", str(tmp_path / "cache"), "--gt-resolution", resolution, "--batch-size", "2"]) == 0
        rows[resolution] = json.loads((out / "results.json").read_text())[0]
    assert rows["native"]["gt_size"] == [2 * H, 2 * W] and rows["network"]["gt_size"] == [H, W]
    assert "128x64 native" in (tmp_path / "native" / "results.md").read_text()

    # By hand: the network's prediction, bilinearly resized (align_corners, as ZoeDepth) to the recorded depth's size,
    # clamped to the range, compared on 0 < gt < max_depth pixels, averaged per image.
    model = AVSNet.from_checkpoint(ckpt, torch.device("cpu"))
    dataset = SupervisedBagDataset(bag, "test", image_size=(H, W), max_depth=MAX_DEPTH, echo_size=(32, 32),
                                   cache_dir=tmp_path / "cache", progress=False, verbose=False)
    abs_rel, rmse, delta1 = [], [], []
    for i in range(len(dataset)):
        item = dataset[i]
        with torch.no_grad():
            pred = model(item["rgb"][None], item["echo"][None])["metric_depth"]
        pred = F.interpolate(pred, size=(2 * H, 2 * W), mode="bilinear", align_corners=True)[0, 0].double().numpy()
        gt = depths[i].astype(np.float64)
        valid = np.isfinite(gt) & (gt > 1e-3) & (gt < MAX_DEPTH)
        p, g = np.clip(pred, 1e-3, MAX_DEPTH)[valid], gt[valid]
        abs_rel.append(np.mean(np.abs(p - g) / g))
        rmse.append(np.sqrt(np.mean((p - g) ** 2)))
        delta1.append(np.mean(np.maximum(p / g, g / p) < 1.25))
    native = rows["native"]["metrics"]
    assert native["abs_rel"] == pytest.approx(np.mean(abs_rel), rel=1e-5)
    assert native["rmse"] == pytest.approx(np.mean(rmse), rel=1e-5)
    assert native["delta1"] == pytest.approx(np.mean(delta1), rel=1e-5)
    # At the network size the checkerboard's 5 m squares are gone, and the numbers differ.
    assert abs(rows["network"]["metrics"]["rmse"] - native["rmse"]) > 0.1


class _Handed(torch.nn.Module):
    """Depth = red channel x (1 + the left ear's mean): tells the image's sides and the ears apart."""

    cfg = type("Cfg", (), {"use_echo": True})()

    def forward(self, rgb, echo):
        return {"metric_depth": rgb[:, :1] * (1 + echo[:, 0].mean(dim=(1, 2))).view(-1, 1, 1, 1)}


def test_flip_tta_averages_with_the_mirrored_scene():
    """flip_tta: the geometric mean with the prediction for the image flipped and the ears swapped, flipped back."""
    from avs_depth_core.evaluation import predict_depth

    rgb = torch.rand(2, 3, 4, 8) + 0.5
    echo = torch.stack([torch.full((2, 4, 8), 1.0), torch.full((2, 4, 8), 3.0)], dim=1)
    batch = {"rgb": rgb, "echo": echo}
    model = _Handed()
    single = predict_depth(model, batch, torch.device("cpu"))
    torch.testing.assert_close(single, rgb[:, :1] * 2)
    averaged = predict_depth(model, batch, torch.device("cpu"), flip_tta=True)
    torch.testing.assert_close(averaged, rgb[:, :1] * (2 * 4) ** 0.5)  # the mirror hears 3 in the left ear
