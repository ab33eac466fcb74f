"""avs-depth gradcam: Grad-CAM maps over the echo spectrogram and the image, and the figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from avs_depth_core.cli import main
from avs_depth_core.gradcam import gradcam, region_mask
from avs_depth_core.models.avsnet import AVSNet


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_checkpoint, tiny_bag):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", image_size=[32, 64], echo_size=[64, 64],
                           max_depth=tiny_bag.MAX_DEPTH)


def test_maps_have_input_shapes_and_range(checkpoint):
    model = AVSNet.from_checkpoint(checkpoint, "cpu")
    torch.manual_seed(1)
    result = gradcam(model, torch.rand(1, 3, 32, 64), torch.rand(1, 2, 64, 64))
    assert result["depth"].shape == (32, 64) and result["visual_cam"].shape == (32, 64)
    assert result["audio_cam"].shape == (64, 64)
    for key in ("visual_cam", "audio_cam"):
        cam = result[key]
        assert np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1 + 1e-6
    assert result["target"] == pytest.approx(float(result["depth"].mean()), rel=1e-4)
    assert all(p.grad is None for p in model.parameters())  # gradients are not left behind


def test_region_mask():
    m = region_mask((4, 8), (0.5, 0.0, 1.0, 0.5))
    assert m.sum() == 8 and m[0, 0, :2, 4:].all()
    with pytest.raises(ValueError, match="fractions"):
        region_mask((4, 8), (0.5, 0.0, 0.4, 0.5))


def test_cli_bag_sample_and_files(checkpoint, tmp_path, bv2_sample, capsys, tiny_bag):
    bag = tiny_bag.write(tmp_path / "bag", {"test": 2})
    out = tmp_path / "cam.png"
    assert main(["gradcam", "--checkpoint", str(checkpoint), "--bag", str(bag), "--index", "1", "--out", str(out),
                 "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--region", "0.25", "0.25", "0.75", "0.75"]) == 0
    assert Image.open(out).size[0] > 800
    out2 = tmp_path / "cam_bv2.png"
    assert main(["gradcam", "--checkpoint", str(checkpoint), "--image", str(bv2_sample / "camera_47.jpeg"),
                 "--echo", str(bv2_sample / "audio_47.wav"), "--out", str(out2), "--device", "cpu"]) == 0
    assert out2.is_file()
    assert main(["gradcam", "--checkpoint", str(checkpoint), "--bag", str(bag), "--index", "5", "--out", str(out),
                 "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]) == 2
    assert "has 2 samples" in capsys.readouterr().err
