"""The onnxruntime backend of the live pipeline against the torch one, and the choice of execution providers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avs_depth_core.backends import OnnxAVSNet, resolve_providers
from avs_depth_core.pipeline import DepthPipeline, EchoInput, PipelineSettings
from avs_depth_core.sim.world import SimWorld


def test_onnxruntime_backend_gives_the_torch_pipelines_depth(exportable_checkpoints, exported_models):
    settings = PipelineSettings(avsnet_checkpoint=str(exportable_checkpoints["avsnet"]), relative_model="avsnet_rgb",
                                relative_checkpoint=str(exportable_checkpoints["avsnet_rgb"]), device="cpu")
    torch_pipeline = DepthPipeline.from_settings(settings)
    onnx_pipeline = DepthPipeline.from_settings(PipelineSettings(**{**vars(settings), "backend": "onnxruntime"}))
    assert isinstance(onnx_pipeline.avsnet, OnnxAVSNet) and onnx_pipeline.avsnet.path == exported_models["avsnet"]
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


def test_backend_errors_name_the_setting(exportable_checkpoints, exported_models):
    base = dict(avsnet_checkpoint=str(exportable_checkpoints["avsnet"]), device="cpu")
    with pytest.raises(ValueError, match="backend"):
        DepthPipeline.from_settings(PipelineSettings(**base, backend="tensorflow"))
    with pytest.raises(ValueError, match="torch only"):
        DepthPipeline.from_settings(PipelineSettings(**base, relative_model="torchscript", backend="onnxruntime",
                                                     relative_checkpoint=str(exportable_checkpoints["avsnet_rgb"])))
    with pytest.raises(ValueError, match="relative_model is 'monodepth2'"):
        DepthPipeline.from_settings(PipelineSettings(**base, relative_model="monodepth2", backend="onnxruntime",
                                                     relative_checkpoint=str(exportable_checkpoints["avsnet_rgb"])))


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
