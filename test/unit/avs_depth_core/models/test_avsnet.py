"""ZoeDepth metric-bins layers, echo encoder, cross-modal fusion and AVS-Net (tiny, CPU): shapes, properties, bad inputs."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from avs_depth_core.audio import synthesize_chirp
from avs_depth_core.models.audio_encoder import AudioEncoder
from avs_depth_core.models.avsnet import AVSNet, AVSNetConfig
from avs_depth_core.models.fusion import CrossModalAttention
from avs_depth_core.models.metric_bins import (
    AttractorLayer,
    AttractorLayerUnnormed,
    ConditionalLogBinomial,
    MetricBinsHead,
    Projector,
    SeedBinRegressor,
    SeedBinRegressorUnnormed,
    exp_attractor,
    inv_attractor,
    log_binomial,
)

CONFIG_DIR = Path(__file__).resolve().parents[4] / "config"
TINY = dict(backbone="tiny", image_size=(64, 128), echo_size=(64, 64), n_bins=16, bin_embedding_dim=32,
            n_attractors=[4, 2, 2, 1], fusion_heads=4, audio_width=16, max_depth=12.0)


@pytest.fixture(scope="module")
def tiny_models():
    torch.manual_seed(0)
    echo_model = AVSNet(AVSNetConfig(**TINY)).eval()
    rgb_model = AVSNet(AVSNetConfig(**TINY, use_echo=False)).eval()
    return echo_model, rgb_model


# ---------------------------------------------------------------------------------------------------------- bins layers
def test_seed_bins_normed_are_sorted_inside_the_range():
    torch.manual_seed(0)
    layer = SeedBinRegressor(8, n_bins=16, min_depth=0.5, max_depth=12.0)
    normed, centers = layer(torch.randn(2, 8, 3, 4))
    assert centers.shape == (2, 16, 3, 4)
    torch.testing.assert_close(normed.sum(1), torch.ones(2, 3, 4))
    assert (centers.diff(dim=1) > 0).all() and (centers > 0.5).all() and (centers < 12.0).all()
    # edges start at min_depth and end at max_depth: first center = min + w0/2
    torch.testing.assert_close(centers[:, 0], 0.5 + 0.5 * 11.5 * normed[:, 0])
    _, unnormed = SeedBinRegressorUnnormed(8, n_bins=16)(torch.randn(2, 8, 3, 4))
    assert unnormed.shape == (2, 16, 3, 4) and (unnormed > 0).all()


def test_attractor_functions_by_hand():
    dx = torch.tensor([-0.2, 0.0, 0.1])
    torch.testing.assert_close(inv_attractor(dx, 1000.0, 2), dx / (1 + 1000 * dx ** 2))
    torch.testing.assert_close(exp_attractor(dx, 300.0, 2), torch.exp(-300 * dx.abs() ** 2) * dx)
    assert inv_attractor(torch.tensor([0.01]), 1000.0, 2).item() == pytest.approx(0.01 / 1.1)


def test_attractor_layers_mean_sum_sort_and_clip():
    torch.manual_seed(0)
    kwargs = dict(n_attractors=4, mlp_dim=16, min_depth=1e-3, max_depth=10.0, alpha=1000.0, gamma=2, attractor_type="inv")
    mean_layer = AttractorLayer(8, 16, kind="mean", **kwargs)
    sum_layer = AttractorLayer(8, 16, kind="sum", **kwargs)
    sum_layer.load_state_dict(mean_layer.state_dict())
    x, prev_embedding = torch.randn(2, 8, 6, 8), torch.randn(2, 8, 3, 4)
    b_prev = torch.sort(torch.rand(2, 16, 3, 4), dim=1).values
    b_mean, centers = mean_layer(x, b_prev, prev_embedding)
    b_sum, _ = sum_layer(x, b_prev, prev_embedding)
    b_up = torch.nn.functional.interpolate(b_prev, (6, 8), mode="bilinear", align_corners=True)
    torch.testing.assert_close(b_sum - b_up, 4 * (b_mean - b_up), rtol=1e-4, atol=1e-6)  # sum = n_attractors * mean
    assert centers.shape == (2, 16, 6, 8)
    assert (centers.diff(dim=1) >= 0).all() and (centers >= 1e-3).all() and (centers <= 10.0).all()
    unnormed = AttractorLayerUnnormed(8, 16, kind="mean", **kwargs)
    new, same = unnormed(x, b_prev * 10, None)
    assert new is same and new.shape == (2, 16, 6, 8)
    with pytest.raises(ValueError, match="attractor_kind"):
        AttractorLayer(8, 16, kind="max")


def test_log_binomial_by_hand_and_normalised():
    p, k_classes, t = 0.3, 4, 0.7
    n = 3 + 1e-7

    def log_comb(k):
        k = k + 1e-7
        return n * math.log(n) - k * math.log(k) - (n - k) * math.log(n - k + 1e-7)

    y = [log_comb(k) + k * math.log(p) + (3 - k) * math.log(1 - p) for k in range(k_classes)]
    expected = torch.softmax(torch.tensor(y, dtype=torch.float64) / t, 0).float()
    got = log_binomial(torch.full((1, 1, 1), p), k_classes, t)
    torch.testing.assert_close(got.flatten(), expected, rtol=1e-5, atol=1e-6)
    probs = ConditionalLogBinomial(33, 32, n_classes=16, min_temp=0.0212, max_temp=50.0)(torch.randn(2, 33, 5, 7),
                                                                                         torch.randn(2, 32, 5, 7))
    assert probs.shape == (2, 16, 5, 7) and (probs >= 0).all()
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 5, 7))


def test_metric_bins_head_output_inside_range():
    torch.manual_seed(0)
    head = MetricBinsHead(64, [32, 16, 8, 8], n_bins=16, bin_centers_type="normed", bin_embedding_dim=16, max_depth=12.0,
                          n_attractors=[4, 2, 2, 1])
    out = head(torch.rand(2, 32, 32, 64), torch.randn(2, 64, 1, 2), [torch.randn(2, 32, 2, 4), torch.randn(2, 16, 4, 8),
                                                                    torch.randn(2, 8, 8, 16), torch.randn(2, 8, 16, 32)],
               torch.rand(2, 1, 32, 64))
    assert out["metric_depth"].shape == (2, 1, 32, 64) and out["bin_centers"].shape == (2, 16, 32, 64)
    # the returned centers are those the depth is the expectation over (ZoeDepth's return_final_centers)
    torch.testing.assert_close(out["metric_depth"], (out["probs"] * out["bin_centers"]).sum(1, keepdim=True))
    assert (out["metric_depth"] > 1e-3).all() and (out["metric_depth"] < 12.0).all()
    torch.testing.assert_close(out["probs"].sum(1), torch.ones(2, 32, 64))
    assert Projector(8, 16)(torch.randn(1, 8, 2, 2)).shape == (1, 16, 2, 2)
    with pytest.raises(ValueError, match="n_attractors"):
        MetricBinsHead(64, [32, 16, 8, 8], n_attractors=[1, 1])


# ------------------------------------------------------------------------------------------------------- echo + fusion
def test_audio_tokens_shape():
    tokens = AudioEncoder(18, in_channels=2, width=16)(torch.randn(2, 2, 64, 128))
    assert tokens.shape == (2, 2 * 4, 128)  # (64/32)*(128/32) tokens of 8*16 channels


def test_cross_modal_attention_is_a_residual_update():
    torch.manual_seed(0)
    fusion = CrossModalAttention(32, 16, num_heads=4)
    visual, audio = torch.randn(2, 32, 3, 5), torch.randn(2, 7, 16)
    fused, weights = fusion(visual, audio, return_attention=True)
    assert fused.shape == visual.shape and weights.shape == (2, 15, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 15))
    assert not torch.allclose(fused, visual)
    with torch.no_grad():
        fusion.attention.out_proj.weight.zero_()
        fusion.attention.out_proj.bias.zero_()
    torch.testing.assert_close(fusion(visual, audio), visual)  # out = Q + Attn: with a zero attention output, Q passes through
    with pytest.raises(ValueError, match="heads"):
        CrossModalAttention(30, 16, num_heads=8)


# ------------------------------------------------------------------------------------------------------------- AVS-Net
def test_rgb_echo_and_only_rgb_forward(tiny_models):
    echo_model, rgb_model = tiny_models
    torch.manual_seed(1)
    rgb, echo = torch.rand(2, 3, 64, 128), torch.rand(2, 2, 64, 64)
    with torch.no_grad():
        out = echo_model(rgb, echo, return_probs=True)
        other = echo_model(rgb, echo * 3 + 1)
        base = rgb_model(rgb)
    assert out["metric_depth"].shape == (2, 1, 64, 128) and out["rel_depth"].shape == (2, 1, 64, 128)
    assert out["bin_centers"].shape == (2, 16, 64, 128) and out["probs"].shape == (2, 16, 64, 128)
    assert base["metric_depth"].shape == (2, 1, 64, 128)
    for o in (out, base):
        assert (o["metric_depth"] > 1e-3).all() and (o["metric_depth"] < 12.0).all()
    assert not torch.allclose(out["metric_depth"], other["metric_depth"])  # the echo reaches the output
    torch.testing.assert_close(out["rel_depth"], other["rel_depth"])  # ... but not the relative depth branch
    echo_keys, rgb_keys = set(echo_model.state_dict()), set(rgb_model.state_dict())
    assert rgb_keys < echo_keys and all(k.startswith(("audio.", "fusion.")) for k in echo_keys - rgb_keys)


def test_gradients_reach_every_branch(tiny_models):
    echo_model, _ = tiny_models
    model = AVSNet(echo_model.cfg)
    model.load_state_dict(echo_model.state_dict())
    model.train()
    out = model(torch.rand(2, 3, 64, 128), torch.rand(2, 2, 64, 64))
    out["metric_depth"].mean().backward()
    for prefix in ("visual.pretrained.", "visual.scratch.", "audio.", "fusion.", "head."):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix)]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), prefix


def test_frozen_visual_batch_norm_in_training(tiny_models):
    model = AVSNet(tiny_models[0].cfg).train()
    bns = [m for m in model.visual.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert model.audio.training and model.head.training
    unfrozen = AVSNet(AVSNetConfig(**TINY, freeze_visual_bn=False)).train()
    assert all(m.training for m in unfrozen.visual.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_parameter_groups_follow_zoedepth(tiny_models):
    model = tiny_models[0]
    groups = model.parameter_groups(1e-3)
    assert [g["name"] for g in groups] == ["encoder", "decoder", "head"]
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 1e-3, 1e-3])
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert len(groups[0]["params"]) == len(list(model.visual.pretrained.parameters()))
    assert model.parameter_groups(1.0, midas_lr_factor=10)[1]["lr"] == pytest.approx(0.1)


@pytest.mark.parametrize("case, match", [
    ("size", r"rgb: expected a \(B, 3, 64, 128\)"),
    ("channels", r"rgb: expected a \(B, 3, 64, 128\)"),
    ("nan", r"rgb: NaN or inf in batch item\(s\) \[1\]"),
    ("range", r"rgb: expected values in \[0, 1\]"),
    ("echo_shape", r"echo: expected a \(B, 2, 64, 64\)"),
    ("echo_missing", "no echo was given"),
    ("echo_nan", r"echo: NaN or inf in batch item\(s\) \[0\]"),
    ("echo_batch", "does not match the rgb batch"),
])
def test_bad_inputs_raise(tiny_models, case, match):
    model = tiny_models[0]
    rgb, echo = torch.rand(2, 3, 64, 128), torch.rand(2, 2, 64, 64)
    if case == "size":
        rgb = torch.rand(2, 3, 64, 96)
    elif case == "channels":
        rgb = torch.rand(2, 4, 64, 128)
    elif case == "nan":
        rgb[1, 0, 3, 3] = float("nan")
    elif case == "range":
        rgb = rgb * 255
    elif case == "echo_shape":
        echo = torch.rand(2, 1, 64, 64)
    elif case == "echo_missing":
        echo = None
    elif case == "echo_nan":
        echo[0, 1, 0, 0] = float("inf")
    elif case == "echo_batch":
        echo = echo[:1]
    with pytest.raises(ValueError, match=match), torch.no_grad():
        model(rgb, echo)


def test_only_rgb_model_refuses_an_echo(tiny_models):
    with pytest.raises(ValueError, match="Only-RGB"):
        tiny_models[1](torch.rand(1, 3, 64, 128), torch.rand(1, 2, 64, 64))


def synthetic_echo(distance_m: float, sample_rate: int = 44100, n: int = 9000) -> np.ndarray:
    """Chirp at emission plus an attenuated copy delayed by the round trip to `distance_m` (343 m/s), both ears."""
    chirp = synthesize_chirp()
    out = np.zeros((2, n), np.float32)
    delay = int(round(2 * distance_m / 343.0 * sample_rate))
    for ear, gain in enumerate((0.5, 0.4)):
        out[ear, : chirp.size] += chirp
        out[ear, delay: delay + chirp.size] += gain * chirp
    return out


def test_predict_from_raw_image_and_echo(tiny_models):
    model = tiny_models[0]
    image = (np.random.default_rng(0).random((48, 80, 3)) * 255).astype(np.uint8)
    out = model.predict(image, synthetic_echo(3.0), sample_rate=44100)
    assert out["metric_depth"].shape == (1, 1, 48, 80) and out["metric_depth"].dtype == torch.float32
    assert torch.isfinite(out["metric_depth"]).all()
    batch = model.predict(np.stack([image, image]), np.stack([synthetic_echo(3.0), synthetic_echo(6.0)]), sample_rate=44100,
                          emission_offset=[0, 0], output_size=(64, 128))
    assert batch["metric_depth"].shape == (2, 1, 64, 128)
    assert not torch.allclose(batch["metric_depth"][0], batch["metric_depth"][1])
    direct = model(model.image_input(image)[0], model.echo_input(synthetic_echo(3.0), 44100))
    torch.testing.assert_close(batch["metric_depth"][:1], torch.nn.functional.interpolate(
        direct["metric_depth"], size=(64, 128), mode="bilinear", align_corners=True), rtol=1e-4, atol=1e-4)
    assert model.training is False
    rgb_only = tiny_models[1].predict(image)
    assert rgb_only["metric_depth"].shape == (1, 1, 48, 80)


@pytest.mark.parametrize("kwargs, match", [
    (dict(sample_rate=48000), "sample rate 48000 Hz, expected 44100 Hz"),
    (dict(sample_rate=44100, emission_offset=5000), "do not cover the 3112-sample echo window"),
    (dict(sample_rate=None), "pass echo_samples and sample_rate"),
])
def test_predict_rejects_bad_echoes(tiny_models, kwargs, match):
    image = np.zeros((64, 128, 3), np.uint8)
    with pytest.raises(ValueError, match=match):
        tiny_models[0].predict(image, synthetic_echo(3.0, n=8000), **kwargs)
    with pytest.raises(ValueError, match="2 channels"):
        tiny_models[0].predict(image, np.zeros((3, 8000), np.float32), sample_rate=44100)
    with pytest.raises(ValueError, match="channels-last"):
        tiny_models[0].predict(np.zeros((3, 64, 128), np.uint8), synthetic_echo(3.0), sample_rate=44100)


# -------------------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("name, max_depth, window", [("bv1", 12.0, 3112), ("bv2", 30.0, 7782), ("tiny", 30.0, 7782)])
def test_config_files_load(name, max_depth, window):
    cfg = AVSNetConfig.from_yaml(CONFIG_DIR / f"avsnet_{name}.yaml")
    assert cfg.max_depth == max_depth and cfg.echo_samples == window
    assert cfg.bin_centers_type == "normed" and cfg.n_attractors[-1] == 1
    if name != "tiny":
        assert cfg.image_size == (256, 512) and cfg.echo_size == (256, 512) and cfg.backbone == "midas_small"
        assert (cfg.n_bins, cfg.attractor_alpha, cfg.min_temp, cfg.attractor_kind, cfg.attractor_type) == (
            64, 1000.0, 0.0212, "mean", "inv")


def test_config_overrides_round_trip_and_validation(tmp_path):
    cfg = AVSNetConfig.from_yaml(CONFIG_DIR / "avsnet_tiny.yaml", ["max_depth=12", "use_echo=false"])
    assert cfg.max_depth == 12.0 and isinstance(cfg.max_depth, float) and cfg.use_echo is False
    assert AVSNetConfig.from_dict(cfg.to_dict()) == cfg
    assert AVSNetConfig.from_yaml(CONFIG_DIR / "avsnet_tiny.yaml", {"n_bins": 8}).n_bins == 8
    for bad, match in [({"max_deph": 3.0}, "unknown key.*max_deph"), ({"n_bins": "64"}, "n_bins: expected int"),
                       ({"use_echo": 1}, "use_echo: expected bool"), ({"image_size": [250, 512]}, "image_size"),
                       ({"backbone": "vgg"}, "backbone"), ({"min_depth": 5.0, "max_depth": 4.0}, "min_depth"),
                       ({"n_attractors": [16, 8]}, "n_attractors"), ({"bin_centers_type": "linear"}, "bin_centers_type")]:
        with pytest.raises(ValueError, match=match):
            AVSNetConfig.from_dict(bad)
    (tmp_path / "bad.yaml").write_text("model:\n  n_bins: 64\n  colour: red\n")
    with pytest.raises(ValueError, match=r"bad.yaml model: unknown key\(s\) \['colour'\]"):
        AVSNetConfig.from_yaml(tmp_path / "bad.yaml")
    (tmp_path / "flat.yaml").write_text("n_bins: 64\n")
    with pytest.raises(ValueError, match="'model:' section"):
        AVSNetConfig.from_yaml(tmp_path / "flat.yaml")
    with pytest.raises(ValueError, match="key=value"):
        AVSNetConfig.from_yaml(CONFIG_DIR / "avsnet_tiny.yaml", ["max_depth"])


def test_range_profile_option_adds_channels_and_tokens(tmp_path):
    """echo_range_profile: 4 echo channels (STFT, then the packed range profile), range tokens join the keys/values,
    the arrival's range is in the input, and the model survives a checkpoint round trip."""
    tiny = dict(backbone="tiny", image_size=(64, 128), echo_size=(32, 64), n_bins=8, bin_embedding_dim=16,
                n_attractors=[2, 2, 2, 1], fusion_heads=4, audio_width=8, max_depth=8.0)
    cfg = AVSNetConfig(**tiny, echo_range_profile=True, range_bins=128)
    assert cfg.echo_channels == 4 and cfg.stft.range_profile.bins == 128
    torch.manual_seed(0)
    model = AVSNet(cfg).eval()
    chirp = synthesize_chirp()
    samples = np.random.default_rng(0).normal(0, 1e-3, (2, 3000)).astype(np.float32)
    lag = int(round(2 * 3.0 / 340.0 * 44_100))  # a wall at 3 m
    samples[:, lag:lag + chirp.size] += 0.2 * chirp
    echo = model.echo_input(samples, 44_100)
    assert echo.shape == (1, 4, 32, 64)
    profile = echo[0, 2].flatten()[:128]
    assert abs((int(profile[8:].argmax()) + 8 + 0.5) * 8.0 / 128 - 3.0) < 0.1 and echo[0, 2].flatten()[128:].abs().max() == 0
    with torch.inference_mode():
        out = model(torch.rand(1, 3, 64, 128), echo, return_attention=True)
    stft_tokens = (32 // 32) * (64 // 32)
    assert out["attention"].shape[-1] == stft_tokens + 128 // 8
    with pytest.raises(ValueError, match=r"expected a \(B, 4, 32, 64\) magnitude STFT and range profile"):
        model(torch.rand(1, 3, 64, 128), echo[:, :2])
    loaded = AVSNet.from_checkpoint(model.save(tmp_path / "ranged"), "cpu")
    with torch.inference_mode():
        torch.testing.assert_close(loaded(torch.rand(1, 3, 64, 128).fill_(0.5), echo)["metric_depth"],
                                   model(torch.rand(1, 3, 64, 128).fill_(0.5), echo)["metric_depth"])
    with pytest.raises(ValueError, match="range_bins"):
        AVSNetConfig(**tiny, echo_range_profile=True, range_bins=100)
    with pytest.raises(ValueError, match="range_bins"):
        AVSNetConfig(**tiny, echo_range_profile=True, range_bins=4096)
    with pytest.raises(ValueError, match="chirp band"):
        AVSNetConfig(**tiny, echo_range_profile=True, chirp_end_hz=40_000.0)
    assert AVSNetConfig(**tiny).echo_channels == 2  # off by default: the paper's STFT branch alone
    logged = AVSNetConfig(**tiny, echo_range_profile=True, range_bins=128, range_spacing="log", range_min=0.3)
    assert logged.stft.range_profile.spacing == "log" and logged.stft.range_profile.min_range == 0.3
    assert cfg.stft.range_profile.spacing == "linear"  # linear by default: checkpoints without the key load unchanged
    with pytest.raises(ValueError, match="range_spacing"):
        AVSNetConfig(**tiny, echo_range_profile=True, range_spacing="cubic")
    with pytest.raises(ValueError, match="range_min"):
        AVSNetConfig(**tiny, echo_range_profile=True, range_spacing="log", range_min=9.0)


def test_echo_scale_head_starts_neutral_and_scales_the_output(tmp_path):
    """echo_scale_head: at initialisation the network is the one without it (s = 1); a log scale from the echo tokens
    multiplies metric depth and bin centres, and the head survives a checkpoint round trip."""
    tiny = dict(backbone="tiny", image_size=(64, 128), echo_size=(32, 64), n_bins=8, bin_embedding_dim=16,
                n_attractors=[2, 2, 2, 1], fusion_heads=4, audio_width=8, max_depth=8.0)
    torch.manual_seed(0)
    plain = AVSNet(AVSNetConfig(**tiny)).eval()
    torch.manual_seed(0)
    headed = AVSNet(AVSNetConfig(**tiny, echo_scale_head=True)).eval()
    assert headed.scale_head is not None and plain.scale_head is None
    assert AVSNet(AVSNetConfig(**tiny, use_echo=False, echo_scale_head=True)).scale_head is None  # nothing to hear
    headed.load_state_dict({**plain.state_dict(), **{k: v for k, v in headed.state_dict().items() if "scale_head" in k}})
    rgb, echo = torch.rand(2, 3, 64, 128), torch.rand(2, 2, 32, 64)
    with torch.inference_mode():
        torch.testing.assert_close(headed(rgb, echo)["metric_depth"], plain(rgb, echo)["metric_depth"])
        headed.scale_head.mlp[-1].bias.fill_(math.log(2.0))
        out, ref = headed(rgb, echo), plain(rgb, echo)
    torch.testing.assert_close(out["metric_depth"], 2 * ref["metric_depth"])
    torch.testing.assert_close(out["bin_centers"], 2 * ref["bin_centers"])
    loaded = AVSNet.from_checkpoint(headed.save(tmp_path / "headed"), "cpu")
    with torch.inference_mode():
        torch.testing.assert_close(loaded(rgb, echo)["metric_depth"], out["metric_depth"])
