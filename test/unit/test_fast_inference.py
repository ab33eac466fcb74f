"""Fast inference (issue 14): the metric-bins head's fast final stage against ZoeDepth's literal one, the ONNX export
(metadata, dynamic batch, ONNX Runtime against torch on the BatVision sample and simulated frames), the onnxruntime
backend of the live pipeline and its execution providers."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from avs_depth_core import cli
from avs_depth_core.backends import OnnxAVSNet, onnx_model_for, onnx_relative, onnx_session, resolve_providers
from avs_depth_core.export import read_metadata
from avs_depth_core.inference import load_echo, load_rgb
from avs_depth_core.models.avsnet import AVSNet, AVSNetConfig
from avs_depth_core.models.metric_bins import MetricBinsHead
from avs_depth_core.models.monodepth2 import DepthNet, Monodepth2Config, save_monodepth2
from avs_depth_core.pipeline import DepthPipeline, EchoInput, bundled_checkpoint
from avs_depth_core.relative import RelativeDepthModel
from avs_depth_core.sim.world import SimWorld

TINY = dict(backbone="tiny", image_size=(64, 128), echo_size=(64, 64), n_bins=16, bin_embedding_dim=32,
            n_attractors=[4, 2, 2, 1], fusion_heads=4, audio_width=16, max_depth=12.0)


@pytest.fixture(scope="module", autouse=True)
def onnx_cache(tmp_path_factory) -> Iterator[Path]:
    """backend onnxruntime exports checkpoints into AVS_DEPTH_CACHE: a fresh one for this module."""
    folder = tmp_path_factory.mktemp("avs_depth_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AVS_DEPTH_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fast_checkpoints")
    torch.manual_seed(0)
    paths = {"avsnet": AVSNet(AVSNetConfig(**TINY)).save(folder / "avsnet"),
             "avsnet_rgb": AVSNet(AVSNetConfig(**TINY, use_echo=False)).save(folder / "avsnet_rgb")}
    config = Monodepth2Config.tiny()
    paths["monodepth2"] = save_monodepth2(folder / "md2", DepthNet.from_config(config, load_pretrained=False), config)
    return paths


@pytest.fixture(scope="module")
def exported(checkpoints) -> dict[str, Path]:
    """The checkpoints exported where backend onnxruntime finds them (export_onnx, checked against torch on the way)."""
    return {kind: onnx_model_for(path) for kind, path in checkpoints.items()}


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


# ----------------------------------------------------------------------------------------------- fast final stage
def stressed_head(bin_centers_type: str) -> MetricBinsHead:
    """A head whose log-binomial sees temperatures down to min_temp and p from ~0 to ~1 (trained heads get there)."""
    torch.manual_seed(0)
    head = MetricBinsHead(64, [32, 16, 8, 8], n_bins=16, bin_centers_type=bin_centers_type, bin_embedding_dim=16,
                          max_depth=12.0, n_attractors=[4, 2, 2, 1])
    with torch.no_grad():
        final = head.conditional_log_binomial.mlp[2]
        final.weight.mul_(40.0)
        final.bias.copy_(torch.tensor([0.0, 0.0, -6.0, 6.0]))
    return head


def head_inputs(batch: int = 2) -> tuple:
    torch.manual_seed(1)
    return (torch.rand(batch, 32, 32, 64), torch.randn(batch, 64, 1, 2),
            [torch.randn(batch, 32, 2, 4), torch.randn(batch, 16, 4, 8), torch.randn(batch, 8, 8, 16),
             torch.randn(batch, 8, 16, 32)], torch.rand(batch, 1, 32, 64))


@pytest.mark.parametrize("bin_centers_type", ["normed", "softplus", "hybrid1", "hybrid2"])
def test_fast_final_stage_gives_the_reference_depth_and_gradients(bin_centers_type):
    head = stressed_head(bin_centers_type)
    reference = copy.deepcopy(head)
    reference.reference_final_stage = True
    inputs = head_inputs()
    clb = head.conditional_log_binomial
    last = torch.cat([inputs[0], inputs[3]], 1)
    p, t = clb.probability_and_temperature(clb.mlp(torch.cat([last, torch.randn(2, 16, 32, 64)], 1)))
    assert t.min() < 0.03 and p.min() < 1e-3 and p.max() > 1 - 1e-3  # the stress is real

    fast, ref = head(*inputs), reference(*inputs)
    assert (fast["metric_depth"] - ref["metric_depth"]).abs().max() < 1e-4  # metres
    torch.testing.assert_close(fast["probs"], ref["probs"], atol=1e-4, rtol=0)  # both ~2e-5 from a float64 reference
    torch.testing.assert_close(fast["bin_centers"], ref["bin_centers"])
    assert "probs" not in head(*inputs, return_probs=False)

    fast["metric_depth"].square().mean().backward()
    ref["metric_depth"].square().mean().backward()
    for (name, a), b in zip(head.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=2e-3, msg=f"gradient of {name}")


def test_bundled_checkpoint_loads_unchanged_and_gives_the_same_depth_on_the_batvision_sample(bv2_sample):
    path = bundled_checkpoint("avsnet")
    model = AVSNet.from_checkpoint(path)  # strict: the fast stage adds no stored tensors
    from safetensors.torch import load_file

    assert set(model.state_dict()) == set(load_file(str(path)))
    reference = copy.deepcopy(model)
    reference.head.reference_final_stage = True
    rgb, echo = real_inputs(model, bv2_sample)
    with torch.inference_mode():
        fast, ref = model(rgb, echo)["metric_depth"], reference(rgb, echo)["metric_depth"]
    assert (fast - ref).abs().max() < 1e-4


# ------------------------------------------------------------------------------------------------------- export
def test_export_carries_the_metadata_and_a_dynamic_batch(exported, checkpoints):
    meta = read_metadata(exported["avsnet"])
    cfg = AVSNet.from_checkpoint(checkpoints["avsnet"]).cfg
    assert meta["kind"] == "avsnet" and meta["config"] == cfg.to_dict()
    assert [i["name"] for i in meta["inputs"]] == ["rgb", "echo"] and meta["inputs"][1]["shape"] == ["batch", 2, 64, 64]
    assert [o["name"] for o in meta["outputs"]] == ["metric_depth", "rel_depth"]
    assert meta["normalisation"]["mean"] == list(cfg.norm_mean) and meta["normalisation"]["applied"] == "inside the graph"
    echo = meta["echo_features"]
    assert (echo["n_fft"], echo["win_length"], echo["hop_length"], echo["echo_samples"]) == (512, 64, 16, cfg.echo_samples)
    assert meta["source"]["weights_sha256"] and meta["exporter"]["opset"] == 18
    rgb_meta = read_metadata(exported["avsnet_rgb"])
    assert rgb_meta["kind"] == "avsnet_rgb" and "echo_features" not in rgb_meta
    assert read_metadata(exported["monodepth2"])["depth_conversion"]["disparity_kind"] == "monodepth2"
    session = onnx_session(exported["avsnet"])
    assert [i.shape[0] for i in session.get_inputs()] == ["batch", "batch"]


@pytest.mark.parametrize("kind", ["avsnet", "avsnet_rgb"])
def test_onnxruntime_matches_torch_on_real_inputs(kind, exported, checkpoints, bv2_sample):
    model = AVSNet.from_checkpoint(checkpoints[kind])
    rgb, echo = real_inputs(model, bv2_sample)
    with torch.inference_mode():
        expected = model(rgb, echo)
    session = onnx_session(exported[kind])  # dynamic batch: the three frames at once, then one
    feeds = {"rgb": rgb.numpy(), **({"echo": echo.numpy()} if echo is not None else {})}
    metric, rel = session.run(["metric_depth", "rel_depth"], feeds)
    assert metric.shape == (3, 1, 64, 128)
    assert np.abs(metric - expected["metric_depth"].numpy()).max() < 1e-3
    assert np.abs(rel - expected["rel_depth"].numpy()).max() < 1e-4
    single = OnnxAVSNet(exported[kind], batch=1)(rgb[:1], None if echo is None else echo[:1])
    assert np.abs(single["metric_depth"].numpy() - expected["metric_depth"][:1].numpy()).max() < 1e-3


def test_exported_monodepth2_is_the_same_relative_model(exported, checkpoints):
    frame = SimWorld("bv1", 2, 96, 160).sequence(0).frame(3)
    rgb = torch.from_numpy(frame.rgb).permute(2, 0, 1)[None].float() / 255
    expected = RelativeDepthModel.monodepth2(checkpoints["monodepth2"])(rgb)
    got = onnx_relative(exported["monodepth2"])(rgb)
    assert got.shape == expected.shape == (1, 1, 96, 160)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_export_command_and_its_errors(checkpoints, tmp_path, capsys):
    out = tmp_path / "m" / "avsnet_rgb.onnx"
    assert cli.main(["export", "--checkpoint", str(checkpoints["avsnet_rgb"]), "--format", "onnx", "--out", str(out)]) == 0
    assert out.is_file() and "avsnet_rgb" in capsys.readouterr().out
    assert cli.main(["export", "--checkpoint", str(checkpoints["avsnet"]), "--out", str(tmp_path / "m.onx")]) == 2
    assert "expected a file name ending in .onnx" in capsys.readouterr().err
    assert cli.main(["export", "--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "n.onnx")]) == 2
    foreign = tmp_path / "foreign.onnx"
    import onnx

    model = onnx.load(str(out))
    del model.metadata_props[:]
    onnx.save(model, str(foreign))
    with pytest.raises(ValueError, match="no avs_depth metadata"):
        read_metadata(foreign)


# ------------------------------------------------------------------------------------------------------ backend
def test_onnxruntime_backend_gives_the_torch_pipelines_depth(checkpoints, exported):
    kwargs = dict(avsnet_checkpoint=checkpoints["avsnet"], relative_model="avsnet_rgb",
                  relative_checkpoint=checkpoints["avsnet_rgb"], device="cpu")
    torch_pipeline = DepthPipeline.from_checkpoints(**kwargs)
    onnx_pipeline = DepthPipeline.from_checkpoints(**kwargs, backend="onnxruntime")  # the cached exports
    assert isinstance(onnx_pipeline.avsnet, OnnxAVSNet) and onnx_pipeline.avsnet.path == exported["avsnet"]
    sequence = SimWorld("bv2", 5, 96, 160).sequence(0)
    for i in range(3):
        frame = sequence.frame(2 * i)
        echo = EchoInput(frame.echo, frame.sample_rate, frame.emission_offset, i * 100_000_000)
        a = torch_pipeline(frame.rgb, echo, i * 100_000_000 + 1, want_pseudo=True)
        b = onnx_pipeline(frame.rgb, echo, i * 100_000_000 + 1, want_pseudo=True)
        assert b.metric.shape == (96, 160) and b.echo_used
        assert np.abs(a.pseudo_metric - b.pseudo_metric).max() < 1e-3
        assert np.abs(a.metric - b.metric).max() < 1e-3 and a.scale.scale == pytest.approx(b.scale.scale, rel=1e-4)
    with pytest.raises(ValueError, match="rgb: expected"):
        onnx_pipeline.avsnet(torch.rand(1, 3, 32, 32), None)  # the same input checks as AVSNet
    with pytest.raises(ValueError, match="backend"):
        DepthPipeline.from_checkpoints(**kwargs, backend="tensorflow")
    with pytest.raises(ValueError, match="torch only"):
        DepthPipeline.from_checkpoints(checkpoints["avsnet"], "torchscript", checkpoints["avsnet_rgb"], "cpu",
                                       backend="onnxruntime")
    with pytest.raises(ValueError, match="relative_model is 'monodepth2'"):
        DepthPipeline.from_checkpoints(checkpoints["avsnet"], "monodepth2", checkpoints["avsnet_rgb"], "cpu",
                                       backend="onnxruntime")


def test_execution_providers_by_device_and_request():
    warnings: list[str] = []
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers("cpu", available=gpu) == ["CPUExecutionProvider"]
    providers = resolve_providers("cuda:1", available=gpu, half=True)
    assert [p[0] if isinstance(p, tuple) else p for p in providers] == gpu
    assert providers[0][1]["device_id"] == 1 and providers[0][1]["trt_fp16_enable"] and providers[1][1] == {"device_id": 1}
    assert resolve_providers("cuda", available=["CPUExecutionProvider"], warn=warnings.append) == ["CPUExecutionProvider"]
    assert "onnxruntime-gpu" in warnings[-1]
    assert resolve_providers("cuda", "cuda,cpu", available=gpu) == [("CUDAExecutionProvider", {"device_id": 0}),
                                                                    "CPUExecutionProvider"]
    assert resolve_providers("cpu", "tensorrt", available=["CPUExecutionProvider"], warn=warnings.append) == \
        ["CPUExecutionProvider"] and "TensorrtExecutionProvider is not in this onnxruntime build" in warnings[-1]
    with pytest.raises(ValueError, match="unknown"):
        resolve_providers("cpu", "openvino", available=gpu)
