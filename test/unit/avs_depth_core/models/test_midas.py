"""EfficientNet-Lite3 / MiDaS-small against the reference implementation (PyPI geffnet, random weights), checkpoint keys,
weight loading and the DPT/BEiT plumbing (with a stand-in for timm's Beit, since timm cannot be imported here)."""

import types

import geffnet  # test dependency, installed with pip --no-deps (Makefile): the independent EfficientNet reference
import pytest
import torch
from torch import nn

from avs_depth_core.models import midas as midas_module
from avs_depth_core.models.efficientnet_lite import efficientnet_lite3, tf_same_padding
from avs_depth_core.models.midas import (
    MidasSmall,
    build_visual_backbone,
    load_midas_weights,
    relative_position_index,
    resized_relative_position_bias,
)


def randomise_batch_norm(model: nn.Module, seed: int = 0) -> None:
    """Random BN affine parameters and running statistics, so that eval-mode BN is not the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(1 + 0.2 * torch.randn(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))


def reference_lite3() -> nn.Module:
    torch.manual_seed(0)
    ref = geffnet.tf_efficientnet_lite3(pretrained=False, exportable=True)
    randomise_batch_norm(ref)
    return ref.eval()


def midas_encoder_from(effnet: nn.Module) -> nn.Module:
    """The MiDaS v2.1 small encoder as MiDaS assembles it from geffnet (midas/blocks.py _make_efficientnet_backbone)."""
    pretrained = nn.Module()
    pretrained.layer1 = nn.Sequential(effnet.conv_stem, effnet.bn1, effnet.act1, *effnet.blocks[0:2])
    pretrained.layer2 = nn.Sequential(*effnet.blocks[2:3])
    pretrained.layer3 = nn.Sequential(*effnet.blocks[3:5])
    pretrained.layer4 = nn.Sequential(*effnet.blocks[5:9])
    return pretrained.eval()


def test_tf_same_padding_matches_tensorflow_rule():
    # TF: out = ceil(in / stride); total pad = max((out - 1) * stride + k - in, 0), the extra pixel after.
    assert tf_same_padding(256, 3, 2) == (0, 1)
    assert tf_same_padding(256, 5, 2) == (1, 2)
    assert tf_same_padding(255, 3, 2) == (1, 1)
    assert tf_same_padding(8, 3, 1) == (1, 1)


@pytest.mark.parametrize("size", [(64, 96), (70, 90)])
def test_efficientnet_lite3_equals_geffnet(size):
    ref = reference_lite3()  # a fresh one per size: geffnet's exportable conv freezes its padding at the first call
    ours = efficientnet_lite3().eval()
    state = {k: v for k, v in ref.state_dict().items() if not k.startswith(("conv_head", "bn2", "classifier"))}
    ours.load_state_dict(state, strict=True)  # same parameter names and shapes
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        y = ref.act1(ref.bn1(ref.conv_stem(x)))
        expected = []
        for stage in ref.blocks:
            y = stage(y)
            expected.append(y)
        got = ours(x)
    assert [t.shape[1] for t in got] == [24, 32, 48, 96, 136, 232, 384]
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_midas_small_encoder_equals_reference_on_the_same_weights():
    reference = midas_encoder_from(reference_lite3())
    model = MidasSmall().eval()
    missing, unexpected = model.pretrained.load_state_dict(reference.state_dict(), strict=True)
    assert not missing and not unexpected
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        ours = model.encode(x)
        r1 = reference.layer1(x)
        r2 = reference.layer2(r1)
        r3 = reference.layer3(r2)
        r4 = reference.layer4(r3)
    for a, b, channels, stride in zip(ours, (r1, r2, r3, r4), (32, 48, 136, 384), (4, 8, 16, 32), strict=True):
        assert a.shape == (1, channels, 64 // stride, 128 // stride)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_midas_small_state_dict_matches_midas_v21_small_layout():
    model = MidasSmall()
    state = model.state_dict()
    # Key names and shapes from MiDaS midas_net_custom.py / blocks.py (features=64, expand=True, efficientnet_lite3).
    expected = {
        "pretrained.layer1.0.weight": (32, 3, 3, 3),  # conv_stem
        "pretrained.layer1.1.running_var": (32,),  # bn1
        "pretrained.layer1.3.0.conv_dw.weight": (32, 1, 3, 3),  # blocks[0] depthwise-separable
        "pretrained.layer1.4.0.conv_pw.weight": (144, 24, 1, 1),
        "pretrained.layer2.0.2.conv_pwl.weight": (48, 288, 1, 1),
        "pretrained.layer4.1.0.conv_pwl.weight": (384, 1392, 1, 1),
        "scratch.layer1_rn.weight": (64, 32, 3, 3),
        "scratch.layer2_rn.weight": (128, 48, 3, 3),
        "scratch.layer3_rn.weight": (256, 136, 3, 3),
        "scratch.layer4_rn.weight": (512, 384, 3, 3),
        "scratch.refinenet4.resConfUnit1.conv1.weight": (512, 512, 3, 3),
        "scratch.refinenet4.out_conv.weight": (256, 512, 1, 1),
        "scratch.refinenet1.resConfUnit2.conv2.bias": (64,),
        "scratch.refinenet1.out_conv.weight": (64, 64, 1, 1),
        "scratch.output_conv.0.weight": (32, 64, 3, 3),
        "scratch.output_conv.2.weight": (32, 32, 3, 3),
        "scratch.output_conv.4.weight": (1, 32, 1, 1),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    # The full key set: the geffnet encoder as MiDaS wraps it, plus the scratch layout.
    reference_keys = {f"pretrained.{k}" for k in midas_encoder_from(reference_lite3()).state_dict()}
    scratch_keys = {f"scratch.layer{i}_rn.weight" for i in range(1, 5)}
    scratch_keys |= {f"scratch.refinenet{i}.{unit}.{conv}.{p}" for i in range(1, 5) for unit in ("resConfUnit1", "resConfUnit2")
                     for conv in ("conv1", "conv2") for p in ("weight", "bias")}
    scratch_keys |= {f"scratch.refinenet{i}.out_conv.{p}" for i in range(1, 5) for p in ("weight", "bias")}
    scratch_keys |= {f"scratch.output_conv.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")}
    assert set(state) == reference_keys | scratch_keys
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - 21.3) < 0.1  # MiDaS README: 21M


def test_midas_small_features_at_256x512():
    model = build_visual_backbone("midas_small").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 256, 512))
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {"rel_depth": (1, 1, 256, 512), "out_conv": (1, 32, 256, 512), "bottleneck": (1, 512, 8, 16),
                      "r4": (1, 256, 16, 32), "r3": (1, 128, 32, 64), "r2": (1, 64, 64, 128), "r1": (1, 64, 128, 256)}
    assert model.channels == {"out_conv": 32, "bottleneck": 512, "r4": 256, "r3": 128, "r2": 64, "r1": 64}
    assert (out["rel_depth"] >= 0).all() and (out["out_conv"] >= 0).all()  # ReLU outputs


def fake_midas_file(tmp_path, wrap: bool = False):
    """A midas_v21_small_256.pt stand-in: the geffnet-built encoder + a random scratch, saved like MiDaS releases."""
    encoder = midas_encoder_from(reference_lite3())
    donor = MidasSmall()
    state = {f"pretrained.{k}": v for k, v in encoder.state_dict().items()}
    state.update({k: v for k, v in donor.state_dict().items() if k.startswith("scratch.")})
    path = tmp_path / "midas_v21_small_256.pt"
    torch.save({"model": state, "optimizer": {}} if wrap else state, path)
    return path, state


@pytest.mark.parametrize("wrap", [False, True])
def test_load_midas_weights_from_local_file(tmp_path, wrap):
    path, state = fake_midas_file(tmp_path, wrap)
    model = MidasSmall()
    load_midas_weights(model, path)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_load_midas_weights_names_missing_unexpected_and_misshapen_keys(tmp_path):
    path, state = fake_midas_file(tmp_path)
    del state["scratch.output_conv.4.weight"]
    state["scratch.extra.weight"] = torch.zeros(1)
    state["scratch.layer1_rn.weight"] = torch.zeros(8, 32, 3, 3)
    torch.save(state, path)
    with pytest.raises(ValueError) as info:
        load_midas_weights(MidasSmall(), path)
    message = str(info.value)
    for key in ("scratch.output_conv.4.weight", "scratch.extra.weight", "scratch.layer1_rn.weight"):
        assert key in message
    with pytest.raises(FileNotFoundError):
        load_midas_weights(MidasSmall(), tmp_path / "absent.pt")


def test_unknown_backbone_and_dpt_without_timm():
    with pytest.raises(ValueError, match="unknown visual backbone 'resnet'"):
        build_visual_backbone("resnet")
    try:
        import timm  # noqa: F401
    except Exception:
        with pytest.raises(ValueError, match=r"dpt_beit_l_384.*timm"):
            build_visual_backbone("dpt_beit_l_384")
    else:
        model = build_visual_backbone("dpt_beit_b_384")
        assert model.channels["bottleneck"] == 256


def test_beit_relative_position_index_and_bias():
    index = relative_position_index((2, 3))
    n_rel = (2 * 2 - 1) * (2 * 3 - 1) + 3
    assert index.shape == (7, 7)
    assert index[0, 0] == n_rel - 1 and index[0, 1] == n_rel - 3 and index[1, 0] == n_rel - 2
    # patch (0,0) vs itself -> (dy, dx) = (0, 0) -> (0 + 1) * 5 + (0 + 2) = 7; patch (1,2) vs (0,0) -> (1+1)*5 + (2+2) = 14
    assert index[1, 1] == 7 and index[6, 1] == 14
    attn = types.SimpleNamespace(window_size=(2, 3), relative_position_bias_table=torch.randn(n_rel, 4))
    bias = resized_relative_position_bias(attn, (2, 3))
    assert bias.shape == (1, 4, 7, 7)
    torch.testing.assert_close(bias[0, :, 6, 1], attn.relative_position_bias_table[14])  # same grid: no interpolation
    assert resized_relative_position_bias(attn, (3, 5)).shape == (1, 4, 16, 16)


class FakeBeitAttention(nn.Module):
    def __init__(self, dim, heads, window):
        super().__init__()
        self.num_heads, self.scale, self.window_size = heads, (dim // heads) ** -0.5, window
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.randn(dim)), nn.Parameter(torch.randn(dim))
        self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
        self.relative_position_bias_table = nn.Parameter(torch.randn((2 * window[0] - 1) * (2 * window[1] - 1) + 3, heads))
        self.proj = nn.Linear(dim, dim)

    def reference(self, x):
        """Plain BEiT attention at the trained window (timm's formula), for comparison."""
        b, n, c = x.shape
        qkv = nn.functional.linear(x, self.qkv.weight, torch.cat((self.q_bias, self.k_bias, self.v_bias)))
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        index = relative_position_index(self.window_size)
        bias = self.relative_position_bias_table[index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        attn = ((q * self.scale) @ k.transpose(-2, -1) + bias).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class FakeBeit(nn.Module):
    """Attribute layout of timm's Beit (patch_embed.proj, cls_token, blocks[i].attn/norm1/mlp/gamma_1...), tiny widths."""

    def __init__(self, dim=32, depth=4, window=(4, 4)):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj, self.patch_embed.norm = nn.Conv2d(3, dim, 16, 16), nn.Identity()
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embed, self.rel_pos_bias, self.pos_drop = None, None, nn.Identity()
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            block = nn.Module()
            block.norm1, block.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            block.attn = FakeBeitAttention(dim, 4, window)
            block.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
            block.gamma_1, block.gamma_2 = nn.Parameter(torch.rand(dim)), nn.Parameter(torch.rand(dim))
            block.drop_path = nn.Identity()
            self.blocks.append(block)

    def reference_tokens(self, x):
        t = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat((self.cls_token.expand(t.shape[0], -1, -1), t), 1)
        out = []
        for block in self.blocks:
            t = t + block.gamma_1 * block.attn.reference(block.norm1(t))
            t = t + block.gamma_2 * block.mlp(block.norm2(t))
            out.append(t)
        return out


def test_dpt_beit_plumbing_with_a_stand_in_for_timm(monkeypatch):
    fake = FakeBeit()
    monkeypatch.setattr(midas_module, "import_timm", lambda name: types.SimpleNamespace(create_model=lambda *a, **k: fake))
    monkeypatch.setitem(midas_module.BEIT_SETTINGS, "dpt_beit_l_384", ("fake", (0, 1, 2, 3), (8, 16, 32, 32), 32))
    model = build_visual_backbone("dpt_beit_l_384").eval()
    x = torch.randn(2, 3, 64, 64)  # 4x4 patches = the fake's trained window
    with torch.no_grad():
        tokens = midas_module.beit_hooked_tokens(fake, x, (0, 1, 2, 3))
        for a, b in zip(tokens, fake.reference_tokens(x), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        out = model(torch.randn(1, 3, 64, 128))  # non-square: relative position table interpolated to 4x8
    assert tuple(out["bottleneck"].shape) == (1, 256, 2, 4)
    assert tuple(out["r4"].shape) == (1, 256, 4, 8) and tuple(out["r1"].shape) == (1, 256, 32, 64)
    assert tuple(out["rel_depth"].shape) == (1, 1, 64, 128) and tuple(out["out_conv"].shape) == (1, 32, 64, 128)
    keys = set(model.state_dict())
    assert {"pretrained.act_postprocess1.0.project.0.weight", "pretrained.act_postprocess1.3.weight",
            "pretrained.act_postprocess1.4.weight", "pretrained.act_postprocess4.4.weight", "scratch.layer4_rn.weight",
            "scratch.output_conv.4.weight"} <= keys
    assert len(model.relative_position_parameters()) == 4
