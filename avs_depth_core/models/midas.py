"""MiDaS relative depth networks in plain torch, with the parameter names of the published MiDaS checkpoints.

`MidasSmall` is MiDaS v2.1 small (isl-org/MiDaS midas/midas_net_custom.py + blocks.py): EfficientNet-Lite3 encoder
as `pretrained.layer1..4` and the RefineNet-style decoder as `scratch`, so midas_v21_small_256.pt loads with
`load_midas_weights`. The DPT/BEiT backbones (ZoeDepth's DPT_BEiT_L_384) need timm and are built only when it imports.

Every network returns its features explicitly instead of through forward hooks (ZoeDepth's MidasCore hooks a ReLU that
MiDaS-small shares between blocks, zoedepth/models/base_models/midas.py): rel_depth (B,1,H,W) relative inverse depth;
out_conv (B,32,H,W), the ReLU
after the head's 32-channel conv; bottleneck = scratch.layer4_rn (1/32); r4..r1 = refinenet4..1 outputs (1/16 .. 1/2).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from avs_depth_core.checkpoint import load_torch_weights
from avs_depth_core.models.efficientnet_lite import EfficientNetLite

VISUAL_BACKBONES = ("midas_small", "tiny", "dpt_beit_l_384", "dpt_beit_l_512", "dpt_beit_b_384")
# MiDaS hubconf/dpt_depth.py: timm model, hooked blocks, reassemble widths, transformer width.
BEIT_SETTINGS = {
    "dpt_beit_l_384": ("beit_large_patch16_384", (5, 11, 17, 23), (256, 512, 1024, 1024), 1024),
    "dpt_beit_l_512": ("beit_large_patch16_512", (5, 11, 17, 23), (256, 512, 1024, 1024), 1024),
    "dpt_beit_b_384": ("beit_base_patch16_384", (2, 5, 8, 11), (96, 192, 384, 768), 768),
}
HEAD_CHANNELS = 32  # ZoeDepth N_MIDAS_OUT: channels of the out_conv features


class Interpolate(nn.Module):
    """Parameter-free resize inside MiDaS's output_conv Sequential (keeps the checkpoint's layer indices)."""

    def __init__(self, scale_factor: float, align_corners: bool) -> None:
        super().__init__()
        self.scale_factor = scale_factor
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear", align_corners=self.align_corners)


class ResidualConvUnit(nn.Module):
    """MiDaS ResidualConvUnit_custom without BN: x + conv2(relu(conv1(relu(x))))."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, 1, 1, bias=True)
        self.conv2 = nn.Conv2d(features, features, 3, 1, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(F.relu(x)))) + x


class FeatureFusionBlock(nn.Module):
    """MiDaS FeatureFusionBlock_custom (bn=False): add the refined skip, refine, upsample (bilinear, align_corners), 1x1 conv.

    With expand (MiDaS small) the 1x1 conv halves the channels.
    """

    def __init__(self, features: int, expand: bool = False) -> None:
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features)  # unused by refinenet4, present in the checkpoints
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features // 2 if expand else features, 1, bias=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        size = size if size is not None else (2 * x.shape[-2], 2 * x.shape[-1])
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


def make_scratch(in_channels: tuple[int, ...] | list[int], features: int, expand: bool, head_align_corners: bool) -> nn.Module:
    """MiDaS `scratch`: layerN_rn (3x3, no bias) to the decoder widths, refinenet4..1 and the depth head output_conv."""
    widths = [features * m for m in (1, 2, 4, 8)] if expand else [features] * 4
    scratch = nn.Module()
    for i, (cin, cout) in enumerate(zip(in_channels, widths, strict=True), start=1):
        setattr(scratch, f"layer{i}_rn", nn.Conv2d(cin, cout, 3, 1, 1, bias=False))
    for i, width in enumerate(widths, start=1):
        setattr(scratch, f"refinenet{i}", FeatureFusionBlock(width, expand=expand and i > 1))
    scratch.output_conv = nn.Sequential(
        nn.Conv2d(features, features // 2, 3, 1, 1),
        Interpolate(2, head_align_corners),
        nn.Conv2d(features // 2, HEAD_CHANNELS, 3, 1, 1),
        nn.ReLU(),
        nn.Conv2d(HEAD_CHANNELS, 1, 1),
        nn.ReLU(),  # non_negative=True
        nn.Identity(),
    )
    return scratch


class RelativeDepthNet(nn.Module):
    """Encoder `pretrained` + decoder `scratch`; subclasses implement encode(x) -> 4 encoder maps (1/4, 1/8, 1/16, 1/32)."""

    pretrained: nn.Module
    scratch: nn.Module

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    @property
    def channels(self) -> dict[str, int]:
        s = self.scratch
        return {"out_conv": HEAD_CHANNELS, "bottleneck": s.layer4_rn.out_channels, "r4": s.refinenet4.out_conv.out_channels,
                "r3": s.refinenet3.out_conv.out_channels, "r2": s.refinenet2.out_conv.out_channels,
                "r1": s.refinenet1.out_conv.out_channels}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: normalised image (B,3,H,W), H and W multiples of 32."""
        s = self.scratch
        l1, l2, l3, l4 = self.encode(x)
        l1, l2, l3, bottleneck = s.layer1_rn(l1), s.layer2_rn(l2), s.layer3_rn(l3), s.layer4_rn(l4)
        r4 = s.refinenet4(bottleneck, size=l3.shape[-2:])
        r3 = s.refinenet3(r4, l3, size=l2.shape[-2:])
        r2 = s.refinenet2(r3, l2, size=l1.shape[-2:])
        r1 = s.refinenet1(r2, l1)
        out_conv = s.output_conv[:4](r1)
        rel_depth = s.output_conv[4:](out_conv)
        return {"rel_depth": rel_depth, "out_conv": out_conv, "bottleneck": bottleneck, "r4": r4, "r3": r3, "r2": r2, "r1": r1}


class MidasSmall(RelativeDepthNet):
    """MiDaS v2.1 small (MidasNet_small: features 64, efficientnet_lite3, expand=True, non_negative=True).

    Encoder split as MiDaS `_make_efficientnet_backbone`: layer1 = stem, bn1, act1, stages 0-1 (1/4); layer2 = stage 2 (1/8);
    layer3 = stages 3-4 (1/16); layer4 = stages 5-6 (1/32). The defaults give the published network (21.3M parameters);
    smaller multipliers give the test-sized variant.
    """

    def __init__(self, features: int = 64, channel_multiplier: float = 1.2, depth_multiplier: float = 1.4,
                 stem_channels: int = 32) -> None:
        super().__init__()
        effnet = EfficientNetLite(channel_multiplier, depth_multiplier, stem_channels)
        self.pretrained = nn.Module()
        self.pretrained.layer1 = nn.Sequential(effnet.conv_stem, effnet.bn1, effnet.act1, *effnet.blocks[0:2])
        self.pretrained.layer2 = nn.Sequential(*effnet.blocks[2:3])
        self.pretrained.layer3 = nn.Sequential(*effnet.blocks[3:5])
        self.pretrained.layer4 = nn.Sequential(*effnet.blocks[5:7])
        c = effnet.stage_channels
        # MiDaS's output_conv Interpolate keeps align_corners=False (blocks.Interpolate default).
        self.scratch = make_scratch((c[1], c[2], c[4], c[6]), features, expand=True, head_align_corners=False)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        p = self.pretrained
        l1 = p.layer1(x)
        l2 = p.layer2(l1)
        l3 = p.layer3(l2)
        return [l1, l2, l3, p.layer4(l3)]


class ProjectReadout(nn.Module):
    """DPT readout 'project' (MiDaS backbones/utils.py): concat each patch token with the class token, Linear + GELU."""

    def __init__(self, width: int, start_index: int = 1) -> None:
        super().__init__()
        self.start_index = start_index
        self.project = nn.Sequential(nn.Linear(2 * width, width), nn.GELU())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, self.start_index:]
        readout = tokens[:, :1].expand_as(patches)
        return self.project(torch.cat((patches, readout), -1))


def relative_position_index(grid: tuple[int, int]) -> torch.Tensor:
    """BEiT relative position index for a (gh, gw) patch grid plus the class token (3 extra table rows for cls relations)."""
    gh, gw = grid
    n_rel = (2 * gh - 1) * (2 * gw - 1) + 3
    coords = torch.stack(torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    flat = (rel[..., 0] + gh - 1) * (2 * gw - 1) + (rel[..., 1] + gw - 1)
    index = torch.zeros((gh * gw + 1,) * 2, dtype=torch.long)
    index[1:, 1:] = flat
    index[0, 0:] = n_rel - 3
    index[0:, 0] = n_rel - 2
    index[0, 0] = n_rel - 1
    return index


def resized_relative_position_bias(attn: nn.Module, grid: tuple[int, int]) -> torch.Tensor:
    """(1, heads, N+1, N+1) bias for any patch grid: MiDaS v3.1 interpolates the trained table (bilinear) to the new window."""
    table = attn.relative_position_bias_table
    old_h, old_w = (2 * attn.window_size[0] - 1), (2 * attn.window_size[1] - 1)
    new_h, new_w = 2 * grid[0] - 1, 2 * grid[1] - 1
    sub = table[: old_h * old_w].reshape(1, old_h, old_w, -1).permute(0, 3, 1, 2)
    sub = F.interpolate(sub, size=(new_h, new_w), mode="bilinear").permute(0, 2, 3, 1).reshape(new_h * new_w, -1)
    table = torch.cat([sub, table[old_h * old_w:]])
    index = relative_position_index(grid).to(table.device)
    n = grid[0] * grid[1] + 1
    return table[index.view(-1)].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)


def _beit_attention(attn: nn.Module, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    b, n, _ = x.shape
    bias = None
    if attn.q_bias is not None:
        k_bias = getattr(attn, "k_bias", None)
        bias = torch.cat((attn.q_bias, torch.zeros_like(attn.q_bias) if k_bias is None else k_bias, attn.v_bias))
    qkv = F.linear(x, attn.qkv.weight, bias).reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    mask = resized_relative_position_bias(attn, grid).to(q.dtype) if attn.relative_position_bias_table is not None else None
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scale)
    return attn.proj(out.transpose(1, 2).reshape(b, n, -1))


def _drop_path(block: nn.Module, index: int) -> nn.Module:
    # timm 0.6 has one `drop_path`, timm >= 0.9 has drop_path1/drop_path2 (ZoeDepth issues #70 #72).
    module = getattr(block, f"drop_path{index}", None)
    return module if module is not None else block.drop_path


def beit_hooked_tokens(beit: nn.Module, x: torch.Tensor, hooks: tuple[int, ...]) -> list[torch.Tensor]:
    """Tokens (B, 1+N, C) after the hooked blocks of a timm Beit, at any input size that is a multiple of 16.

    Same computation as MiDaS v3.1's patched Beit.forward_features (arbitrary window sizes), written without monkey-patching.
    """
    grid = (x.shape[-2] // 16, x.shape[-1] // 16)
    tokens = beit.patch_embed.norm(beit.patch_embed.proj(x).flatten(2).transpose(1, 2))
    tokens = torch.cat((beit.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
    if beit.pos_embed is not None:
        tokens = tokens + beit.pos_embed
    tokens = beit.pos_drop(tokens)
    if getattr(beit, "rel_pos_bias", None) is not None:
        raise ValueError("shared relative position bias BEiT variants are not supported (MiDaS uses per-block bias)")
    out = []
    for i, block in enumerate(beit.blocks[: max(hooks) + 1]):
        y = _beit_attention(block.attn, block.norm1(tokens), grid)
        tokens = tokens + _drop_path(block, 1)(y if block.gamma_1 is None else block.gamma_1 * y)
        y = block.mlp(block.norm2(tokens))
        tokens = tokens + _drop_path(block, 2)(y if block.gamma_2 is None else block.gamma_2 * y)
        if i in hooks:
            out.append(tokens)
    return out


class DPTBeit(RelativeDepthNet):
    """MiDaS v3.1 DPT with a BEiT backbone (DPTDepthModel: features 256, readout 'project', use_bn False). Needs timm.

    Keys follow dpt_beit_*.pt: pretrained.model.* (the timm Beit), pretrained.act_postprocess1..4 (readout, reassemble convs
    at indices 3 and 4), scratch.*. Reassemble to 1/4 (ConvTranspose x4), 1/8 (x2), 1/16, 1/32 (3x3 conv stride 2).
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        timm_name, hooks, widths, vit_width = BEIT_SETTINGS[name]
        timm = import_timm(name)
        self.hooks = hooks
        self.pretrained = nn.Module()
        self.pretrained.model = timm.create_model(timm_name, pretrained=False)
        for i, width in enumerate(widths, start=1):
            resample: list[nn.Module] = {
                1: [nn.ConvTranspose2d(width, width, 4, 4)], 2: [nn.ConvTranspose2d(width, width, 2, 2)],
                3: [], 4: [nn.Conv2d(width, width, 3, 2, 1)]}[i]
            # indices 1 and 2 are MiDaS's Transpose/Unflatten (parameter-free); encode() reshapes the tokens itself
            setattr(self.pretrained, f"act_postprocess{i}", nn.Sequential(
                ProjectReadout(vit_width), nn.Identity(), nn.Identity(), nn.Conv2d(vit_width, width, 1), *resample))
        self.scratch = make_scratch(widths, 256, expand=False, head_align_corners=True)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f"DPT input must be a multiple of 32 in each dim, got {tuple(x.shape[-2:])}")
        grid = (x.shape[-2] // 16, x.shape[-1] // 16)
        out = []
        for i, tokens in enumerate(beit_hooked_tokens(self.pretrained.model, x, self.hooks), start=1):
            post = getattr(self.pretrained, f"act_postprocess{i}")
            maps = post[0](tokens).transpose(1, 2).unflatten(2, grid)
            out.append(post[3:](maps))
        return out

    def relative_position_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.pretrained.named_parameters() if "relative_position" in n]


def import_timm(backbone: str):
    try:
        import timm
    except Exception as error:  # timm missing, or broken by a torchvision that does not match torch
        raise ValueError(f"visual backbone '{backbone}' needs timm (MiDaS pins timm==0.6.12), which cannot be imported here "
                         f"({type(error).__name__}: {error}); use backbone 'midas_small' or install timm") from error
    return timm


def build_visual_backbone(name: str) -> RelativeDepthNet:
    """'midas_small' (MiDaS v2.1 small), 'tiny' (same layout, a fraction of the width, for tests) or a DPT BEiT (needs timm)."""
    if name == "midas_small":
        return MidasSmall()
    if name == "tiny":
        return MidasSmall(features=16, channel_multiplier=0.25, depth_multiplier=0.3, stem_channels=8)
    if name in BEIT_SETTINGS:
        return DPTBeit(name)
    raise ValueError(f"unknown visual backbone '{name}'; choose from {', '.join(VISUAL_BACKBONES)}")


def read_midas_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A MiDaS release .pt (a plain state dict, or {'model': ..., 'optimizer': ...}) read with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: MiDaS weights not found")
    state = load_torch_weights(path, "MiDaS weights")
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a MiDaS state dict (expected a mapping of parameter names to tensors)")
    return state


def load_midas_weights(model: RelativeDepthNet, path: str | Path) -> None:
    """Load a MiDaS checkpoint (e.g. midas_v21_small_256.pt) into `model`; any missing, unexpected or misshapen key is an error.

    relative_position_index buffers are skipped where the installed timm no longer stores them (they follow from the window).
    """
    state = read_midas_state_dict(path)
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.endswith("relative_position_index")}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshapen = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                 for k, v in state.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or misshapen:
        raise ValueError(f"{path}: does not fit {type(model).__name__} ({len(missing)} missing {missing[:5]}, "
                         f"{len(unexpected)} unexpected {unexpected[:5]}, {len(misshapen)} misshapen {misshapen[:5]})")
    model.load_state_dict(state, strict=True)
