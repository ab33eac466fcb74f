"""avs-depth evaluate: Table-1 rows for checkpoints x bags, the seven metrics in JSON and markdown, figures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_infer import tiny_checkpoint
from test_train import MAX_DEPTH, train_tiny, write_tiny_bag

from avs_depth_core.cli import main
from avs_depth_core.evaluation import TABLE_METRICS, check_batch
from avs_depth_core.visualise import colourise, save_prediction_figure


def test_train_then_evaluate_two_checkpoints_two_bags(tmp_path, capsys):
    run = train_tiny(tmp_path)
    other_bag = write_tiny_bag(tmp_path / "other_bag", {"test": 3}, seed=5)
    capsys.readouterr()
    out = tmp_path / "results"
    ckpts = [run / "checkpoints" / "best.safetensors", run / "checkpoints" / "last"]
    assert main(["evaluate", "--bag", str(tmp_path / "bag"), str(other_bag), "--checkpoint", *map(str, ckpts),
                 "--out", str(out), "--figures", "2", "--device", "cpu", "--batch-size", "2",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    printed = capsys.readouterr().out
    for header in ("Abs Rel", "Sq Rel", "RMSE", "RMSE log", "δ<1.25", "δ<1.25²", "δ<1.25³", "averaged per image"):
        assert header in printed
    rows = json.loads((out / "results.json").read_text())
    assert [(r["label"], r["bag"].split("/")[-1]) for r in rows] == [
        ("run/best", "bag"), ("run/best", "other_bag"), ("run/last", "bag"), ("run/last", "other_bag")]
    for r in rows:
        assert set(TABLE_METRICS) <= set(r["metrics"]) and all(np.isfinite(r["metrics"][m]) for m in TABLE_METRICS)
        assert r["input"] == "RGB-Echoes" and r["max_depth"] == MAX_DEPTH and r["skipped_no_valid_gt"] == 0
        assert len(r["figures"]) == 2 and all(Image.open(f).size[0] > 300 for f in r["figures"])
    assert rows[0]["images"] == 2 and rows[1]["images"] == 3  # the test splits
    assert (out / "results.md").read_text().count("| run/") == 4


def test_metric_range_and_errors(tmp_path, capsys):
    bag = write_tiny_bag(tmp_path / "bag", {"test": 2})
    ckpt = tiny_checkpoint(tmp_path / "tiny", image_size=[32, 64], echo_size=[32, 32], max_depth=MAX_DEPTH)
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
