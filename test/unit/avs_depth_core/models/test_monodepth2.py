from pathlib import Path

import pytest
import torch

from avs_depth_core.models.monodepth2 import (
    DepthNet,
    Monodepth2Config,
    PoseNet,
    disp_to_depth,
    load_monodepth2,
    load_monodepth2_release,
    predict_poses,
    save_monodepth2,
)
from avs_depth_core.models.resnet import ResNetEncoder

ROOT = Path(__file__).resolve().parents[4]


def test_config_defaults_are_monodepth2_options_and_yaml_matches():
    c = Monodepth2Config()
    assert (c.height, c.width, c.num_layers, c.scales) == (192, 640, 18, [0, 1, 2, 3])
    assert (c.min_depth, c.max_depth, c.ssim_weight, c.disparity_smoothness) == (0.1, 100.0, 0.85, 1e-3)
    assert (c.learning_rate, c.scheduler_step_size, c.scheduler_gamma, c.batch_size, c.num_epochs) == (1e-4, 15, 0.1, 12, 20)
    assert c.frame_interval == 20 and c.source_offsets == [-1, 1]
    assert Monodepth2Config.from_yaml(ROOT / "config" / "monodepth2.yaml") == c
    assert Monodepth2Config.from_dict(c.to_dict()) == c


def test_config_rejects_unknown_and_bad_keys(tmp_path):
    with pytest.raises(ValueError, match="unknown key.*'hieght'"):
        Monodepth2Config.from_dict({"hieght": 192})
    with pytest.raises(ValueError, match="multiples of 32"):
        Monodepth2Config.from_dict({"width": 630})
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        Monodepth2Config.from_dict({"min_depth": 10, "max_depth": 1})
    with pytest.raises(ValueError, match="source_offsets"):
        Monodepth2Config.from_dict({"source_offsets": [0, 1]})
    bad = tmp_path / "m.yaml"
    bad.write_text("scales: [0, 5]\n")
    with pytest.raises(ValueError, match=f"{bad}.*scales"):
        Monodepth2Config.from_yaml(bad)
    with pytest.raises(FileNotFoundError):
        Monodepth2Config.from_yaml(tmp_path / "missing.yaml")


def test_disp_to_depth_spans_min_to_max():
    scaled, depth = disp_to_depth(torch.tensor([0.0, 1.0, 0.5]), 0.1, 100.0)
    torch.testing.assert_close(depth[:2], torch.tensor([100.0, 0.1]))
    torch.testing.assert_close(scaled, 1 / depth)


def test_depth_net_outputs_multiscale_disparity():
    c = Monodepth2Config.tiny()
    net = DepthNet.from_config(c)
    out = net(torch.rand(2, 3, c.height, c.width))
    assert sorted(out) == [("disp", s) for s in range(4)]
    for s in range(4):
        assert out[("disp", s)].shape == (2, 1, c.height // 2**s, c.width // 2**s)
        assert 0 <= out[("disp", s)].min() and out[("disp", s)].max() <= 1
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.rand(1, 3, 70, 64))


def test_full_size_depth_net_has_monodepth2_parameter_count():
    # ResNet-18 encoder without fc (11.18M) + decoder (3.15M): the 14.3M of Monodepth2's ResNet-18 model.
    assert sum(p.numel() for p in DepthNet().parameters()) == 14_329_236
    out = DepthNet(scales=[0])(torch.rand(1, 3, 64, 96))
    assert list(out) == [("disp", 0)] and out[("disp", 0)].shape == (1, 1, 64, 96)


def test_pose_net_is_small_at_init_and_predict_poses_orders_pairs():
    c = Monodepth2Config.tiny()
    pose_net = PoseNet.from_config(c)
    a, b = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    axisangle, translation = pose_net(a, b)
    assert axisangle.shape == translation.shape == (2, 1, 3)
    assert axisangle.abs().max() < 0.5  # the decoder's x0.01

    calls = []

    def fake_pose_net(first, second):
        calls.append((first, second))
        return torch.zeros(2, 1, 3), torch.tensor([[[1.0, 2.0, 3.0]]]).expand(2, 1, 3)

    target, before, after = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4), torch.full((2, 3, 4, 4), 2.0)
    poses = predict_poses(fake_pose_net, target, {-1: before, 1: after})
    assert calls[0][0] is before and calls[0][1] is target  # temporal order [earlier, later]
    assert calls[1][0] is target and calls[1][1] is after
    torch.testing.assert_close(poses[1][0, :3, 3], torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(poses[-1][0, :3, 3], torch.tensor([-1.0, -2.0, -3.0]))  # inverted for the earlier frame


def test_pretrained_encoder_loads_from_a_local_torchvision_file(tmp_path):
    reference = ResNetEncoder(18, width=8)
    state = dict(reference.state_dict(), **{"fc.weight": torch.zeros(10, 64), "fc.bias": torch.zeros(10)})
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    depth_net = DepthNet(encoder_width=8, decoder_channels=[4, 8, 16, 16, 32], pretrained_path=path)
    torch.testing.assert_close(depth_net.encoder.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
    pose_net = PoseNet(encoder_width=8, pretrained_path=path)
    # Monodepth2: conv1 tiled over the two frames and halved.
    torch.testing.assert_close(pose_net.encoder.conv1.weight, torch.cat([reference.conv1.weight] * 2, 1) / 2)
    config = Monodepth2Config.tiny(pretrained_encoder=str(tmp_path / "nope.pth"))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        DepthNet.from_config(config)


def _release_files(tmp_path, depth_net, pose_net):
    # The layout of nianticlabs/monodepth2's encoder.pth / depth.pth / pose_encoder.pth / pose.pth.
    encoder = {f"encoder.{k}": v for k, v in depth_net.encoder.state_dict().items()}
    encoder.update({"encoder.fc.weight": torch.zeros(1000, 64), "encoder.fc.bias": torch.zeros(1000), "height": 64, "width": 64,
                    "use_stereo": False})
    files = {"encoder": encoder, "depth": depth_net.decoder.state_dict(),
             "pose_encoder": {f"encoder.{k}": v for k, v in pose_net.encoder.state_dict().items()},
             "pose": pose_net.decoder.state_dict()}
    for name, state in files.items():
        assert all(k.startswith(("encoder.", "decoder.", "net.")) for k in state if isinstance(state[k], torch.Tensor))
        torch.save(state, tmp_path / f"{name}.pth")
    return {name: tmp_path / f"{name}.pth" for name in files}


def test_release_weights_load_and_reproduce_outputs(tmp_path):
    c = Monodepth2Config.tiny()
    torch.manual_seed(0)
    source_depth, source_pose = DepthNet.from_config(c).eval(), PoseNet.from_config(c).eval()
    files = _release_files(tmp_path, source_depth, source_pose)
    assert "decoder.13.conv.weight" in torch.load(files["depth"], weights_only=True)  # the released decoder's last head
    depth_net, pose_net = DepthNet.from_config(c).eval(), PoseNet.from_config(c).eval()
    size = load_monodepth2_release(depth_net, files["encoder"], files["depth"], pose_net, files["pose_encoder"], files["pose"])
    assert size == {"height": 64, "width": 64}
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(depth_net(x)[("disp", 0)], source_depth(x)[("disp", 0)])
    torch.testing.assert_close(pose_net(x, x)[1], source_pose(x, x)[1])
    with pytest.raises(ValueError, match="does not fit the depth decoder"):
        load_monodepth2_release(depth_net, files["encoder"], files["pose"])


def test_checkpoint_round_trip(tmp_path):
    c = Monodepth2Config.tiny()
    depth_net, pose_net = DepthNet.from_config(c).eval(), PoseNet.from_config(c).eval()
    path = save_monodepth2(tmp_path / "md2", depth_net, c, pose_net, meta={"epoch": 3})
    assert path.suffix == ".safetensors" and (tmp_path / "md2.json").is_file()
    loaded = load_monodepth2(path, with_pose=True)
    assert loaded.config == c and loaded.meta["epoch"] == 3 and not loaded.depth_net.training
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(loaded.depth_net(x)[("disp", 1)], depth_net(x)[("disp", 1)])
    torch.testing.assert_close(loaded.pose_net(x, x)[0], pose_net(x, x)[0])
    save_monodepth2(tmp_path / "depth_only", depth_net, c)
    assert load_monodepth2(tmp_path / "depth_only").pose_net is None
    with pytest.raises(ValueError, match="holds no pose network"):
        load_monodepth2(tmp_path / "depth_only", with_pose=True)
    wrong = Monodepth2Config.tiny(encoder_width=16)
    save_monodepth2(tmp_path / "mismatch", depth_net, c)
    json_path = tmp_path / "mismatch.json"
    json_path.write_text(json_path.read_text().replace('"encoder_width": 8', f'"encoder_width": {wrong.encoder_width}'))
    with pytest.raises(ValueError, match="do not match the stored config"):
        load_monodepth2(tmp_path / "mismatch")
