"""`avs-depth train --model rescale` on a tiny bag with tiny AVS-Net checkpoints, the trained head in evaluate-scaling's
pixelwise rows and in the live pipeline (scale_method pixelwise: the head with a fresh echo, the held global scale
without one, then NaN)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from avs_depth_core.cli import main
from avs_depth_core.evaluation.rescale_maps import evaluate_rescale_head
from avs_depth_core.models.rescale_head import EchoRescaleHead
from avs_depth_core.pipeline import DepthPipeline, EchoInput, PipelineSettings
from avs_depth_core.train.rescale import EAR_SWAP, resolve_config

SEC = 1_000_000_000


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bag, tiny_checkpoint):
    w = tmp_path_factory.mktemp("rescale")
    bag = tiny_bag.write(w / "bag", {"train": 8, "val": 2, "test": 3})
    kw = dict(image_size=[32, 64], echo_size=[32, 32], max_depth=tiny_bag.MAX_DEPTH)
    echo = tiny_checkpoint(w / "echo", **kw, echo_range_profile=True)
    rgb = tiny_checkpoint(w / "rgb", **kw, use_echo=False)
    common = ["--set", f"model.frontend.relative_checkpoint={rgb}", "--set", f"model.frontend.echo_checkpoint={echo}",
              "--set", f"model.frontend.max_depth={tiny_bag.MAX_DEPTH}", "--set", f"data.cache_dir={w / 'cache'}",
              "--set", "model.guidance=[relative, pseudo_metric]"]
    args = ["train", "--model", "rescale", "--bag", str(bag), "--out", str(w / "run"), "--device", "cpu",
            "--batch-size", "4", "--epochs", "2", *common]
    assert main(args) == 0
    return {"bag": bag, "echo": echo, "rgb": rgb, "run": w / "run", "cache": w / "cache", "common": common}


def test_training_writes_loadable_checkpoints(trained):
    for name in ("last", "best"):
        head, frontend = EchoRescaleHead.from_checkpoint(trained["run"] / "checkpoints" / name)
        assert head.cfg.use_echo and head.cfg.echo_tokens > 1  # STFT and range-profile tokens
        assert frontend["echo_checkpoint"] == str(trained["echo"])
    assert (trained["run"] / "config.yaml").is_file()


def test_rgb_only_head_trains_with_the_fitted_anchor(trained, tmp_path, monkeypatch):
    # The tiny bag's walls are flat (no per-frame fit exists) and R is random, so the GT seen by the fits is replaced by
    # a depth that R's disparity explains exactly, 1 / (0.3 r + 0.05): the anchor must take those coefficients.
    import avs_depth_core.rescale as frozen

    fit = frozen.pseudo_labels
    monkeypatch.setattr(frozen, "pseudo_labels", lambda r, gt, valid, lo, hi: fit(r, 1.0 / (0.3 * r + 0.05), valid, lo, hi))
    args = ["train", "--model", "rescale", "--bag", str(trained["bag"]), "--out", str(tmp_path / "run"), "--device", "cpu",
            "--batch-size", "4", "--max-steps", "2", *trained["common"], "--set", "model.use_echo=false",
            "--set", "model.anchor=fitted", "--set", "model.guidance=[relative]", "--set", "train.validate=false"]
    assert main(args) == 0
    head, _ = EchoRescaleHead.from_checkpoint(tmp_path / "run" / "checkpoints" / "last")
    assert not head.cfg.use_echo
    assert head.cfg.coef_scale == pytest.approx(0.3, rel=1e-3) and head.cfg.coef_shift == pytest.approx(0.05, rel=1e-3)


def test_fitted_anchor_on_flat_walls_is_a_clear_error(trained, tmp_path, capsys):
    args = ["train", "--model", "rescale", "--bag", str(trained["bag"]), "--out", str(tmp_path / "run"), "--device", "cpu",
            "--batch-size", "4", "--max-steps", "1", *trained["common"], "--set", "model.use_echo=false",
            "--set", "model.anchor=fitted", "--set", "model.guidance=[relative]", "--set", "train.validate=false"]
    assert main(args) == 2
    assert "model.anchor fitted" in capsys.readouterr().err


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="echo_checkpoint"):
        resolve_config({"model": {"use_echo": True}})
    with pytest.raises(ValueError, match="train.w_si"):
        resolve_config({"model": {"use_echo": False, "anchor": "fitted"}, "train": {"w_si": 0, "w_tp": 0}})
    with pytest.raises(ValueError, match="model.frontend.feature_layer"):
        resolve_config({"model": {"frontend": {"feature_layer": "r9"}}})


def test_mirrored_frames_swap_the_ears():
    assert EAR_SWAP == [1, 0, 3, 2]


def test_evaluate_rescale_head_rows(trained):
    out = evaluate_rescale_head(trained["run"] / "checkpoints" / "last", trained["bag"], cache_dir=str(trained["cache"]))
    assert out["images"] == 3
    for row in ("global_median", "pixelwise"):
        assert all(math.isfinite(v) for v in out[row].values())


def test_pipeline_pixelwise_with_echo_then_held_then_nan(trained, tiny_bag):
    settings = PipelineSettings(avsnet_checkpoint=str(trained["echo"]), relative_model="avsnet_rgb",
                                relative_checkpoint=str(trained["rgb"]), device="cpu", scale_method="pixelwise",
                                rescale_checkpoint=str(trained["run"] / "checkpoints" / "last"), max_scale_hold_s=1.0)
    pixelwise = DepthPipeline.from_settings(settings)
    median = DepthPipeline.from_settings(PipelineSettings(**{**settings.__dict__, "scale_method": "median"}))
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (32, 64, 3), dtype=np.uint8)
    cfg = median.cfg
    echo = EchoInput(rng.uniform(-0.3, 0.3, (2, cfg.echo_samples + 50)).astype(np.float32), cfg.sample_rate, 20, 0)
    fresh_p, fresh_m = pixelwise(rgb, echo, 0), median(rgb, echo, 0)
    assert np.isfinite(fresh_p.metric).all() and fresh_p.scale.scale == pytest.approx(fresh_m.scale.scale)
    assert not np.allclose(fresh_p.metric, fresh_m.metric)  # the maps, not one factor
    held_p, held_m = pixelwise(rgb, None, SEC // 2), median(rgb, None, SEC // 2)
    assert held_p.scale.held and np.allclose(held_p.metric, held_m.metric)  # no echo: the held global scale
    assert np.isnan(pixelwise(rgb, None, 3 * SEC).metric).all()


def test_pipeline_pixelwise_needs_a_head(trained):
    settings = PipelineSettings(avsnet_checkpoint=str(trained["echo"]), relative_checkpoint=str(trained["rgb"]),
                                device="cpu", scale_method="pixelwise", rescale_checkpoint=str(trained["run"] / "nothing"))
    with pytest.raises(FileNotFoundError, match="rescale_checkpoint"):
        DepthPipeline.from_settings(settings)
    with pytest.raises(ValueError, match="backend torch"):
        DepthPipeline.from_settings(PipelineSettings(**{**settings.__dict__, "backend": "onnxruntime"}))



def test_evaluate_scaling_cli_scores_rescale_heads(trained, tmp_path):
    import json

    out = tmp_path / "scaling"
    args = ["evaluate-scaling", "--bag", str(trained["bag"]), "--avsnet", str(trained["echo"]), "--avsnet-rgb",
            str(trained["rgb"]), "--zero-shot-avsnet", str(trained["rgb"]), "--out", str(out), "--device", "cpu",
            "--cache-dir", str(trained["cache"]), "--min-pixels", "10", "--rescale-head",
            str(trained["run"] / "checkpoints" / "last")]
    assert main(args) == 0
    heads = json.loads((out / "pixelwise.json").read_text())
    assert len(heads) == 1 and set(heads[0]) >= {"global_median", "pixelwise"}
