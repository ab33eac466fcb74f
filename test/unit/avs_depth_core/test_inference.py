"""avs-depth infer and AVSNet.from_checkpoint on the real BatVision V2 sample, with a tiny random-init checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from avs_depth_core.audio.wav import write_wav
from avs_depth_core.cli import main
from avs_depth_core.inference import infer_depth, load_echo, load_rgb
from avs_depth_core.models.avsnet import AVSNet


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_checkpoint):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


def test_infer_batvision_sample_npy(bv2_sample, checkpoint, tmp_path, capsys):
    out = tmp_path / "depth.npy"
    assert main(["infer", "--checkpoint", str(checkpoint), "--image", str(bv2_sample / "camera_47.jpeg"),
                 "--echo", str(bv2_sample / "audio_47.wav"), "--out", str(out), "--device", "cpu"]) == 0
    depth = np.load(out)
    assert depth.shape == (720, 1280) and depth.dtype == np.float32
    assert np.isfinite(depth).all() and depth.min() >= 1e-3 and depth.max() <= 30.0  # normed bins stay in the range
    assert "1280x720 depth" in capsys.readouterr().out


def test_infer_direct_path_emission(bv2_sample, checkpoint, tmp_path, capsys):
    """--emission-offset direct: the model sees the window starting where the direct path says, as with that index."""
    out, ref = tmp_path / "direct.npy", tmp_path / "index.npy"
    args = ["infer", "--checkpoint", str(checkpoint), "--image", str(bv2_sample / "camera_47.jpeg"),
            "--echo", str(bv2_sample / "audio_47.wav"), "--device", "cpu"]
    assert main([*args, "--out", str(out), "--emission-offset", "direct"]) == 0
    offset = int(capsys.readouterr().err.split("emission at sample ")[1].split()[0])
    assert 250 <= offset <= 300  # the real sample's direct path starts about 300 samples in
    assert main([*args, "--out", str(ref), "--emission-offset", str(offset)]) == 0
    np.testing.assert_array_equal(np.load(out), np.load(ref))
    with pytest.raises(SystemExit):
        main([*args, "--out", str(ref), "--emission-offset", "soon"])


def test_infer_png_and_api_agree(bv2_sample, checkpoint, tmp_path):
    out = tmp_path / "depth.png"
    assert main(["infer", "--checkpoint", str(checkpoint), "--image", str(bv2_sample / "camera_47.jpeg"),
                 "--echo", str(bv2_sample / "audio_47.wav"), "--out", str(out), "--device", "cpu"]) == 0
    png = np.asarray(Image.open(out))
    assert png.shape == (720, 1280, 3) and png.std() > 0
    model = AVSNet.from_checkpoint(checkpoint, "cpu")
    rgb = load_rgb(bv2_sample / "camera_47.jpeg")
    echo = load_echo(bv2_sample / "audio_47.wav", 44_100)
    a = infer_depth(model, rgb, echo, 44_100)
    # The echo matters: silence gives another depth map.
    b = infer_depth(model, rgb, np.zeros_like(echo), 44_100)
    assert a.shape == (720, 1280) and not np.allclose(a, b)


def test_bad_inputs_are_clear_errors(bv2_sample, checkpoint, tmp_path, capsys):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(grey)
    wav_22k = tmp_path / "echo_22k.wav"
    write_wav(wav_22k, np.zeros((2, 8000), np.float32), 22_050)
    mono = tmp_path / "mono.wav"
    write_wav(mono, np.zeros((1, 20000), np.float32), 44_100)
    image, echo = str(bv2_sample / "camera_47.jpeg"), str(bv2_sample / "audio_47.wav")
    cases = [
        (["--image", str(grey), "--echo", echo], "image mode L (1 channel(s)); expected a 3-channel RGB"),
        (["--image", image, "--echo", str(wav_22k)], "sample rate 22050 Hz; the model expects 44100 Hz"),
        (["--image", image, "--echo", str(mono)], "1 channel(s), expected 2"),
        (["--image", image], "this model fuses the echo; pass --echo"),
        (["--image", image, "--echo", echo, "--out", str(tmp_path / "d.tiff")], "expected a .npy"),
        (["--image", str(tmp_path / "missing.jpg"), "--echo", echo], "image not found"),
        (["--image", image, "--echo", echo, "--half"], "--half needs a CUDA device"),
    ]
    for extra, message in cases:
        argv = ["infer", "--checkpoint", str(checkpoint), "--device", "cpu", "--out", str(tmp_path / "d.npy"), *extra]
        if "--out" in extra:
            argv = ["infer", "--checkpoint", str(checkpoint), "--device", "cpu", *extra]
        assert main(argv) == 2, extra
        assert message in capsys.readouterr().err, extra


def test_only_rgb_checkpoint_needs_no_echo(bv2_sample, tmp_path, tiny_checkpoint):
    ckpt = tiny_checkpoint(tmp_path / "rgb", use_echo=False)
    out = tmp_path / "depth.npy"
    assert main(["infer", "--checkpoint", str(ckpt), "--image", str(bv2_sample / "camera_47.jpeg"), "--out", str(out),
                 "--device", "cpu"]) == 0
    assert np.load(out).shape == (720, 1280)
