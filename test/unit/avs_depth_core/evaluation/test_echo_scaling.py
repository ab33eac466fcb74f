"""avs-depth evaluate-scaling (Table 2): a Monodepth2 checkpoint from one epoch of training feeds the command, which writes
all rows with the seven metrics and Fig. 5 figures; the rows' arithmetic on maps with known answers; bad input."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from PIL import Image

from avs_depth_core.cli import main
from avs_depth_core.evaluation import TABLE_METRICS
from avs_depth_core.evaluation.echo_scaling import (
    ABLATION_KEYS,
    ABLATION_ROWS,
    REFERENCE_ROW,
    ROWS,
    ablation_rows,
    evaluate_scaling,
)
from avs_depth_core.models.avsnet import AVSNet, AVSNetConfig
from avs_depth_core.relative import RelativeDepthModel

ROOT = Path(__file__).resolve().parents[4]


def avsnet_checkpoint(path: Path, use_echo: bool, sim: Any) -> Path:
    """A randomly initialised tiny AVS-Net at the bag's 64x128 with a 12 m range (the bv1 clip)."""
    model = yaml.safe_load((ROOT / "config" / "avsnet_tiny.yaml").read_text())["model"]
    model.update(image_size=[sim.H, sim.W], echo_size=[32, 32], max_depth=sim.MAX_DEPTH, use_echo=use_echo)
    torch.manual_seed(0)
    return AVSNet(AVSNetConfig.from_dict(model)).save(path)


def test_one_epoch_checkpoint_feeds_evaluate_scaling(sim_bag, tmp_path, capsys, sim):
    run = tmp_path / "md2"
    cache = tmp_path / "cache"
    assert main(sim.train_args(sim_bag, run, cache, sim.write_config(tmp_path / "md2.yaml"))) == 0
    echo_ckpt = avsnet_checkpoint(tmp_path / "avs_echo" / "checkpoints" / "best", use_echo=True, sim=sim)
    rgb_ckpt = avsnet_checkpoint(tmp_path / "avs_rgb" / "checkpoints" / "best", use_echo=False, sim=sim)
    scripted = tmp_path / "inverse.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in torch 2.x but still works
        torch.jit.script(InverseBrightness()).save(str(scripted))
    capsys.readouterr()
    out = tmp_path / "results"
    assert main(["evaluate-scaling", "--bag", str(sim_bag), "--relative", str(run / "checkpoints" / "last"),
                 str(run / "checkpoints" / "best.safetensors"), "--relative-torchscript", str(scripted),
                 "--torchscript-output", "disparity", "--zero-shot-avsnet", str(rgb_ckpt),
                 "--avsnet", str(echo_ckpt), "--avsnet-rgb", str(rgb_ckpt),
                 "--out", str(out), "--figures", "2", "--device", "cpu", "--batch-size", "5", "--cache-dir", str(cache)]) == 0
    printed = capsys.readouterr().out
    names = {"monodepth2 md2/last", "monodepth2 md2/best", "torchscript inverse.pt", "avsnet-rgb avs_rgb/best"}
    for text in ("| Scaling |", "Abs Rel", "Sq Rel", "RMSE log", "δ<1.25³", "| No |", "| RGB |", "| RGB-Echoes |",
                 "GT median (reference)", *names):
        assert text in printed, text
    report = json.loads((out / "scaling.json").read_text())
    assert report["frames"] == 12 and report["split"] == "test" and report["max_depth"] == sim.MAX_DEPTH
    assert set(report["models"]) == names
    # The Only-RGB net scaled by itself is itself: its RGB row equals its unscaled row.
    zero_shot = report["models"]["avsnet-rgb avs_rgb/best"]
    assert zero_shot["rgb"]["abs_rel"] == pytest.approx(zero_shot["none"]["abs_rel"], rel=1e-5)
    for rows in report["models"].values():
        assert set(rows) == {*ROWS, REFERENCE_ROW}
        for row in rows.values():
            assert all(math.isfinite(row[m]) for m in TABLE_METRICS)
            assert row["images"] == 12 and row["skipped_no_valid_gt"] == 0
        assert rows["none"]["scale_median"] == 1.0
        # The reference row is Monodepth2's protocol: its scale is the ground truth's, so its log scale error is 0.
        assert rows[REFERENCE_ROW]["scale_factor_log_error"] == pytest.approx(0.0, abs=1e-9)
        assert all(math.isfinite(row["scale_log_error"]) for row in rows.values())
    assert len(report["figures"]) == 8  # 2 frames x 4 models
    for f in report["figures"]:
        assert Image.open(f).size[0] > 600
    assert (out / "scaling.md").read_text().count("| monodepth2 ") == 8


class InverseBrightness(torch.nn.Module):
    """A TorchScript-able stand-in for a MiDaS-style model: 'disparity' from the image's brightness."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.2 + x.mean(dim=1, keepdim=True)


class FakeAVSNet(torch.nn.Module):
    """Stands in for AVS-Net: .cfg and forward(rgb, echo) -> {"metric_depth"}; `fn` maps the rgb batch to metres."""

    def __init__(self, fn, use_echo: bool, size: tuple[int, int] = (32, 32)) -> None:
        super().__init__()
        self.fn = fn
        self.cfg = SimpleNamespace(image_size=size, min_depth=1e-3, max_depth=10.0, use_echo=use_echo)

    def forward(self, rgb: torch.Tensor, echo: torch.Tensor | None) -> dict[str, torch.Tensor]:
        assert (echo is not None) == self.cfg.use_echo
        return {"metric_depth": self.fn(rgb)}


def known_frames(n: int = 4, size: tuple[int, int] = (32, 32)) -> list[dict]:
    """Frames whose red channel is depth / 10: depth 1-8 m in a ramp, a different range per frame."""
    frames = []
    for i in range(n):
        depth = torch.linspace(1.0, 2.0 + 2 * i, size[1]).expand(1, *size).clone()
        rgb = torch.cat([depth / 10, torch.rand(2, *size)])
        frames.append({"rgb": rgb, "echo": torch.rand(2, 8, 8), "depth": depth, "stamp_ns": 1000 + i})
    return frames


def depth_from_red(x: torch.Tensor) -> torch.Tensor:
    return x[:, :1] * 10


def run_known(relative_fn, echo_fn=depth_from_red, rgb_fn=lambda x: torch.full_like(x[:, :1], 2.0), **kwargs):
    relative = {"rel": RelativeDepthModel.from_callable(relative_fn, "depth", name="rel")}
    return evaluate_scaling(known_frames(), relative, FakeAVSNet(echo_fn, True), FakeAVSNet(rgb_fn, False),
                            torch.device("cpu"), 1e-3, 10.0, batch_size=3, min_pixels=10, progress=False, **kwargs)


def test_rows_on_maps_with_known_answers():
    """Relative = depth / 7 (perfect shape, wrong units); the echo net is exact; the RGB net says 2 m everywhere."""
    results, figures = run_known(lambda x: depth_from_red(x) / 7, figure_indices=(1, 3))
    rows = results["rel"]
    assert rows["none"]["abs_rel"] == pytest.approx(6 / 7) and rows["none"]["delta1"] == 0.0
    for row in ("rgb_echo", REFERENCE_ROW):
        assert rows[row]["abs_rel"] == pytest.approx(0.0, abs=1e-6) and rows[row]["delta1"] == 1.0
        assert rows[row]["scale_factor_log_error"] == pytest.approx(0.0, abs=1e-6)
        assert rows[row]["scale_log_error"] == pytest.approx(0.0, abs=1e-6)
        assert rows[row]["scale_median"] == pytest.approx(7.0)
    # RGB scaling: scale 2 / median(depth / 7); frame i's median depth is 1.5 + i, so its scale error is log((1.5 + i) / 2).
    expected = sum(abs(math.log((1.5 + i) / 2)) for i in range(4)) / 4
    assert rows["rgb"]["scale_factor_log_error"] == pytest.approx(expected, rel=1e-3)
    # the same from the medians of the scaled prediction and the ground truth (metrics.py's definition)
    assert rows["rgb"]["scale_log_error"] == pytest.approx(expected, rel=1e-2)
    assert 0 < rows["rgb"]["delta1"] < 1 and rows["rgb"]["fallbacks"] == 0
    assert all(rows[r]["images"] == 4 for r in rows)
    assert [f["index"] for f in figures] == [1, 3] and set(figures[0]["models"]["rel"]) == set(ROWS)


def test_unusable_scale_is_a_counted_fallback_or_an_error():
    """A NaN pseudo-metric map (no usable pixel, NaN median) scores the frame unscaled and counts it, never a NaN map."""
    results, _ = run_known(lambda x: depth_from_red(x) / 7, echo_fn=lambda x: torch.full_like(x[:, :1], math.nan))
    rows = results["rel"]
    assert rows["rgb_echo"]["fallbacks"] == 4 and "no finite values" in rows["rgb_echo"]["fallback_examples"][0]
    assert rows["rgb_echo"]["abs_rel"] == pytest.approx(rows["none"]["abs_rel"])
    assert rows["rgb"]["fallbacks"] == 0
    with pytest.raises(ValueError, match=r"rel, RGB-Echoes scaling, frames with stamp_ns \[1000, 1001, 1002\].*--fallback"):
        run_known(lambda x: depth_from_red(x) / 7, echo_fn=lambda x: torch.full_like(x[:, :1], math.nan), fallback="raise")
    # A relative model predicting zero depth everywhere has a zero median: counted for both scaled rows.
    results, _ = run_known(lambda x: torch.zeros_like(x[:, :1]))
    assert results["rel"]["rgb"]["fallbacks"] == results["rel"]["rgb_echo"]["fallbacks"] == 4
    assert all(math.isfinite(results["rel"][r]["abs_rel"]) for r in ROWS)


def test_bad_relative_models_are_named():
    with pytest.raises(ValueError, match="rel: expected a finite, non-negative depth map.*3072 negative"):
        run_known(lambda x: -depth_from_red(x))
    with pytest.raises(ValueError, match=r"rel: expected a depth map of shape \(3, 1, 32, 32\)"):
        run_known(lambda x: depth_from_red(x)[..., :16])


def test_cli_input_errors(sim_bag, tmp_path, capsys, sim):
    echo_ckpt = avsnet_checkpoint(tmp_path / "echo", use_echo=True, sim=sim)
    rgb_ckpt = avsnet_checkpoint(tmp_path / "rgb", use_echo=False, sim=sim)
    base = ["evaluate-scaling", "--bag", str(sim_bag), "--device", "cpu", "--out", str(tmp_path / "o")]
    assert main([*base, "--relative", str(tmp_path / "missing"), "--avsnet", str(echo_ckpt), "--avsnet-rgb",
                 str(rgb_ckpt)]) == 2
    assert "missing.json: checkpoint config not found" in capsys.readouterr().err
    assert main([*base, "--relative", str(echo_ckpt), "--avsnet", str(rgb_ckpt), "--avsnet-rgb", str(echo_ckpt)]) == 2
    assert "--avsnet" in (err := capsys.readouterr().err) and "an Only-RGB checkpoint (use_echo false)" in err
    assert main([*base, "--relative", str(echo_ckpt), "--avsnet", str(echo_ckpt), "--avsnet-rgb", str(rgb_ckpt)]) == 2
    assert "checkpoint kind is 'avsnet', expected 'monodepth2'" in capsys.readouterr().err
    assert main([*base, "--avsnet", str(echo_ckpt), "--avsnet-rgb", str(rgb_ckpt)]) == 2
    assert "no relative model" in capsys.readouterr().err


def test_ablation_rows_pick_each_models_row():
    """The relative model has the right shape in the wrong units, the "echo-supervised" model is exact in metres and the
    constant has no shape: each ablation row must come from its own model and row."""
    frames = known_frames()
    relative = {"rel": RelativeDepthModel.from_callable(lambda x: depth_from_red(x) / 7, "depth", name="rel"),
                "metric": RelativeDepthModel.from_callable(depth_from_red, "metric_depth", name="metric"),
                "constant": RelativeDepthModel.from_callable(lambda x: torch.ones_like(x[:, :1]), "depth", name="constant")}
    results, _ = evaluate_scaling(frames, relative, FakeAVSNet(depth_from_red, True),
                                  FakeAVSNet(lambda x: torch.full_like(x[:, :1], 2.0), False), torch.device("cpu"), 1e-3,
                                  10.0, batch_size=3, min_pixels=10, progress=False)
    rows = ablation_rows(results, "rel", constant="constant", echo_supervised="metric")
    assert tuple(rows) == ABLATION_ROWS
    assert all(set(r) == set(ABLATION_KEYS) for r in rows.values())
    assert rows["none"]["abs_rel"] == pytest.approx(6 / 7)  # the relative model unscaled
    assert rows["echo_supervised"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)  # the metric model, no scaling
    assert rows["echo_supervised"]["scale_log_error"] == pytest.approx(0.0, abs=1e-6)
    assert rows["gt_median"]["delta1"] == 1.0
    assert rows["constant_gt_median"]["delta1"] < 1.0  # the ramp's ends are off by more than 1.25 from its median
    assert rows["constant_gt_median"]["abs_rel"] == pytest.approx(results["constant"][REFERENCE_ROW]["abs_rel"])
    assert "echo_supervised" not in ablation_rows(results, "rel")
    with pytest.raises(ValueError, match=r"no results for model\(s\) \['md2'\]"):
        ablation_rows(results, "md2")
