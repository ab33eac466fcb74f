import warnings

import pytest
import torch
from torch import nn

from avs_depth_core.models.monodepth2 import DepthNet, Monodepth2Config, disp_to_depth, save_monodepth2
from avs_depth_core.relative import RelativeDepthModel
from avs_depth_core.scaling import recover_scale


class TinyDepth(nn.Module):
    """A positive map from an image: softplus of a 3x3 convolution."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(self.conv(x)) + 0.1


def test_module_adapter_returns_depth_or_converted_disparity():
    module = TinyDepth()
    rgb = torch.rand(2, 3, 24, 40)
    depth_model = RelativeDepthModel.from_module(module, "depth")
    assert depth_model.name == "TinyDepth" and not depth_model.is_metric and depth_model.module is module
    torch.testing.assert_close(depth_model(rgb), module(rgb))
    disparity_model = RelativeDepthModel.from_module(module, "disparity")
    torch.testing.assert_close(disparity_model(rgb), 1 / module(rgb))
    assert RelativeDepthModel.from_module(module, "metric_depth").is_metric


def test_callable_adapter_resizes_normalises_and_accepts_dicts():
    seen = {}

    def zoe_like(x: torch.Tensor) -> dict[str, torch.Tensor]:
        seen["shape"], seen["mean"] = tuple(x.shape), x.mean().item()
        return {"metric_depth": torch.full((x.shape[0], 1, *x.shape[-2:]), 2.0)}

    model = RelativeDepthModel.from_callable(zoe_like, "metric_depth", input_size=(32, 64), mean=[0.5] * 3, std=[0.5] * 3,
                                             output_key="metric_depth")
    out = model(torch.full((1, 3, 48, 80), 0.5))
    assert seen["shape"] == (1, 3, 32, 64) and abs(seen["mean"]) < 1e-6  # (0.5 - 0.5) / 0.5
    assert out.shape == (1, 1, 48, 80)
    torch.testing.assert_close(out, torch.full_like(out, 2.0))
    no_key = RelativeDepthModel.from_callable(zoe_like, "depth")
    with pytest.raises(ValueError, match=r"zoe_like: returned a dict with keys \['metric_depth'\]"):
        no_key(torch.rand(1, 3, 8, 8))


def test_torchscript_files_with_both_output_kinds(tmp_path):
    module = TinyDepth().eval()
    path = tmp_path / "tiny.pt"
    scripted = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in torch 2.x but still works
        torch.jit.trace(module, torch.rand(1, 3, 16, 16)).save(str(path))
        torch.jit.script(module).save(str(scripted))
    depth_model = RelativeDepthModel.from_torchscript(path, "depth")
    disparity_model = RelativeDepthModel.from_torchscript(path, "disparity")
    scripted_model = RelativeDepthModel.from_torchscript(scripted, "depth")
    rgb = torch.rand(2, 3, 16, 24)
    assert depth_model.name == "tiny.pt"
    torch.testing.assert_close(depth_model(rgb), module(rgb))
    torch.testing.assert_close(disparity_model(rgb), 1 / module(rgb))
    torch.testing.assert_close(scripted_model(rgb), module(rgb))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        RelativeDepthModel.from_torchscript(tmp_path / "missing.pt", "depth")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.pt: not a TorchScript file"):
        RelativeDepthModel.from_torchscript(junk, "depth")


def test_bad_outputs_and_inputs_are_rejected_with_the_model_name():
    rgb = torch.rand(2, 3, 16, 16)
    cases = {
        "wrong_shape": (lambda x: torch.ones(x.shape[0], 2, 16, 16), r"expected a depth map of shape \(2, 1, 16, 16\)"),
        "wrong_batch": (lambda x: torch.ones(1, 1, 16, 16), r"got \(1, 1, 16, 16\)"),
        "nan_depth": (lambda x: torch.full((2, 1, 16, 16), float("nan")), "512 NaN"),
        "negative_depth": (lambda x: -torch.ones(2, 1, 16, 16), "512 negative"),
        "not_a_tensor": (lambda x: [1.0], "must return a tensor"),
    }
    for name, (fn, message) in cases.items():
        with pytest.raises(ValueError, match=f"{name}: .*{message}"):
            RelativeDepthModel.from_callable(fn, "depth", name=name)(rgb)
    model = RelativeDepthModel.from_callable(lambda x: torch.ones(x.shape[0], 1, *x.shape[-2:]), "depth", name="ok")
    assert model(rgb[:, :, :, :8]).shape == (2, 1, 16, 8)  # (B, H, W) outputs are accepted too
    with pytest.raises(ValueError, match=r"ok: expects rgb in \[0, 1\].*255"):
        model(rgb * 255)
    with pytest.raises(ValueError, match=r"ok: expects rgb as a float tensor \(B, 3, H, W\)"):
        model(rgb[:, :1])
    with pytest.raises(ValueError, match="output_kind must be one of"):
        RelativeDepthModel.from_callable(lambda x: x, "inverse_depth")


def test_monodepth2_checkpoint_as_a_relative_model(tmp_path):
    config = Monodepth2Config.tiny()
    depth_net = DepthNet.from_config(config).eval()
    save_monodepth2(tmp_path / "md2", depth_net, config)
    model = RelativeDepthModel.monodepth2(tmp_path / "md2.safetensors")
    assert model.input_size == (64, 64) and model.output_kind == "disparity"
    rgb = torch.rand(1, 3, 64, 64)
    expected = disp_to_depth(depth_net(rgb)[("disp", 0)], config.min_depth, config.max_depth)[1]
    torch.testing.assert_close(model(rgb), expected)
    out = model(torch.rand(1, 3, 48, 80))  # any size in, resized to 64x64 and back
    assert out.shape == (1, 1, 48, 80) and (out >= config.min_depth).all() and (out <= config.max_depth).all()
    # Relative -> metric with a known factor through scaling.
    result = recover_scale(out, 4.0 * out, min_pixels=10)
    assert result.scale == pytest.approx(4.0, rel=1e-5)


def test_avsnet_only_rgb_as_a_zero_shot_metric_model(tmp_path):
    from avs_depth_core.models.avsnet import AVSNet, AVSNetConfig

    small = {"backbone": "tiny", "image_size": (64, 64), "n_bins": 8, "bin_embedding_dim": 16, "max_depth": 30.0}
    AVSNet(AVSNetConfig(use_echo=False, **small)).save(tmp_path / "rgb_only")
    model = RelativeDepthModel.avsnet_rgb(tmp_path / "rgb_only.safetensors")
    assert model.is_metric and model.input_size == (64, 64)
    out = model(torch.rand(2, 3, 48, 80))
    assert out.shape == (2, 1, 48, 80) and (out > 0).all() and (out <= 30.0 + 1e-4).all()
    AVSNet(AVSNetConfig(use_echo=True, audio_width=8, **small)).save(tmp_path / "with_echo")
    with pytest.raises(ValueError, match="RGB-Echoes AVS-Net"):
        RelativeDepthModel.avsnet_rgb(tmp_path / "with_echo.safetensors")
