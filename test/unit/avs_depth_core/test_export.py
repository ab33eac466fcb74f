"""ONNX export: metadata, dynamic batch, ONNX Runtime against torch on the BatVision sample and simulated frames,
Monodepth2 as the same relative model, the command and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from avs_depth_core.backends import OnnxAVSNet, onnx_relative
from avs_depth_core.cli import main
from avs_depth_core.export import read_metadata
from avs_depth_core.inference import load_echo, load_rgb
from avs_depth_core.models.avsnet import AVSNet
from avs_depth_core.ort_session import onnx_session
from avs_depth_core.relative import RelativeDepthModel
from avs_depth_core.sim.world import SimWorld


def real_inputs(model: AVSNet, bv2_sample: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of 3: the BatVision sample (read in place) and two simulated BV2 frames, through the shared input path."""
    images, echoes = [load_rgb(bv2_sample / "camera_47.jpeg")], [load_echo(bv2_sample / "audio_47.wav", 44100)]
    offsets = [0]
    sequence = SimWorld("bv2", 3, 96, 160).sequence(0)
    for i in (0, 7):
        frame = sequence.frame(i)
        images.append(frame.rgb)
        echoes.append(frame.echo)
        offsets.append(frame.emission_offset)
    rgb = torch.cat([model.image_input(image)[0] for image in images])
    echo = model.echo_input(echoes, 44100, offsets) if model.cfg.use_echo else None
    return rgb, echo


def test_export_carries_the_metadata_and_a_dynamic_batch(exported_models, exportable_checkpoints):
    meta = read_metadata(exported_models["avsnet"])
    cfg = AVSNet.from_checkpoint(exportable_checkpoints["avsnet"]).cfg
    assert meta["kind"] == "avsnet" and meta["config"] == cfg.to_dict()
    assert [i["name"] for i in meta["inputs"]] == ["rgb", "echo"] and meta["inputs"][1]["shape"] == ["batch", 2, 64, 64]
    assert [o["name"] for o in meta["outputs"]] == ["metric_depth", "rel_depth"]
    assert meta["normalisation"]["mean"] == list(cfg.norm_mean) and meta["normalisation"]["applied"] == "inside the graph"
    echo = meta["echo_features"]
    assert (echo["n_fft"], echo["win_length"], echo["hop_length"], echo["echo_samples"]) == (512, 64, 16, cfg.echo_samples)
    assert meta["source"]["weights_sha256"] and meta["exporter"]["opset"] == 18
    rgb_meta = read_metadata(exported_models["avsnet_rgb"])
    assert rgb_meta["kind"] == "avsnet_rgb" and "echo_features" not in rgb_meta
    assert read_metadata(exported_models["monodepth2"])["depth_conversion"]["disparity_kind"] == "monodepth2"
    session = onnx_session(exported_models["avsnet"])
    assert [i.shape[0] for i in session.get_inputs()] == ["batch", "batch"]


@pytest.mark.parametrize("kind", ["avsnet", "avsnet_rgb"])
def test_onnxruntime_matches_torch_on_real_inputs(kind, exported_models, exportable_checkpoints, bv2_sample):
    model = AVSNet.from_checkpoint(exportable_checkpoints[kind])
    rgb, echo = real_inputs(model, bv2_sample)
    with torch.inference_mode():
        expected = model(rgb, echo)
    session = onnx_session(exported_models[kind])  # dynamic batch: the three frames at once, then one
    feeds = {"rgb": rgb.numpy(), **({"echo": echo.numpy()} if echo is not None else {})}
    metric, rel = session.run(["metric_depth", "rel_depth"], feeds)
    assert metric.shape == (3, 1, 64, 128)
    assert np.abs(metric - expected["metric_depth"].numpy()).max() < 1e-3
    assert np.abs(rel - expected["rel_depth"].numpy()).max() < 1e-4
    single = OnnxAVSNet(exported_models[kind], batch=1)(rgb[:1], None if echo is None else echo[:1])
    assert np.abs(single["metric_depth"].numpy() - expected["metric_depth"][:1].numpy()).max() < 1e-3


def test_exported_monodepth2_is_the_same_relative_model(exported_models, exportable_checkpoints):
    frame = SimWorld("bv1", 2, 96, 160).sequence(0).frame(3)
    rgb = torch.from_numpy(frame.rgb).permute(2, 0, 1)[None].float() / 255
    expected = RelativeDepthModel.monodepth2(exportable_checkpoints["monodepth2"])(rgb)
    got = onnx_relative(exported_models["monodepth2"])(rgb)
    assert got.shape == expected.shape == (1, 1, 96, 160)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_exported_metric_monodepth2_stays_metric(tmp_path):
    """An echo-supervised DepthNet (depth_units metres) exported to ONNX is still a metric model with the same depth."""
    from avs_depth_core.backends import onnx_model_for
    from avs_depth_core.models.monodepth2 import DepthNet, Monodepth2Config, save_monodepth2

    config = Monodepth2Config.tiny(depth_units="metres")
    torch.manual_seed(0)
    path = save_monodepth2(tmp_path / "md2_metres", DepthNet.from_config(config, load_pretrained=False), config)
    rgb = torch.rand(1, 3, 64, 64)
    expected = RelativeDepthModel.monodepth2(path)
    got = onnx_relative(onnx_model_for(path))
    assert expected.is_metric and got.is_metric
    torch.testing.assert_close(got(rgb), expected(rgb), atol=1e-4, rtol=1e-4)


def test_export_command_and_its_errors(exportable_checkpoints, tmp_path, capsys):
    out = tmp_path / "m" / "avsnet_rgb.onnx"
    assert main(["export", "--checkpoint", str(exportable_checkpoints["avsnet_rgb"]), "--format", "onnx", "--out", str(out)]) == 0
    assert out.is_file() and "avsnet_rgb" in capsys.readouterr().out
    assert main(["export", "--checkpoint", str(exportable_checkpoints["avsnet"]), "--out", str(tmp_path / "m.onx")]) == 2
    assert "expected a file name ending in .onnx" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "n.onnx")]) == 2
    foreign = tmp_path / "foreign.onnx"
    model = onnx.load(str(out))
    del model.metadata_props[:]
    onnx.save(model, str(foreign))
    with pytest.raises(ValueError, match="no avs_depth metadata"):
        read_metadata(foreign)
