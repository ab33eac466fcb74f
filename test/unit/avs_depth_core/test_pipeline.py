"""DepthPipeline (ROS-free live depth): scale recovery and hold policy with known fake networks, resolution and range
handling, device resolution, checkpoint lookup, and tiny real checkpoints end to end."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from avs_depth_core import pipeline as pipeline_module
from avs_depth_core.checkpoint import save_checkpoint
from avs_depth_core.device import resolve_device
from avs_depth_core.models.avsnet import AVSNet, AVSNetConfig
from avs_depth_core.models.monodepth2 import DepthNet, Monodepth2Config, echo_feature_settings, save_monodepth2
from avs_depth_core.pipeline import DepthPipeline, EchoInput, PipelineSettings, find_checkpoint
from avs_depth_core.scaling import ScalingConfig

SEC = 1_000_000_000


class FakeAVSNet:
    """AVS-Net's input handling (image_input/echo_input, the real ones) around a constant pseudo-metric output."""

    image_input = AVSNet.image_input
    echo_input = AVSNet.echo_input

    def __init__(self, depth: float = 4.0, use_echo: bool = True, max_depth: float = 10.0) -> None:
        self.cfg = AVSNetConfig(backbone="tiny", image_size=(32, 64), use_echo=use_echo, max_depth=max_depth)
        self.depth = depth
        self.calls: list[bool] = []

    def __call__(self, rgb: torch.Tensor, echo: torch.Tensor | None) -> dict[str, torch.Tensor]:
        assert rgb.shape[-2:] == (32, 64) and (echo is None or echo.shape == (1, 2, 32, 64))
        self.calls.append(echo is not None)
        return {"metric_depth": torch.full((rgb.shape[0], 1, 32, 64), self.depth)}


def relative_ramp(rgb: torch.Tensor) -> torch.Tensor:
    """Relative depth 1..3 across the image (median 2), at the model's resolution."""
    ramp = torch.linspace(1.0, 3.0, rgb.shape[-1]).expand(rgb.shape[0], 1, rgb.shape[-2], rgb.shape[-1])
    return ramp.contiguous()


def make_echo(cfg: AVSNetConfig, stamp_ns: int, rate: int | None = None) -> EchoInput:
    rng = np.random.default_rng(0)
    samples = rng.uniform(-0.3, 0.3, (2, cfg.echo_samples + 50)).astype(np.float32)
    return EchoInput(samples, rate or cfg.sample_rate, 20, stamp_ns)


def fake_pipeline(hold_s: float = 1.0, out_of_range: str = "clip", **kwargs) -> tuple[DepthPipeline, FakeAVSNet]:
    net = FakeAVSNet(**kwargs)
    scaling = ScalingConfig(min_depth=net.cfg.min_depth, max_depth=net.cfg.max_depth, fallback="nan", hold_s=hold_s,
                            min_pixels=10)
    return DepthPipeline(net, relative_ramp, scaling, "cpu", out_of_range=out_of_range), net


RGB = np.random.default_rng(1).integers(0, 255, (30, 50, 3), dtype=np.uint8)


def test_scale_from_echo_then_hold_then_nan():
    pipe, net = fake_pipeline(hold_s=1.0)
    t0 = 100 * SEC
    fresh = pipe(RGB, make_echo(net.cfg, t0 - SEC // 10), t0, want_pseudo=True, want_relative=True)
    # scale = median(Mp) / median(R) = 4 / 2 (AVS-Net eq. 3); metric = 2 * R, at the INPUT resolution
    assert fresh.scale.scale == pytest.approx(2.0, rel=1e-3) and not fresh.scale.held
    assert fresh.metric.shape == (30, 50) and fresh.metric.dtype == np.float32
    assert np.nanmedian(fresh.metric) == pytest.approx(4.0, rel=0.02)
    assert fresh.metric[:, 0].mean() < fresh.metric[:, -1].mean()  # the ramp survives the resize
    np.testing.assert_allclose(fresh.pseudo_metric, 4.0, rtol=1e-5)
    np.testing.assert_allclose(fresh.metric, 2.0 * fresh.relative, rtol=1e-5)
    assert fresh.echo_used and fresh.echo_age_s == pytest.approx(0.1) and net.calls == [True]

    held = pipe(RGB, None, t0 + SEC // 2)
    assert held.scale.held and held.scale.held_for == pytest.approx(0.5) and held.scale.scale == pytest.approx(2.0, 1e-3)
    assert not held.echo_used and math.isnan(held.echo_age_s) and net.calls == [True]  # AVS-Net needs the echo
    np.testing.assert_allclose(held.metric, fresh.metric)

    expired = pipe(RGB, None, t0 + 2 * SEC)
    assert not expired.scale.ok and "beyond hold_s" in expired.scale.fallback
    assert np.isnan(expired.metric).all()

    again = pipe(RGB, make_echo(net.cfg, t0 + 2 * SEC), t0 + 2 * SEC + 1)
    assert again.scale.ok and not again.scale.held


def test_no_echo_yet_gives_nan_depth_and_rgb_only_models_need_none():
    pipe, _ = fake_pipeline()
    first = pipe(RGB, None, 5 * SEC)
    assert np.isnan(first.metric).all() and "no fresh scale yet" in first.scale.fallback

    pipe, net = fake_pipeline(use_echo=False)
    result = pipe(RGB, make_echo(net.cfg, 5 * SEC), 5 * SEC)  # an echo is ignored by an Only-RGB model
    assert result.scale.ok and not result.echo_used and net.calls == [False]


def test_out_of_range_clip_or_nan():
    # Mp 8 over a ramp with median 2 -> scale 4 -> metric 4..12, above max_depth 10 on the right
    pipe, net = fake_pipeline(depth=8.0, max_depth=10.0)
    clipped = pipe(RGB, make_echo(net.cfg, SEC), SEC).metric
    assert np.isfinite(clipped).all() and clipped.max() == pytest.approx(10.0) and clipped.min() < 10.0
    pipe, net = fake_pipeline(depth=8.0, max_depth=10.0, out_of_range="nan")
    masked = pipe(RGB, make_echo(net.cfg, SEC), SEC).metric
    assert np.isnan(masked[:, -1]).all() and np.isfinite(masked[:, 0]).all()
    with pytest.raises(ValueError, match="out_of_range"):
        fake_pipeline(out_of_range="wrap")


def test_stamps_going_backwards_restart_tracking():
    warnings: list[str] = []
    pipe, net = fake_pipeline()
    pipe._warn = warnings.append
    pipe(RGB, make_echo(net.cfg, 10 * SEC), 10 * SEC)
    result = pipe(RGB, make_echo(net.cfg, 3 * SEC), 3 * SEC)  # a replayed bag
    assert result.scale.ok and warnings and "backwards" in warnings[0]


def test_check_echo_names_the_problem():
    pipe, net = fake_pipeline()
    cfg = net.cfg
    good = make_echo(cfg, 0)
    assert pipe.check_echo(good.samples, cfg.sample_rate, good.emission_offset) is None
    assert "16000 Hz, expected 44100 Hz" in pipe.check_echo(good.samples, 16000, 0)
    assert "3 channel(s)" in pipe.check_echo(np.zeros((3, 9000), np.float32) + 0.1, cfg.sample_rate, 0)
    assert "shorter than" in pipe.check_echo(good.samples[:, :1000], cfg.sample_rate, 0)
    assert "silent" in pipe.check_echo(np.zeros_like(good.samples), cfg.sample_rate, 0)
    with pytest.raises(ValueError, match=r"rgb: expected an \(H, W, 3\) uint8"):
        pipe(RGB.astype(np.float32), None, 0)


def test_resolve_device():
    warnings: list[str] = []
    assert resolve_device("auto", cuda_available=False) == torch.device("cpu")
    assert resolve_device("auto", cuda_available=True, device_count=1) == torch.device("cuda:0")
    assert resolve_device("CPU", cuda_available=True, device_count=1) == torch.device("cpu")
    assert resolve_device("cuda:1", cuda_available=True, device_count=2) == torch.device("cuda:1")
    assert resolve_device("cuda", cuda_available=False, warn=warnings.append) == torch.device("cpu")
    assert "CUDA is not available" in warnings[0] and "running on the CPU" in warnings[0]
    with pytest.raises(ValueError, match="only 1 CUDA device"):
        resolve_device("cuda:3", cuda_available=True, device_count=1)
    with pytest.raises(ValueError, match="expected auto, cpu, cuda or cuda:N"):
        resolve_device("tpu", cuda_available=False)


def test_half_on_cpu_warns_and_runs_float32():
    warnings: list[str] = []
    net = FakeAVSNet()
    pipe = DepthPipeline(net, relative_ramp, device="cpu", half=True, warn=warnings.append)
    assert not pipe.half and "half precision needs CUDA" in warnings[0]


def test_missing_checkpoints_are_clear(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="avsnet_checkpoint: checkpoint .*nowhere.safetensors not found"):
        find_checkpoint(tmp_path / "nowhere.safetensors", "avsnet", "avsnet_checkpoint")
    monkeypatch.setattr(pipeline_module, "bundled_checkpoint", lambda kind: None)
    with pytest.raises(FileNotFoundError, match="avsnet_checkpoint is empty and no bundled avsnet checkpoint"):
        DepthPipeline.from_settings(PipelineSettings(device="cpu"))
    with pytest.raises(ValueError, match="relative_model must be one of"):
        DepthPipeline.from_settings(PipelineSettings(str(tmp_path / "x"), relative_model="midas", device="cpu"))


def test_bundled_checkpoint_is_the_weights_not_the_training_state(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline_module, "resources", SimpleNamespace(files=lambda package: tmp_path / package))
    assert pipeline_module.bundled_checkpoint("avsnet") is None  # no checkpoints folder installed
    folder = tmp_path / "avs_depth_core" / "checkpoints" / "avsnet"
    folder.mkdir(parents=True)
    assert pipeline_module.bundled_checkpoint("avsnet") is None
    save_checkpoint(folder / "default", {"w": torch.zeros(2)}, {}, "avsnet", extra={"step": torch.tensor(3)})
    (folder / ".default.safetensors.123-abcd.tmp").write_bytes(b"")  # a save in progress
    assert sorted(p.name for p in folder.iterdir())[1] == "default.extra.safetensors"  # sorts before the weights
    assert pipeline_module.bundled_checkpoint("avsnet") == folder / "default.safetensors"
    assert find_checkpoint("", "avsnet", "avsnet_checkpoint") == folder / "default.safetensors"


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    small = dict(backbone="tiny", image_size=(64, 128), n_bins=16, bin_embedding_dim=32)
    AVSNet(AVSNetConfig(**small)).save(folder / "avsnet")
    AVSNet(AVSNetConfig(**small, use_echo=False)).save(folder / "avsnet_rgb")
    return folder / "avsnet.safetensors", folder / "avsnet_rgb.safetensors"


def test_tiny_checkpoints_end_to_end(tiny_checkpoints):
    avsnet, rgb_only = tiny_checkpoints
    params = {"avsnet_checkpoint": str(avsnet), "relative_model": "avsnet_rgb", "relative_checkpoint": str(rgb_only),
              "device": "cpu", "max_scale_hold_s": 0.5, "diagnostics_period_s": 1.0}  # a node parameter is not a setting
    pipe = DepthPipeline.from_settings(PipelineSettings.from_params(params))
    assert pipe.device == torch.device("cpu") and pipe.cfg.image_size == (64, 128)
    assert pipe.warmup(1) > 0 and pipe.tracker.counts == {"fresh": 0, "held": 0, "none": 0}
    rgb = np.random.default_rng(2).integers(0, 255, (72, 96, 3), dtype=np.uint8)
    result = pipe(rgb, make_echo(pipe.cfg, SEC), SEC, want_relative=True)
    assert result.metric.shape == (72, 96) and result.relative.shape == (72, 96)
    assert np.isfinite(result.metric).all() and result.scale.ok and result.echo_used
    assert (result.metric >= pipe.cfg.min_depth).all() and (result.metric <= pipe.cfg.max_depth).all()
    ratio = result.metric / result.relative
    assert np.allclose(ratio[(result.metric > pipe.cfg.min_depth) & (result.metric < pipe.cfg.max_depth)],
                       result.scale.scale, rtol=1e-4)
    assert pipe.tracker.counts["fresh"] == 1


def test_scale_method_none_uses_the_relative_depth_as_metres_without_an_echo():
    net = FakeAVSNet()
    scaling = ScalingConfig(method="none", min_depth=net.cfg.min_depth, max_depth=net.cfg.max_depth, fallback="nan")
    pipe = DepthPipeline(net, relative_ramp, scaling, "cpu")
    for stamp in (SEC, 5 * SEC):  # no echo ever: no hold, no NaN
        result = pipe(RGB, None, stamp, want_relative=True)
        assert result.scale.ok and result.scale.scale == 1.0 and not result.echo_used
        np.testing.assert_allclose(result.metric, result.relative, rtol=1e-6)
        assert np.nanmedian(result.metric) == pytest.approx(2.0, rel=0.05)


def test_a_metric_monodepth2_needs_no_scale_and_a_relative_one_warns(tiny_checkpoints, tmp_path):
    avsnet, _ = tiny_checkpoints
    for units in ("relative", "metres"):
        config = Monodepth2Config.tiny(depth_units=units)
        save_monodepth2(tmp_path / units, DepthNet.from_config(config), config)
        params = {"avsnet_checkpoint": str(avsnet), "relative_model": "monodepth2", "device": "cpu",
                  "relative_checkpoint": str(tmp_path / f"{units}.safetensors"), "scale_method": "none"}
        warnings: list[str] = []
        pipe = DepthPipeline.from_settings(PipelineSettings.from_params(params), warn=warnings.append)
        assert pipe.relative.is_metric == (units == "metres")
        assert any("is a relative model" in w for w in warnings) == (units == "relative"), warnings
        result = pipe(np.full((64, 128, 3), 90, np.uint8), None, SEC, want_relative=True)
        assert result.scale.ok and np.isfinite(result.metric).all()


def test_an_echo_input_monodepth2_is_fed_the_avsnets_echo_features(tiny_checkpoints, tmp_path):
    avsnet, rgb_only = tiny_checkpoints
    features = echo_feature_settings(AVSNet.from_checkpoint(avsnet).cfg)
    config = Monodepth2Config.tiny(depth_units="metres", echo_input="stft", echo_size=features["size"],
                                   echo_features=features)
    torch.manual_seed(0)
    net = DepthNet.from_config(config)
    torch.nn.init.normal_(net.echo_encoder.head[-1].weight, std=0.5)
    save_monodepth2(tmp_path / "echo_in", net, config)
    params = {"avsnet_checkpoint": str(avsnet), "relative_model": "monodepth2", "device": "cpu",
              "relative_checkpoint": str(tmp_path / "echo_in.safetensors"), "scale_method": "none"}
    pipe = DepthPipeline.from_settings(PipelineSettings.from_params(params))
    assert pipe.relative.needs_echo and pipe.warmup(1) > 0
    rgb = np.full((64, 128, 3), 90, np.uint8)
    result = pipe(rgb, make_echo(pipe.cfg, SEC), SEC, want_relative=True)
    assert result.scale.ok and result.echo_used and np.isfinite(result.metric).all()
    quiet = EchoInput(np.zeros((2, pipe.cfg.echo_samples + 50), np.float32), pipe.cfg.sample_rate, 20, 2 * SEC)
    other = pipe(rgb, quiet, 2 * SEC, want_relative=True)
    assert not np.allclose(other.relative, result.relative)  # the same image at another echo: another scale
    with pytest.raises(ValueError, match="has no echo paired with it"):
        pipe(rgb, None, 3 * SEC)
    with pytest.raises(ValueError, match="Only-RGB"):
        DepthPipeline.from_settings(PipelineSettings.from_params({**params, "avsnet_checkpoint": str(rgb_only)}))


class HandedAVSNet(FakeAVSNet):
    """Pseudo-metric depth 1 + the left ear's mean level (the right ear is louder): tells the ears apart."""

    def __call__(self, rgb: torch.Tensor, echo: torch.Tensor | None) -> dict[str, torch.Tensor]:
        self.calls.append(echo is not None)
        level = 1.0 + echo[:, 0].mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return {"metric_depth": level.expand(rgb.shape[0], 1, 32, 64).clone()}


def test_flip_tta_averages_the_scene_and_its_mirror_with_the_ears_swapped():
    net = HandedAVSNet()
    echo = make_echo(net.cfg, 0)
    echo.samples[1] *= 3.0  # the right ear is louder
    features = net.echo_input(echo.samples, echo.sample_rate, echo.emission_offset)[0]
    left, right = 1.0 + float(features[0].mean()), 1.0 + float(features[1].mean())
    assert right > left
    single = DepthPipeline(net, relative_ramp, device="cpu")(RGB, echo, SEC, want_pseudo=True)
    np.testing.assert_allclose(single.pseudo_metric, left, rtol=1e-4)
    averaged = DepthPipeline(net, relative_ramp, device="cpu", flip_tta=True)(RGB, echo, SEC, want_pseudo=True)
    np.testing.assert_allclose(averaged.pseudo_metric, math.sqrt(left * right), rtol=1e-4)
    assert net.calls == [True, True, True]
