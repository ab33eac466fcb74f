"""EchoRescaleHead: two pixel-wise rescale maps A and B from frozen image features fused with echo tokens (TR2M's ScaleMap
head, Cui et al. CVPR 2026, with the binaural echo in place of the text embedding).

TR2M (scalemap_depth.py of the authors' release) turns a relative inverse depth D_r into metric depth with
M = 1 / (A * D_r + B), A and B positive maps at the input resolution from: image tokens -> one pre-LayerNorm block
(self-attention over the image tokens, cross-attention to the condition tokens, MLP 4x with QuickGELU) -> a shared
upsampling trunk (1x1, ConvTranspose x2, 3x3, then twice residual conv unit + 1x1 + bilinear x2) -> two heads with the
same layout (3x3 "mid" features, bilinear to the input size, 3x3, ReLU, 1x1, coef * exp). Here:

- image tokens: a frozen feature map of a trained network (models/rescale_frontend.py: the MiDaS decoder of an AVS-Net),
  plus a fixed 2-D sine position code (TR2M adds none; our grids are coarse);
- condition tokens: echo tokens (the frozen ResNet-18 STFT encoder of an RGB-Echoes AVS-Net, with its range-profile
  tokens if it has them) with a learned position embedding, or, without echoes, one learned constant token (the
  `pixel_maps_rgb` ablation);
- widths sized for 2 CPU cores (`dim` 64, 4 heads, trunk 48/32 channels instead of TR2M's 1024/8, 192/128);
- the heads' last 1x1 convolution starts at zero (a = b = 0) and the scale is relative to a per-image global scale k
  (`anchor: global`, the default): A = k * exp(a), B = k * shift_coef * exp(b), so at step 0 the output is the global
  scaling it is given (the RGB-Echoes median scale) up to the small shift, and training learns pixel-wise corrections.
  `anchor: fitted` is TR2M's pure form, A = coef_scale * exp(a), B = coef_shift * exp(b), with the coefficients set
  from the training set's per-frame least-squares fits (TR2M's constant 0.01 is tuned to DepthAnything's range);
- `form: disparity` is TR2M's M = 1 / (A * r + B) on the relative disparity r normalised to median 1 per image;
  `form: depth` is M = A * (1 / r) + B (normalised relative depth), the other documented option;
- `guidance` (a deviation option; TR2M has no second depth map): full-resolution maps concatenated before the heads'
  last layers: "relative" (log r) and "pseudo_metric" (log of the RGB-Echoes AVS-Net's metric map over the global
  result), so the head can take the echo network's own pixel-wise opinion where it helps.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from avs_depth_core.checkpoint import load_checkpoint, save_checkpoint
from avs_depth_core.config import check_fields, dataclass_from_dict
from avs_depth_core.models.midas import ResidualConvUnit

CHECKPOINT_KIND = "echo_rescale_head"
FORMS = ("disparity", "depth")
ANCHORS = ("global", "fitted")
GUIDANCE = ("relative", "pseudo_metric")


@dataclass
class RescaleHeadConfig:
    """The `model:` section of config/rescale.yaml (frozen parts: `frontend`, models/rescale_frontend.py)."""

    image_channels: int = 32  # channels of the frozen image feature map (set from the front end)
    echo_channels: int = 128  # channels of the echo tokens (set from the front end)
    echo_tokens: int = 8  # number of echo tokens (learned position embedding per token)
    use_echo: bool = True  # False: one learned constant token instead of the echo (pixel_maps_rgb)
    dim: int = 64  # fusion width (TR2M 1024; the echo spec 256; 64 for 2 CPU cores)
    heads: int = 4  # attention heads (TR2M 8)
    mlp_ratio: int = 4  # TR2M
    trunk_channels: tuple[int, int] = (48, 32)  # TR2M 192, 128
    mid_channels: int = 32  # TR2M 64 (the "mid" maps the pixel contrast reads)
    form: str = "disparity"  # disparity: M = 1 / (A r + B) (TR2M); depth: M = A / r + B
    anchor: str = "global"  # global: A = k exp(a) (starts at the given global scale); fitted: A = coef_scale exp(a) (TR2M)
    coef_scale: float = 1.0  # anchor fitted: set from the training fits (build); TR2M 0.01
    coef_shift: float = 0.01  # anchor fitted: B = coef_shift exp(b); anchor global: B = k coef_shift exp(b) (TR2M 0.01)
    guidance: list[str] = field(default_factory=list)  # full-resolution maps given to the heads (GUIDANCE)
    max_log_correction: float = 3.0  # a and b clamped to +-this (exp(3) = 20x): keeps M finite when training diverges

    def __post_init__(self) -> None:
        check_fields(self)
        if self.form not in FORMS:
            raise ValueError(f"model.form must be one of {list(FORMS)}, got {self.form!r}")
        if self.anchor not in ANCHORS:
            raise ValueError(f"model.anchor must be one of {list(ANCHORS)}, got {self.anchor!r}")
        unknown = [g for g in self.guidance if g not in GUIDANCE]
        if unknown:
            raise ValueError(f"model.guidance: unknown map(s) {unknown}; choose from {list(GUIDANCE)}")
        if "pseudo_metric" in self.guidance and not self.use_echo:
            raise ValueError("model.guidance pseudo_metric is the RGB-Echoes network's map; it needs model.use_echo true")
        if self.dim % self.heads:
            raise ValueError(f"model.dim {self.dim} must be a multiple of model.heads {self.heads}")
        for key in ("image_channels", "echo_channels", "echo_tokens", "dim", "heads", "mlp_ratio", "mid_channels"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key} must be positive, got {getattr(self, key)}")
        if self.coef_scale <= 0 or self.coef_shift <= 0 or self.max_log_correction <= 0:
            raise ValueError("model.coef_scale, model.coef_shift and model.max_log_correction must be positive")

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config model") -> RescaleHeadConfig:
        return dataclass_from_dict(cls, values, where, prefix="model.")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["trunk_channels"] = list(self.trunk_channels)
        return d


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """CLIP's GELU approximation, as TR2M's block uses."""
    return x * torch.sigmoid(1.702 * x)


def sine_positions(h: int, w: int, dim: int, device: torch.device) -> torch.Tensor:
    """Fixed 2-D sine/cosine position code (h*w, dim): half the channels for y, half for x (DETR style)."""
    quarter = dim // 4
    freq = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / max(quarter, 1)))
    ys = torch.arange(h, device=device, dtype=torch.float32)[:, None] * freq
    xs = torch.arange(w, device=device, dtype=torch.float32)[:, None] * freq
    y = torch.cat([ys.sin(), ys.cos()], 1)[:, None, :].expand(h, w, 2 * quarter)
    x = torch.cat([xs.sin(), xs.cos()], 1)[None, :, :].expand(h, w, 2 * quarter)
    pos = torch.cat([y, x], -1).reshape(h * w, 4 * quarter)
    return F.pad(pos, (0, dim - pos.shape[1]))


class FusionBlock(nn.Module):
    """TR2M's cross-modality block (sequential, pre-LayerNorm, residual): self-attention over the image tokens,
    cross-attention from them to the condition tokens, MLP with QuickGELU."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1, self.norm_visual, self.norm_cond, self.norm2 = (nn.LayerNorm(dim) for _ in range(4))
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(dim, dim * mlp_ratio), nn.Linear(dim * mlp_ratio, dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        c = self.norm_cond(cond)
        x = x + self.cross_attn(self.norm_visual(x), c, c, need_weights=False)[0]
        return x + self.fc2(quick_gelu(self.fc1(self.norm2(x))))


class Trunk(nn.Module):
    """The shared upsampling part: 1x1 -> ConvTranspose x2 -> 3x3 -> 2 x (RCU, 1x1, bilinear x2): x8 in all."""

    def __init__(self, dim: int, channels: tuple[int, int]) -> None:
        super().__init__()
        c1, c2 = channels
        self.project = nn.Conv2d(dim, c1, 1)
        self.up = nn.ConvTranspose2d(c1, c1, 2, stride=2)
        self.conv = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
        self.rcu1, self.out1 = ResidualConvUnit(c2), nn.Conv2d(c2, c2, 1)
        self.rcu2, self.out2 = ResidualConvUnit(c2), nn.Conv2d(c2, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.up(self.project(x)))
        x = F.interpolate(self.out1(self.rcu1(x)), scale_factor=2, mode="bilinear", align_corners=True)
        return F.interpolate(self.out2(self.rcu2(x)), scale_factor=2, mode="bilinear", align_corners=True)


class MapHead(nn.Module):
    """3x3 -> mid features; bilinear to the output size; [+ guidance maps]; 3x3, ReLU, 1x1 [+ 1x1 of the guidance] -> one
    log-correction map. The last layers start at zero, so the map starts at exp(0) = 1 times its anchor."""

    def __init__(self, channels: int, mid: int, guidance: int) -> None:
        super().__init__()
        self.mid = nn.Conv2d(channels, mid, 3, padding=1)
        self.conv = nn.Conv2d(mid + guidance, 16, 3, padding=1)
        self.out = nn.Conv2d(16, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        # A linear path from the guidance maps to the output (zero at start): a per-pixel blend of the guidance is then
        # one weight away instead of having to pass the ReLU layer (which took hundreds of steps to learn).
        self.skip = nn.Conv2d(guidance, 1, 1, bias=False) if guidance else None
        if self.skip is not None:
            nn.init.zeros_(self.skip.weight)

    def forward(self, x: torch.Tensor, size: tuple[int, int], guidance: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        mid = self.mid(x)
        y = F.interpolate(mid, size=size, mode="bilinear", align_corners=True)
        if guidance is None:
            return self.out(F.relu(self.conv(y))), mid
        return self.out(F.relu(self.conv(torch.cat([y, guidance], 1)))) + self.skip(guidance), mid


class EchoRescaleHead(nn.Module):
    """forward(image_features (B,Cv,h,w), echo_tokens (B,N,Ce) or None, rel_disparity r (B,1,H,W) normalised to median 1,
    global_scale k (B,) in 1/m (1 / (k r) is the global median result; ignored for anchor fitted),
    pseudo_metric_log (B,1,H,W) or None) -> {"metric_depth", "scale_map" A, "shift_map" B, "embedding" (B,dim), "mid" }."""

    def __init__(self, cfg: RescaleHeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.image_proj = nn.Linear(cfg.image_channels, d)
        if cfg.use_echo:
            self.echo_proj = nn.Linear(cfg.echo_channels, d)
            self.echo_pos = nn.Parameter(torch.zeros(1, cfg.echo_tokens, d))
            nn.init.normal_(self.echo_pos, std=0.02)
        else:
            self.constant_token = nn.Parameter(torch.zeros(1, 1, d))
            nn.init.normal_(self.constant_token, std=0.02)
        self.block = FusionBlock(d, cfg.heads, cfg.mlp_ratio)
        self.trunk = Trunk(d, tuple(cfg.trunk_channels))
        self.scale_head = MapHead(cfg.trunk_channels[1], cfg.mid_channels, len(cfg.guidance))
        self.shift_head = MapHead(cfg.trunk_channels[1], cfg.mid_channels, len(cfg.guidance))
        # Projectors of the scale-oriented contrast (training only; TR2M's contrast modules are not public: project choice,
        # a 2-layer MLP d -> d -> 32 for the image embedding, 1x1 convolutions mid -> mid -> 32 for the pixel features).
        self.image_projector = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, 32))
        self.pixel_projector = nn.Sequential(nn.Conv2d(cfg.mid_channels, cfg.mid_channels, 1), nn.ReLU(inplace=True),
                                             nn.Conv2d(cfg.mid_channels, 32, 1))
        self._init_weights()
        self.checkpoint_meta: dict[str, Any] = {}

    def _init_weights(self) -> None:
        """TR2M's init (kaiming fan_out for convolutions, xavier for linear layers, zero biases), except the heads' last
        layers, which stay at zero (start from the anchor)."""
        for m in self.modules():
            zero = (self.scale_head.out, self.shift_head.out, self.scale_head.skip, self.shift_head.skip)
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and all(m is not z for z in zero):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def condition(self, echo_tokens: torch.Tensor | None, batch: int) -> torch.Tensor:
        if not self.cfg.use_echo:
            if echo_tokens is not None:
                raise ValueError("EchoRescaleHead: this head is built without echoes (use_echo false); pass echo_tokens=None")
            return self.constant_token.expand(batch, -1, -1)
        if echo_tokens is None or echo_tokens.shape[1:] != (self.cfg.echo_tokens, self.cfg.echo_channels):
            got = None if echo_tokens is None else tuple(echo_tokens.shape)
            raise ValueError(f"EchoRescaleHead: expected echo tokens (B, {self.cfg.echo_tokens}, {self.cfg.echo_channels}), "
                             f"got {got}")
        return quick_gelu(self.echo_proj(echo_tokens)) + self.echo_pos

    def forward(self, image_features: torch.Tensor, echo_tokens: torch.Tensor | None, rel_disparity: torch.Tensor,
                global_scale: torch.Tensor | None = None, pseudo_metric_log: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        b, _, h, w = image_features.shape
        size = tuple(rel_disparity.shape[-2:])
        tokens = self.image_proj(image_features.flatten(2).transpose(1, 2))
        tokens = tokens + sine_positions(h, w, cfg.dim, tokens.device).to(tokens.dtype)
        fused = self.block(tokens, self.condition(echo_tokens, b))
        x = self.trunk(fused.transpose(1, 2).reshape(b, cfg.dim, h, w))
        guidance = self.guidance_maps(rel_disparity, pseudo_metric_log)
        a, mid = self.scale_head(x, size, guidance)
        s, _ = self.shift_head(x, size, guidance)
        limit = cfg.max_log_correction
        a, s = a.clamp(-limit, limit), s.clamp(-limit, limit)
        if cfg.anchor == "global":
            if global_scale is None:
                raise ValueError("EchoRescaleHead: anchor global needs global_scale (B,)")
            k = global_scale.view(b, 1, 1, 1).to(a.dtype)
            if cfg.form == "depth":  # 1 / (k r) = (1 / k) * (1 / r): the same global result in depth form
                k = 1.0 / k
            scale_map, shift_map = k * torch.exp(a), k * cfg.coef_shift * torch.exp(s)
        else:
            scale_map, shift_map = cfg.coef_scale * torch.exp(a), cfg.coef_shift * torch.exp(s)
        if cfg.form == "disparity":
            metric = 1.0 / (scale_map * rel_disparity + shift_map)
        else:
            metric = scale_map / rel_disparity + shift_map
        return {"metric_depth": metric, "scale_map": scale_map, "shift_map": shift_map, "log_scale": a, "log_shift": s,
                "embedding": fused.mean(1), "mid": mid}

    def guidance_maps(self, rel_disparity: torch.Tensor, pseudo_metric_log: torch.Tensor | None) -> torch.Tensor | None:
        maps = []
        for name in self.cfg.guidance:
            if name == "relative":
                maps.append(torch.log(rel_disparity.clamp_min(1e-6)))
            else:
                if pseudo_metric_log is None:
                    raise ValueError("EchoRescaleHead: guidance pseudo_metric needs pseudo_metric_log (B,1,H,W)")
                maps.append(pseudo_metric_log)
        return torch.cat(maps, 1) if maps else None

    # ----------------------------------------------------------------------------------------------------- checkpoints
    def save(self, path: str | Path, frontend: dict[str, Any], meta: dict[str, Any] | None = None) -> Path:
        """<stem>.safetensors + <stem>.json: the head's config and the front end's (which frozen checkpoints feed it)."""
        return save_checkpoint(path, self.state_dict(), {"head": self.cfg.to_dict(), "frontend": frontend},
                               CHECKPOINT_KIND, meta or {})

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> tuple[EchoRescaleHead, dict[str, Any]]:
        """-> (head in eval mode, the stored front-end config). A wrong kind or mismatching weights raise ValueError."""
        state, config, kind, meta = load_checkpoint(path)
        if kind != CHECKPOINT_KIND:
            raise ValueError(f"{path}: checkpoint kind is {kind!r}, expected {CHECKPOINT_KIND!r}")
        if not isinstance(config, dict) or "head" not in config or "frontend" not in config:
            raise ValueError(f"{path}: config must hold 'head' and 'frontend' sections")
        head = cls(RescaleHeadConfig.from_dict(dict(config["head"]), where=f"{path} config head"))
        missing, unexpected = head.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: weights do not match the stored head config: missing {missing[:6]}, "
                             f"unexpected {unexpected[:6]}")
        head.checkpoint_meta = meta
        return head.to(device).eval(), dict(config["frontend"])


def normalised_disparity(relative: torch.Tensor, kind: str, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Relative map (B,1,H,W) -> relative disparity divided by its per-image median over `valid` (finite, > 0) pixels,
    so the head's scale does not depend on the relative model's arbitrary units. kind: "depth" (r = 1/R) or
    "disparity"."""
    if kind not in ("depth", "disparity"):
        raise ValueError(f"relative kind must be 'depth' or 'disparity', got {kind!r}")
    r = 1.0 / relative.clamp_min(1e-6) if kind == "depth" else relative.clamp_min(1e-6)
    ok = torch.isfinite(r) & (r > 0)
    if valid is not None:
        ok = ok & valid
    medians = torch.stack([r[i][ok[i]].median() if ok[i].any() else r.new_tensor(math.nan) for i in range(r.shape[0])])
    if not torch.isfinite(medians).all():
        raise ValueError("normalised_disparity: an image has no finite positive relative value")
    return r / medians.view(-1, 1, 1, 1)
