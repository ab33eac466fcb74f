"""Monodepth2's model.echo_input (issue 9): a DepthNet that reads the echo and scales its depth by it. Shapes, the option
off being Monodepth2's DepthNet, the echo changing the scale, the photometric loss not seeing that scale, config errors,
checkpoints, the echo-feature check, the teacher's per-frame cache, and one tiny echo-supervised run."""

from __future__ import annotations

import math

import pytest
import torch

from avs_depth_core.cli import main
from avs_depth_core.models.avsnet import AVSNet
from avs_depth_core.models.monodepth2 import (
    DepthNet,
    Monodepth2Config,
    check_echo_features,
    disp_to_depth,
    echo_feature_settings,
    load_monodepth2,
    output_depth,
    save_monodepth2,
)
from avs_depth_core.relative import RelativeDepthModel
from avs_depth_core.train.echo_supervision import EchoSupervision, EchoSupervisionConfig
from avs_depth_core.train.logs import read_csv
from avs_depth_core.train.monodepth2 import Monodepth2Trainer, split_outputs


def _net(**overrides: object) -> tuple[DepthNet, Monodepth2Config]:
    config = Monodepth2Config.tiny(**overrides)
    torch.manual_seed(0)
    return DepthNet.from_config(config).eval(), config


def _set_scale_head(net: DepthNet, bias: float) -> None:
    with torch.no_grad():
        net.echo_encoder.head[-1].bias.fill_(bias)


def test_option_off_is_monodepth2s_depthnet():
    plain, _ = _net()
    off, config = _net(echo_input="none")
    assert config.echo_input == "none" and not off.needs_echo
    assert list(off.state_dict()) == list(plain.state_dict())  # no echo parameters: old checkpoints load
    assert not any("echo" in k for k in off.state_dict())
    rgb = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        outputs = off(rgb)
        reference = plain(rgb)
    assert set(outputs) == {("disp", s) for s in config.scales}
    torch.testing.assert_close(outputs, reference)
    torch.testing.assert_close(output_depth(outputs, 0.1, 100.0), disp_to_depth(outputs[("disp", 0)], 0.1, 100.0)[1])
    with pytest.raises(ValueError, match="echo_input 'none' takes no echo"):
        off(rgb, torch.rand(2, 2, 64, 128))


def test_echo_input_shapes_and_untrained_scale_of_one():
    net, _ = _net(echo_input="stft", echo_channels=2, echo_size=[32, 64])
    assert net.needs_echo and any(k.startswith("echo_encoder.") for k in net.state_dict())
    rgb, echo = torch.rand(3, 3, 64, 64), torch.rand(3, 2, 32, 64)
    with torch.no_grad():
        outputs = net(rgb, echo)
    assert outputs[("log_scale", 0)].shape == (3, 1, 1, 1)
    assert outputs[("disp", 0)].shape == (3, 1, 64, 64)
    # the head starts at zero: an untrained echo input leaves the depth as Monodepth2's
    assert torch.equal(outputs[("log_scale", 0)], torch.zeros(3, 1, 1, 1))
    with pytest.raises(ValueError, match="needs the echo features of every image"):
        net(rgb)
    with pytest.raises(ValueError, match=r"model.echo_channels, model.echo_size"):
        net(rgb, torch.rand(3, 2, 64, 64))
    with pytest.raises(ValueError, match="3 images but 2 echoes"):
        net(rgb, torch.rand(2, 2, 32, 64))


def test_echo_changes_the_scale_not_the_shape():
    net, _ = _net(echo_input="stft", echo_size=[32, 64])
    rgb = torch.rand(1, 3, 64, 64).expand(2, -1, -1, -1)
    quiet, loud = torch.zeros(1, 2, 32, 64), torch.zeros(1, 2, 32, 64)
    loud[..., 10:20] = 5.0  # energy at other delays
    torch.manual_seed(1)
    torch.nn.init.normal_(net.echo_encoder.head[-1].weight, std=1.0)
    _set_scale_head(net, math.log(2.0))
    with torch.no_grad():
        outputs = net(rgb, torch.cat([quiet, loud]))
    depth = output_depth(outputs, 0.1, 100.0)
    _, unscaled = disp_to_depth(outputs[("disp", 0)], 0.1, 100.0)
    ratio = depth / unscaled
    # one factor per image, exp(log_scale), and the two echoes give two different factors for the same image
    torch.testing.assert_close(ratio, outputs[("log_scale", 0)].exp().expand_as(ratio))
    assert abs(float(ratio[0, 0, 0, 0] / ratio[1, 0, 0, 0]) - 1.0) > 1e-3
    torch.testing.assert_close(unscaled[0], unscaled[1])


def test_photometric_loss_sees_the_unscaled_disparities():
    net, _ = _net(echo_input="stft", echo_size=[32, 64])
    with torch.no_grad():
        outputs = net(torch.rand(1, 3, 64, 64), torch.rand(1, 2, 32, 64))
    disps, rest = split_outputs(outputs)
    assert set(disps) == {("disp", s) for s in (0, 1, 2, 3)} and set(rest) == {("log_scale", 0)}


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="echo_input must be one of"):
        Monodepth2Config.tiny(echo_input="range")
    with pytest.raises(ValueError, match="echo_size must be"):
        Monodepth2Config.tiny(echo_input="stft", echo_size=[8, 64])
    with pytest.raises(ValueError, match="echo_channels and echo_encoder_width must be positive"):
        Monodepth2Config.tiny(echo_channels=0)
    with pytest.raises(ValueError, match="model.echo_input 'stft' needs train.echo_supervision.checkpoint"):
        Monodepth2Trainer({"model": {"echo_input": "stft"}})


def test_checkpoint_round_trip_and_metric_model(tmp_path, tiny_checkpoint):
    teacher = AVSNet.from_checkpoint(tiny_checkpoint(tmp_path / "teacher"))
    features = echo_feature_settings(teacher.cfg)
    assert features["channels"] == 2 and features["size"] == [64, 64]
    net, config = _net(echo_input="stft", echo_size=features["size"], echo_features=features, depth_units="metres")
    torch.nn.init.normal_(net.echo_encoder.head[-1].weight, std=0.5)
    path = save_monodepth2(tmp_path / "md2", net, config)
    loaded = load_monodepth2(path)
    assert loaded.config.echo_input == "stft" and loaded.config.echo_features == features
    rgb, echo = torch.rand(2, 3, 64, 64), torch.rand(2, 2, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.depth_net(rgb, echo), net(rgb, echo))
    model = RelativeDepthModel.monodepth2(path)
    assert model.is_metric and model.needs_echo and model.echo_features == features
    depth = model(rgb, echo)
    with torch.no_grad():
        torch.testing.assert_close(depth, output_depth(net(rgb, echo), config.min_depth, config.max_depth))
    with pytest.raises(ValueError, match="takes the echo"):
        model(rgb)
    check_echo_features(model.echo_features, teacher.cfg, "here")  # the teacher's own features fit
    other = AVSNet.from_checkpoint(tiny_checkpoint(tmp_path / "other", hop_length=32))
    with pytest.raises(ValueError, match="differ from those the DepthNet was trained on .*hop_length"):
        check_echo_features(model.echo_features, other.cfg, "here")
    assert "range_bins" not in features  # range-profile settings count only for a teacher that uses them
    profiled = AVSNet.from_checkpoint(tiny_checkpoint(tmp_path / "profiled", echo_range_profile=True, range_bins=64))
    assert echo_feature_settings(profiled.cfg)["range_bins"] == 64 and echo_feature_settings(profiled.cfg)["channels"] == 4
    with pytest.raises(ValueError, match="echo_range_profile"):
        check_echo_features(model.echo_features, profiled.cfg, "here")
    rgb_only = AVSNet.from_checkpoint(tiny_checkpoint(tmp_path / "rgb", use_echo=False))
    with pytest.raises(ValueError, match="Only-RGB"):
        check_echo_features(model.echo_features, rgb_only.cfg, "here")


def test_teacher_depth_is_computed_once_per_frame(tmp_path, tiny_checkpoint):
    echo = EchoSupervision(EchoSupervisionConfig(checkpoint=str(tiny_checkpoint(tmp_path / "t")), filter="none"), "cpu",
                           (0.01, 100.0))
    torch.manual_seed(0)
    frames, echoes = torch.rand(4, 3, 64, 128), torch.rand(4, 2, 64, 64)  # four frames of a sequence
    batch = {"rgb": torch.stack([frames[[0, 1, 2]], frames[[1, 2, 3]]]),
             "echo_triple": torch.stack([echoes[[0, 1, 2]], echoes[[1, 2, 3]]]),
             "has_echo_triple": torch.ones(2, 3, dtype=torch.bool), "slot_triple": torch.tensor([[0, 1, 2], [1, 2, 3]])}
    unflipped = torch.tensor([False, False])
    uncached = {k: v for k, v in batch.items() if k != "slot_triple"}
    expected, _ = echo.pseudo_labels(uncached, unflipped)
    calls = []
    teacher = echo.teacher.net.forward

    def counting(rgb: torch.Tensor, sound: torch.Tensor) -> dict[str, torch.Tensor]:
        calls.append(rgb.shape[0])
        return teacher(rgb, sound)

    echo.teacher.net.forward = counting
    first, _ = echo.pseudo_labels(batch, unflipped)
    again, _ = echo.pseudo_labels(batch, unflipped)
    assert calls == [4]  # frames 0-3 once, in the first batch only
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(again, expected)


def test_echo_input_run_trains_and_stores_the_teachers_features(sim_bag, tmp_path, capsys, sim, tiny_checkpoint):
    teacher = tiny_checkpoint(tmp_path / "teacher", max_depth=sim.MAX_DEPTH)
    config = sim.write_config(tmp_path / "md2.yaml")
    out = tmp_path / "run"
    args = sim.train_args(sim_bag, out, tmp_path / "cache", config, "--echo-supervision", str(teacher), "--set",
                          "train.echo_supervision.filter=none", "--set", "model.echo_input=stft")
    assert main(args) == 0, capsys.readouterr().err
    log = read_csv(out / "train_log.csv")
    assert all(math.isfinite(r["echo_log_scale"]) for r in log)
    assert any(r["echo_log_scale"] != 0 for r in log)  # the echo encoder learns from the echo-supervision term
    loaded = load_monodepth2(out / "checkpoints" / "last")
    assert loaded.config.depth_units == "metres" and loaded.config.echo_input == "stft"
    assert loaded.config.echo_features == echo_feature_settings(AVSNet.from_checkpoint(teacher).cfg)
    assert list(loaded.config.echo_size) == loaded.config.echo_features["size"]
    model = RelativeDepthModel.monodepth2(out / "checkpoints" / "last")
    assert model.needs_echo
