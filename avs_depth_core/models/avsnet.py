"""AVS-Net (arXiv 2412.01637): ZoeDepth's metric bins on a MiDaS core, with the echo fused into the bottleneck.

    rgb -> MiDaS (relative depth + features) -> bottleneck --CrossModalAttention(echo tokens)--> ZoeDepth metric bins -> metres
    echo STFT (2 ch, image resolution) -> ResNet-18 -> tokens ---------^
With use_echo=False the fusion and audio branch are not built and the network is ZoeDepth itself (the Only-RGB baseline).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from avs_depth_core.audio.chirp import ChirpSpec
from avs_depth_core.audio.features import StftSettings, echo_features, unpack_range_profile
from avs_depth_core.audio.range_profile import MIN_ECHO_RANGE, RANGE_SPACINGS, RangeProfileSettings
from avs_depth_core.audio.window import echo_window_samples
from avs_depth_core.checkpoint import load_checkpoint, save_checkpoint
from avs_depth_core.config import check_fields, dataclass_from_dict, read_yaml_file
from avs_depth_core.metrics import resize_prediction
from avs_depth_core.models.audio_encoder import AudioEncoder
from avs_depth_core.models.fusion import CrossModalAttention
from avs_depth_core.models.metric_bins import BIN_CENTERS_TYPES, MetricBinsHead
from avs_depth_core.models.midas import VISUAL_BACKBONES, DPTBeit, build_visual_backbone, load_midas_weights
from avs_depth_core.models.range_encoder import RangeProfileEncoder

CHECKPOINT_KIND = "avsnet"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class AVSNetConfig:
    """Every architecture number of AVS-Net; defaults are BatVision V2 with MiDaS-small and ZoeD_N's head settings."""

    backbone: str = "midas_small"  # midas_small | tiny | dpt_beit_l_384 | dpt_beit_l_512 | dpt_beit_b_384 (DPT needs timm)
    image_size: tuple[int, int] = (256, 512)  # (H, W) network input; AVS-Net uses 256x512 (paper)
    echo_size: tuple[int, int] | None = None  # spectrogram resize (H, W); None = image_size (AVS-Net resizes to the image)
    use_echo: bool = True  # False: Only-RGB baseline (ZoeDepth)
    min_depth: float = 1e-3  # ZoeDepth dataset bounds
    max_depth: float = 30.0  # BatVision clip: 30 m BV2, 12 m BV1 (BatVision dataloader)
    n_bins: int = 64  # ZoeD_N config_zoedepth.json
    # ZoeD_N uses "softplus"; "normed" (ZoeD_K style, config_zoedepth_kitti.json) keeps every bin inside [min, max],
    # suggested for BatVision
    bin_centers_type: str = "normed"
    bin_embedding_dim: int = 128
    n_attractors: list[int] = field(default_factory=lambda: [16, 8, 4, 1])
    attractor_alpha: float = 1000.0  # ZoeD_N JSON; ZoeDepth's code never applies it (see apply_attractor_alpha)
    attractor_gamma: int = 2
    attractor_kind: str = "mean"
    attractor_type: str = "inv"
    # False = ZoeDepth's code (zoedepth/models/layers/attractor.py): the attractor function is called without alpha and
    # gamma, so its defaults 300 and 2 apply. True = deviation option: apply attractor_alpha and attractor_gamma (the
    # package's behaviour before this key existed; checkpoints saved without the key load with True, see from_checkpoint).
    apply_attractor_alpha: bool = False
    min_temp: float = 0.0212
    max_temp: float = 50.0
    inverse_midas: bool = False
    fusion_heads: int = 8  # not fixed by the paper
    fusion_layer_norm: bool = False  # deviation option: LayerNorm before the attention (not in the paper)
    audio_layers: int = 18  # ResNet-18 (the paper)
    audio_width: int = 64  # ResNet stem width (64 = torchvision's; smaller only for test-sized models)
    # MiDaS-small was trained with ImageNet mean/std; ZoeDepth normalises with 0.5/0.5 for every MiDaS
    # (zoedepth/models/base_models/midas.py).
    # Match the weights: ImageNet for midas_small, 0.5 for the DPT backbones.
    norm_mean: tuple[float, float, float] = IMAGENET_MEAN
    norm_std: tuple[float, float, float] = IMAGENET_STD
    freeze_visual_bn: bool = True  # ZoeD_N freeze_midas_bn: MiDaS BatchNorm stays in eval mode while training
    sample_rate: int = 44100  # BatVision
    speed_of_sound: float = 340.0  # BatVision's loader cut (its dataloader)
    n_fft: int = 512  # BatVision STFT: n_fft 512, win 64, hop 16, magnitude
    win_length: int = 64
    hop_length: int = 16
    stft_log: bool = False  # deviation option: log1p magnitude
    # Deviation option, time of flight (not in the paper): the echo input gains the matched-filter range profile of each
    # ear (audio.range_profile: cross-correlation with the Hann-tapered chirp, envelope, range_bins bins of range
    # t * c / 2 over [0, max_depth), log1p over the noise floor if range_log) as two more channels (packed row-major,
    # audio.features.pack_range_profile), and a range-profile encoder (models.range_encoder) whose range_bins / 8 tokens
    # join the STFT tokens as the cross-attention's keys and values. The chirp_* fields are the matched filter's
    # template; a recording whose EchoStamped announces another chirp is refused when the features are cached.
    echo_range_profile: bool = False
    range_bins: int = 256
    range_log: bool = True
    # Deviation option: "log" spaces the range bins equally in log range over [range_min, max_depth) (audio.range_profile
    # RangeProfileSettings: the same relative resolution for a near room as for a far hall); "linear" (equal bins from 0)
    # is how the option was introduced.
    range_spacing: str = "linear"
    range_min: float = MIN_ECHO_RANGE
    range_encoder_width: int = 64
    # Deviation option (not in the paper): a global log-scale pathway from the echo. A small MLP on the echo tokens (mean
    # and max over the STFT and range tokens) predicts log s; the head's metric depth and bin centres are multiplied by s,
    # so the echo sets the overall scale directly instead of only through the attention on the bottleneck. Its last layer
    # starts at zero (s = 1: the paper's network at initialisation).
    echo_scale_head: bool = False
    chirp_start_hz: float = 20.0  # BatVision's 3 ms linear sweep, 20 Hz - 20 kHz (audio.chirp)
    chirp_end_hz: float = 20_000.0
    chirp_duration_s: float = 0.003
    chirp_method: str = "linear"
    visual_weights: str | None = None  # local MiDaS release .pt (e.g. midas_v21_small_256.pt), loaded at construction
    audio_weights: str | None = None  # local torchvision ResNet .pth (ImageNet init), loaded at construction

    def __post_init__(self) -> None:
        check_fields(self)  # types, and lists/tuples as annotated
        if self.echo_size is None:
            self.echo_size = self.image_size
        self.validate()

    def validate(self) -> None:
        if self.backbone not in VISUAL_BACKBONES:
            raise ValueError(f"backbone: expected one of {VISUAL_BACKBONES}, got {self.backbone!r}")
        for name in ("image_size", "echo_size"):
            size = getattr(self, name)
            if len(size) != 2 or any(s <= 0 or s % 32 for s in size):
                raise ValueError(f"{name}: expected (H, W), positive multiples of 32, got {size}")
        if not 0 < self.min_depth < self.max_depth:
            raise ValueError(f"min_depth/max_depth: need 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}")
        if self.bin_centers_type not in BIN_CENTERS_TYPES:
            raise ValueError(f"bin_centers_type: expected one of {BIN_CENTERS_TYPES}, got {self.bin_centers_type!r}")
        if self.attractor_kind not in ("mean", "sum"):
            raise ValueError(f"attractor_kind: expected 'mean' or 'sum', got {self.attractor_kind!r}")
        if self.attractor_type not in ("inv", "exp"):
            raise ValueError(f"attractor_type: expected 'inv' or 'exp', got {self.attractor_type!r}")
        if not self.apply_attractor_alpha and self.attractor_gamma != 2:
            raise ValueError(f"attractor_gamma: {self.attractor_gamma} has no effect unless apply_attractor_alpha is true "
                             "(ZoeDepth's attractor layers always use gamma 2); set apply_attractor_alpha: true or gamma 2")
        if len(self.n_attractors) != 4 or any(n < 1 for n in self.n_attractors):
            raise ValueError(f"n_attractors: expected 4 positive counts (one per decoder level r4..r1), got {self.n_attractors}")
        if len(self.norm_mean) != 3 or len(self.norm_std) != 3 or any(s <= 0 for s in self.norm_std):
            raise ValueError(f"norm_mean/norm_std: expected 3 values each, std > 0, got {self.norm_mean}, {self.norm_std}")
        positive = ("n_bins", "bin_embedding_dim", "audio_width", "fusion_heads", "sample_rate", "speed_of_sound", "n_fft",
                    "win_length", "hop_length", "max_temp", "attractor_alpha")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if not 0 < self.min_temp < self.max_temp:
            raise ValueError(f"min_temp/max_temp: need 0 < min_temp < max_temp, got {self.min_temp}, {self.max_temp}")
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length: {self.win_length} exceeds n_fft {self.n_fft}")
        if self.echo_range_profile:
            eh, ew = self.echo_size
            if self.range_bins < 8 or self.range_bins % 8 or self.range_bins > eh * ew:
                raise ValueError(f"range_bins: need a multiple of 8 between 8 and echo_size H*W = {eh * ew}, "
                                 f"got {self.range_bins}")
            if self.range_encoder_width < 2 or self.range_encoder_width % 2:
                raise ValueError(f"range_encoder_width: need an even width >= 2, got {self.range_encoder_width}")
            if self.range_spacing not in RANGE_SPACINGS:
                raise ValueError(f"range_spacing: expected one of {RANGE_SPACINGS}, got {self.range_spacing!r}")
            if self.range_spacing == "log" and not 0 < self.range_min < self.max_depth:
                raise ValueError(f"range_min: need 0 < range_min < max_depth {self.max_depth}, got {self.range_min}")
            _ = self.chirp  # ChirpSpec checks the band and the duration

    @property
    def chirp(self) -> ChirpSpec:
        return ChirpSpec(start_hz=self.chirp_start_hz, end_hz=self.chirp_end_hz, duration_s=self.chirp_duration_s,
                         sample_rate=self.sample_rate, method=self.chirp_method)

    @property
    def stft(self) -> StftSettings:
        """The echo features: the STFT settings, and the range profile's with echo_range_profile."""
        profile = RangeProfileSettings(bins=self.range_bins, log=self.range_log, chirp=self.chirp,
                                       spacing=self.range_spacing, min_range=self.range_min) \
            if self.echo_range_profile else None
        return StftSettings(n_fft=self.n_fft, win_length=self.win_length, hop_length=self.hop_length, log=self.stft_log,
                            range_profile=profile)

    @property
    def echo_channels(self) -> int:
        """Channels of the echo input: the STFT of the two ears (and their range profiles with echo_range_profile)."""
        return self.stft.channels(2)

    @property
    def echo_samples(self) -> int:
        """Samples of the echo window after emission: round trip to max_depth (BV2 30 m: 7782)."""
        return echo_window_samples(self.max_depth, self.sample_rate, self.speed_of_sound)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "model config") -> AVSNetConfig:
        """Strict: unknown keys and wrong types are errors naming `where` and the key (avs_depth_core.config)."""
        return dataclass_from_dict(cls, values, where)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | list[str] | None = None) -> AVSNetConfig:
        """The `model:` section of a config YAML, with overrides ({key: value} or ["key=value", ...], values parsed as YAML)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config not found")
        data = read_yaml_file(path) or {}
        if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
            raise ValueError(f"{path}: expected a 'model:' section with AVSNetConfig fields")
        values = dict(data["model"])
        values.update(parse_overrides(overrides))
        return cls.from_dict(values, where=f"{path} model")


def parse_overrides(overrides: dict[str, Any] | list[str] | None) -> dict[str, Any]:
    if overrides is None:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    parsed = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r}: expected key=value")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed


class AVSNetInputs:
    """Input preparation and checks shared by every AVS-Net runtime (the torch module here, the ONNX Runtime session
    in avs_depth_core.backends): they need only `cfg`, so both backends run the same pre-processing code."""

    cfg: AVSNetConfig

    def check_inputs(self, rgb: torch.Tensor, echo: torch.Tensor | None) -> None:
        """Shapes, channel counts, NaN/inf and the [0,1] range; ValueError says what was expected."""
        h, w = self.cfg.image_size
        if not isinstance(rgb, torch.Tensor) or rgb.ndim != 4 or rgb.shape[1] != 3 or tuple(rgb.shape[-2:]) != (h, w):
            shape = tuple(rgb.shape) if isinstance(rgb, torch.Tensor) else type(rgb).__name__
            raise ValueError(f"rgb: expected a (B, 3, {h}, {w}) tensor, got {shape}")
        if not rgb.is_floating_point():
            raise ValueError(f"rgb: expected float values in [0, 1], got dtype {rgb.dtype}")
        bad_rgb = (~torch.isfinite(rgb)).any() | (rgb.amin() < -1e-3) | (rgb.amax() > 1 + 1e-3)
        if self.cfg.use_echo:
            eh, ew = self.cfg.echo_size
            if echo is None:
                raise ValueError("echo: this model fuses the echo (use_echo=True) but no echo was given")
            ch = self.cfg.echo_channels
            if not isinstance(echo, torch.Tensor) or echo.ndim != 4 or echo.shape[1] != ch or tuple(echo.shape[-2:]) != (eh, ew):
                shape = tuple(echo.shape) if isinstance(echo, torch.Tensor) else type(echo).__name__
                what = "magnitude STFT and range profile" if self.cfg.echo_range_profile else "magnitude STFT"
                raise ValueError(f"echo: expected a (B, {ch}, {eh}, {ew}) {what} (2 ears), got {shape}")
            if echo.shape[0] != rgb.shape[0]:
                raise ValueError(f"echo: batch of {echo.shape[0]} does not match the rgb batch of {rgb.shape[0]}")
            bad_echo = (~torch.isfinite(echo)).any()
        elif echo is not None:
            raise ValueError("echo: this is an Only-RGB model (use_echo=False); pass echo=None")
        else:
            bad_echo = torch.zeros((), dtype=torch.bool, device=rgb.device)
        if bool(bad_rgb | bad_echo.to(bad_rgb.device)):  # one device sync for all value checks
            if not torch.isfinite(rgb).all():
                bad = (~torch.isfinite(rgb)).flatten(1).any(1).nonzero().flatten().tolist()
                raise ValueError(f"rgb: NaN or inf in batch item(s) {bad}")
            if bool(bad_rgb):
                raise ValueError(f"rgb: expected values in [0, 1], got [{rgb.amin().item():.3g}, {rgb.amax().item():.3g}] "
                                 "(divide uint8 images by 255)")
            bad = (~torch.isfinite(echo)).flatten(1).any(1).nonzero().flatten().tolist()
            raise ValueError(f"echo: NaN or inf in batch item(s) {bad}")

    def echo_input(self, samples: np.ndarray | list, sample_rate: int, emission_offset: int | list[int] = 0) -> torch.Tensor:
        """Raw binaural samples (2, n) or (B, 2, n) -> the network's echo input (B, 2, *echo_size), via audio.echo_features."""
        batch = [np.asarray(s, dtype=np.float32) for s in samples] if isinstance(samples, list) else None
        if batch is None:
            arr = np.asarray(samples, dtype=np.float32)
            if arr.ndim not in (2, 3):
                raise ValueError(f"echo samples: expected (2, n) or (B, 2, n), got shape {arr.shape}")
            batch = [arr] if arr.ndim == 2 else list(arr)
        offsets = [emission_offset] * len(batch) if isinstance(emission_offset, int) else list(emission_offset)
        if len(offsets) != len(batch):
            raise ValueError(f"emission_offset: {len(offsets)} offsets for {len(batch)} echoes")
        need = self.cfg.echo_samples
        out = []
        for i, (samples_i, offset) in enumerate(zip(batch, offsets, strict=True)):
            if samples_i.ndim != 2 or samples_i.shape[0] != 2:
                raise ValueError(f"echo {i}: expected 2 channels (left, right) x n samples, got shape {samples_i.shape}")
            if samples_i.shape[1] - offset < need:
                raise ValueError(f"echo {i}: {samples_i.shape[1]} samples with emission offset {offset} do not cover the "
                                 f"{need}-sample echo window ({self.cfg.max_depth} m round trip at {self.cfg.sample_rate} Hz)")
            out.append(echo_features(samples_i, sample_rate, expected_rate=self.cfg.sample_rate, max_depth=self.cfg.max_depth,
                                     size=self.cfg.echo_size, emission_offset=offset, speed_of_sound=self.cfg.speed_of_sound,
                                     settings=self.cfg.stft, where=f"echo {i}"))
        return torch.stack(out)

    def image_input(self, rgb: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """uint8 (H,W,3)/(B,H,W,3) or float in [0,1] -> (B,3,*image_size) float in [0,1], and the original (H, W)."""
        x = torch.as_tensor(np.ascontiguousarray(rgb)) if isinstance(rgb, np.ndarray) else rgb
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"rgb: expected (H, W, 3) or (B, H, W, 3) channels-last, got shape {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif not x.is_floating_point():
            raise ValueError(f"rgb: expected uint8 or float in [0, 1], got dtype {x.dtype}")
        x = x.permute(0, 3, 1, 2).float()
        original = (x.shape[-2], x.shape[-1])
        if original != tuple(self.cfg.image_size):
            x = F.interpolate(x, size=self.cfg.image_size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        return x, original


def mirror_inputs(rgb: torch.Tensor, echo: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The mirrored scene: image (B,3,H,W) flipped left-right, ears swapped (STFT channels 0/1, range profiles 2/3)."""
    if echo is None:
        return rgb.flip(-1), None
    return rgb.flip(-1), echo[:, [1, 0, 3, 2][:echo.shape[1]]]


class EchoScaleHead(nn.Module):
    """forward(tokens (B, N, C)) -> log scale (B,): an MLP on the tokens' mean and max (AVSNetConfig.echo_scale_head)."""

    def __init__(self, channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([tokens.mean(dim=1), tokens.amax(dim=1)], dim=1)).squeeze(1)


class AVSNet(AVSNetInputs, nn.Module):
    """forward(rgb (B,3,H,W) in [0,1], echo (B,2,He,We) magnitude STFT (B,4,He,We with the range profile) or None) -> dict of
    metric_depth (B,1,H,W) metres, rel_depth (B,1,H,W) MiDaS relative inverse depth, bin_centers (B,n_bins,H,W) metres
    [, probs (B,n_bins,H,W) with return_probs]."""

    def __init__(self, cfg: AVSNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.visual = build_visual_backbone(cfg.backbone)
        if cfg.visual_weights:
            load_midas_weights(self.visual, cfg.visual_weights)
        ch = self.visual.channels
        if cfg.use_echo:
            self.audio = AudioEncoder(cfg.audio_layers, in_channels=2, width=cfg.audio_width, weights=cfg.audio_weights)
            self.fusion = CrossModalAttention(ch["bottleneck"], self.audio.channels, cfg.fusion_heads, cfg.fusion_layer_norm)
        else:
            self.audio, self.fusion = None, None
        self.range_encoder = RangeProfileEncoder(cfg.range_bins, self.audio.channels, width=cfg.range_encoder_width) \
            if cfg.use_echo and cfg.echo_range_profile else None
        self.scale_head = EchoScaleHead(self.audio.channels) if cfg.use_echo and cfg.echo_scale_head else None
        self.head = MetricBinsHead(
            ch["bottleneck"], [ch["r4"], ch["r3"], ch["r2"], ch["r1"]], ch["out_conv"], n_bins=cfg.n_bins,
            bin_centers_type=cfg.bin_centers_type, bin_embedding_dim=cfg.bin_embedding_dim, min_depth=cfg.min_depth,
            max_depth=cfg.max_depth, n_attractors=cfg.n_attractors, attractor_alpha=cfg.attractor_alpha,
            attractor_gamma=cfg.attractor_gamma, attractor_kind=cfg.attractor_kind, attractor_type=cfg.attractor_type,
            min_temp=cfg.min_temp, max_temp=cfg.max_temp, inverse_midas=cfg.inverse_midas,
            apply_attractor_alpha=cfg.apply_attractor_alpha)
        self.register_buffer("norm_mean", torch.tensor(cfg.norm_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("norm_std", torch.tensor(cfg.norm_std).view(1, 3, 1, 1), persistent=False)
        self.checkpoint_meta: dict[str, Any] = {}

    # ----------------------------------------------------------------------------------------------------------- forward
    def forward(self, rgb: torch.Tensor, echo: torch.Tensor | None = None, return_probs: bool = False,
                return_attention: bool = False) -> dict[str, torch.Tensor]:
        self.check_inputs(rgb, echo)
        return self.forward_unchecked(rgb, echo, return_probs, return_attention)

    def forward_unchecked(self, rgb: torch.Tensor, echo: torch.Tensor | None = None, return_probs: bool = False,
                          return_attention: bool = False) -> dict[str, torch.Tensor]:
        """forward without check_inputs: no data-dependent branch, so torch.onnx.export traces it (avs_depth_core.export)."""
        x = (rgb - self.norm_mean.to(rgb.dtype)) / self.norm_std.to(rgb.dtype)
        feats = self.visual(x)
        bottleneck = feats["bottleneck"]
        attention, log_scale = None, None
        if self.fusion is not None:
            tokens = self.audio(echo[:, :2])
            if self.range_encoder is not None:
                profile = unpack_range_profile(echo[:, 2:], self.cfg.range_bins)
                tokens = torch.cat([tokens, self.range_encoder(profile)], dim=1)
            if self.scale_head is not None:
                log_scale = self.scale_head(tokens)
            fused = self.fusion(bottleneck, tokens, return_attention=return_attention)
            bottleneck, attention = fused if return_attention else (fused, None)
        out = self.head(feats["out_conv"], bottleneck, [feats["r4"], feats["r3"], feats["r2"], feats["r1"]], feats["rel_depth"],
                        return_probs=return_probs)
        result = {"metric_depth": out["metric_depth"], "rel_depth": feats["rel_depth"], "bin_centers": out["bin_centers"]}
        if log_scale is not None:
            scale = log_scale.exp().view(-1, 1, 1, 1).to(result["metric_depth"].dtype)
            result["metric_depth"] = result["metric_depth"] * scale
            result["bin_centers"] = result["bin_centers"] * scale
        if return_probs:
            result["probs"] = out["probs"]
        if attention is not None:
            result["attention"] = attention
        return result

    def train(self, mode: bool = True) -> AVSNet:
        super().train(mode)
        if mode and self.cfg.freeze_visual_bn:
            for m in self.visual.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    # ------------------------------------------------------------------------------------------------------- inference
    @torch.inference_mode()
    def predict(self, rgb: np.ndarray | torch.Tensor, echo_samples: np.ndarray | list | None = None,
                sample_rate: int | None = None, emission_offset: int | list[int] = 0, fp16: bool = False,
                output_size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
        """Images (uint8 HWC or BHWC, any size) + raw echoes -> metric_depth and rel_depth (B,1,H,W) float32, resized back to
        the input size (or output_size), on the model's device. Runs in eval mode under inference_mode; fp16 = CUDA autocast."""
        device = next(self.parameters()).device
        x, original = self.image_input(rgb)
        echo = None
        if self.cfg.use_echo:
            if echo_samples is None or sample_rate is None:
                raise ValueError("predict: this model fuses the echo; pass echo_samples and sample_rate")
            echo = self.echo_input(echo_samples, sample_rate, emission_offset).to(device)
        elif echo_samples is not None:
            raise ValueError("predict: this is an Only-RGB model (use_echo=False); pass echo_samples=None")
        if fp16 and device.type != "cuda":
            raise ValueError(f"predict: fp16 needs a CUDA device, the model is on {device}")
        was_training = self.training
        self.eval()
        try:
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=fp16):
                out = self(x.to(device), echo)
        finally:
            self.train(was_training)
        size = tuple(output_size) if output_size is not None else original
        result = {}
        for key in ("metric_depth", "rel_depth"):
            value = out[key].float()
            result[key] = resize_prediction(value, size)  # pixel centres: the inverse of image_input's resize
        return result

    # ------------------------------------------------------------------------------------------------------- training
    def parameter_groups(self, lr: float, encoder_lr_factor: float = 10.0, midas_lr_factor: float = 1.0,
                         pos_enc_lr_factor: float = 10.0) -> list[dict[str, Any]]:
        """ZoeDepth get_lr_params: MiDaS encoder lr/encoder_lr_factor (BEiT relative-position tables lr/pos_enc_lr_factor),
        MiDaS decoder `scratch` lr/midas_lr_factor (1 in ZoeD_N's JSON), everything else (head, audio, fusion) lr."""
        relative = self.visual.relative_position_parameters() if isinstance(self.visual, DPTBeit) else []
        relative_ids = {id(p) for p in relative}
        encoder = [p for p in self.visual.pretrained.parameters() if id(p) not in relative_ids]
        groups = [{"params": encoder, "lr": lr / encoder_lr_factor, "name": "encoder"}]
        if relative:
            groups.append({"params": relative, "lr": lr / pos_enc_lr_factor, "name": "relative_position"})
        groups.append({"params": list(self.visual.scratch.parameters()), "lr": lr / midas_lr_factor, "name": "decoder"})
        rest = [p for name, child in self.named_children() if name != "visual" and child is not None for p in child.parameters()]
        groups.append({"params": rest, "lr": lr, "name": "head"})
        return groups

    # ----------------------------------------------------------------------------------------------------- checkpoints
    def save(self, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
        """Write <stem>.safetensors + <stem>.json (kind, config, meta: training data hash, epoch, metrics ...)."""
        cfg = self.cfg.to_dict()
        cfg["visual_weights"] = cfg["audio_weights"] = None  # the weights are in the checkpoint now
        return save_checkpoint(path, self.state_dict(), cfg, CHECKPOINT_KIND, meta or {})

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> AVSNet:
        """Build from the stored config and load the weights; a wrong kind, a config that does not produce the stored
        tensors, or missing/unexpected keys raise ValueError naming them. The model is returned in eval mode."""
        state, config, kind, meta = load_checkpoint(path)
        if kind != CHECKPOINT_KIND:
            raise ValueError(f"{path}: checkpoint kind is {kind!r}, expected {CHECKPOINT_KIND!r}")
        config = dict(config, visual_weights=None, audio_weights=None)
        # saved before apply_attractor_alpha existed: trained with the configured alpha applied, so keep it applied
        config.setdefault("apply_attractor_alpha", True)
        model = cls(AVSNetConfig.from_dict(config, where=f"{path} config"))
        own = model.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        misshapen = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                     for k, v in state.items() if k in own and v.shape != own[k].shape]
        if missing or unexpected or misshapen:
            raise ValueError(f"{path}: weights do not match the stored config (backbone {config.get('backbone')!r}, "
                             f"use_echo {config.get('use_echo')}): missing {missing[:6]}, unexpected {unexpected[:6]}, "
                             f"shapes {misshapen[:6]}")
        model.load_state_dict(state, strict=True)
        model.checkpoint_meta = meta
        return model.to(device).eval()
