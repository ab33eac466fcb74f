"""Monodepth2 (Godard et al., ICCV 2019): self-supervised relative depth from monocular video.

DepthNet = ResNet encoder + multi-scale disparity decoder; PoseNet = a separate ResNet over a frame pair, predicting axis-angle
and translation. Architecture and numbers follow nianticlabs/monodepth2 (networks/*.py, options.py).
Parameter names match the released weights (decoder.N.conv.conv.*, net.N.*), so load_monodepth2_release() can read them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from avs_depth_core.checkpoint import load_checkpoint, load_torch_weights, save_checkpoint
from avs_depth_core.config import check_fields, dataclass_from_dict, read_sections, read_yaml_file
from avs_depth_core.geometry import get_translation_matrix, transformation_from_parameters
from avs_depth_core.models.resnet import ResNetEncoder

CHECKPOINT_KIND = "monodepth2"
DEPTH_UNITS = ("relative", "metres")
POSE_PRIORS = ("none", "imu")
ECHO_INPUTS = ("none", "stft")
# The AVSNetConfig keys that define the echo features (audio.features.echo_features) an echo-input DepthNet was trained
# on, the echo-supervision teacher's: stored as model.echo_features so a runtime can check that its AVS-Net computes the
# same ones (check_echo_features).
ECHO_FEATURE_KEYS = ("n_fft", "win_length", "hop_length", "stft_log", "sample_rate", "speed_of_sound", "max_depth",
                     "echo_range_profile")
# ... and, where the teacher has echo_range_profile, those of its range-profile channels.
RANGE_PROFILE_KEYS = ("range_bins", "range_log", "range_spacing", "range_min", "chirp_start_hz", "chirp_end_hz",
                      "chirp_duration_s", "chirp_method")

# A config file's train: keys that set Monodepth2Config's optimisation keys (the names every trainer's train: section uses).
TRAIN_KEYS = {"epochs": "num_epochs", "batch_size": "batch_size", "lr": "learning_rate",
              "scheduler_step_size": "scheduler_step_size", "scheduler_gamma": "scheduler_gamma"}

# ResnetEncoder.forward: (x - 0.45) / 0.225, for the depth and the pose encoder alike.
INPUT_MEAN, INPUT_STD = 0.45, 0.225


@dataclass
class Monodepth2Config:
    """Training and network settings. Defaults are Monodepth2's options.py unless a comment says otherwise."""

    num_layers: int = 18
    height: int = 192
    width: int = 640
    scales: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    min_depth: float = 0.1
    max_depth: float = 100.0
    # Source frames relative to the target, in units of frame_interval: options.py frame_ids [0, -1, 1] without the 0.
    source_offsets: list[int] = field(default_factory=lambda: [-1, 1])
    # Camera frames between target and source: 20 in the AVS-Net paper (experiments); Monodepth2 on KITTI uses adjacent frames.
    frame_interval: int = 20
    ssim_weight: float = 0.85
    disparity_smoothness: float = 1e-3
    # Not a Monodepth2 option: 1 penalises the disparity's first differences (Monodepth2), 2 its second differences,
    # which are zero on any plane (inverse depth is affine in the pixel coordinates there), so a textureless wall is
    # filled in as a plane between its edges instead of being pulled towards a constant disparity.
    smoothness_order: int = 1
    automask: bool = True
    # Per-pixel minimum over sources (Monodepth2) rather than the average (its --avg_reprojection ablation).
    min_reprojection: bool = True
    # Monodepth2 was written for torch 0.4.1, whose grid_sample behaved as align_corners=True (see geometry.warp_image).
    warp_align_corners: bool = True
    # Monodepth2's --v1_multiscale (options.py; off by default there): compute each scale's photometric loss at that
    # scale's resolution instead of upsampling every disparity to the input size first.
    v1_multiscale: bool = False
    learning_rate: float = 1e-4
    scheduler_step_size: int = 15
    scheduler_gamma: float = 0.1
    batch_size: int = 12
    num_epochs: int = 20
    # mono_dataset.py augmentation: flip and colour jitter applied to the network inputs only.
    hflip_prob: float = 0.5
    color_jitter_prob: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.1
    pose_num_layers: int = 18
    # Not Monodepth2 options: channel widths, so a tiny network can run in CPU tests. 64 and [16..256] are the paper's.
    encoder_width: int = 64
    decoder_channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    # Local torchvision ResNet file for ImageNet initialisation (options.py weights_init pretrained); None = random init.
    pretrained_encoder: str | None = None
    # What the DepthNet's depth means: "relative" (Monodepth2: up to scale) or "metres" (trained with echo supervision,
    # train/echo_supervision.py; set by the trainer and stored with the weights, so inference needs no median step).
    depth_units: str = "relative"
    # Not a Monodepth2 option: where PoseNet's rotation comes from. "none": PoseNet predicts it (Monodepth2). "imu": the
    # rotation between the two frames' attitudes from the robot's IMU (the bag's imu/data), PoseNet predicting only the
    # translation, as visual-inertial self-supervised depth does (e.g. DynaDepth, Zhang et al., ECCV 2022, takes the
    # ego-motion from IMU integration). A PoseNet trained from scratch on a few minutes of CPU never learns turns of a few
    # degrees per frame pair (benchmarks/monodepth2_diagnostics.py), and without the rotation no shape is learnt.
    pose_prior: str = "none"
    # Not a Monodepth2 option (issue 9): "stft" gives the DepthNet the echo (the echo-supervision teacher's features:
    # magnitude STFT per ear at echo_size), from which EchoScaleEncoder predicts a per-image log scale that multiplies
    # the depth. In a world whose scale an image does not show, an RGB-only DepthNet trained on metres can only predict
    # the training scenes' typical scale; the echo's delays carry it. The photometric loss sees the unscaled depth (the
    # warp stays Monodepth2's), the echo-supervision term the scaled one. "none": Monodepth2's DepthNet, unchanged. Needs
    # echo supervision; the trainer sets echo_channels, echo_size and echo_features from the teacher.
    echo_input: str = "none"
    echo_channels: int = 2
    echo_size: list[int] = field(default_factory=lambda: [64, 128])
    echo_encoder_width: int = 16
    echo_features: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        self.validate()

    def validate(self) -> None:
        if self.height % 32 or self.width % 32 or self.height < 64 or self.width < 64:
            raise ValueError(f"monodepth2 height/width must be multiples of 32 and at least 64 (the decoder's reflection padding "
                             f"needs 2 pixels at 1/32), got {self.height}x{self.width}")
        if self.smoothness_order not in (1, 2):
            raise ValueError(f"monodepth2 smoothness_order must be 1 (Monodepth2) or 2 (second differences), "
                             f"got {self.smoothness_order!r}")
        if not self.scales or any(s not in range(4) for s in self.scales) or 0 not in self.scales:
            raise ValueError(f"monodepth2 scales must be a subset of [0, 1, 2, 3] containing 0, got {self.scales}")
        if not 0 < self.min_depth < self.max_depth:
            raise ValueError(f"monodepth2 needs 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}")
        if not self.source_offsets or 0 in self.source_offsets:
            raise ValueError(f"monodepth2 source_offsets must be non-zero frame offsets, got {self.source_offsets}")
        if self.frame_interval < 1:
            raise ValueError(f"monodepth2 frame_interval must be >= 1, got {self.frame_interval}")
        if not 0 <= self.ssim_weight <= 1:
            raise ValueError(f"monodepth2 ssim_weight must lie in [0, 1], got {self.ssim_weight}")
        if self.depth_units not in DEPTH_UNITS:
            raise ValueError(f"monodepth2 depth_units must be one of {list(DEPTH_UNITS)}, got {self.depth_units!r}")
        if self.pose_prior not in POSE_PRIORS:
            raise ValueError(f"monodepth2 pose_prior must be one of {list(POSE_PRIORS)}, got {self.pose_prior!r}")
        if self.echo_input not in ECHO_INPUTS:
            raise ValueError(f"monodepth2 echo_input must be one of {list(ECHO_INPUTS)}, got {self.echo_input!r}")
        if self.echo_channels < 1 or self.echo_encoder_width < 1:
            raise ValueError(f"monodepth2 echo_channels and echo_encoder_width must be positive, got "
                             f"{self.echo_channels}, {self.echo_encoder_width}")
        if len(self.echo_size) != 2 or min(self.echo_size) < 16:
            raise ValueError(f"monodepth2 echo_size must be [height, width], each at least 16 (four stride-2 "
                             f"convolutions), got {self.echo_size}")
        if len(self.decoder_channels) != 5 or min(self.decoder_channels) < 1:
            raise ValueError(f"monodepth2 decoder_channels must be 5 positive widths, got {self.decoder_channels}")
        for key in ("learning_rate", "batch_size", "num_epochs", "scheduler_step_size", "encoder_width"):
            if getattr(self, key) <= 0:
                raise ValueError(f"monodepth2 {key} must be positive, got {getattr(self, key)}")

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "monodepth2 config") -> Monodepth2Config:
        """Strict: unknown keys and wrong types are errors naming `source` and the key (avs_depth_core.config)."""
        return dataclass_from_dict(cls, values, source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Monodepth2Config:
        """A training config file: its model: section with the train: keys of TRAIN_KEYS (or the older flat form)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: monodepth2 config not found")
        sections = read_sections(read_yaml_file(path) or {}, str(path), flat="model")
        train = {model_key: sections["train"][key] for key, model_key in TRAIN_KEYS.items() if key in sections["train"]}
        return cls.from_dict({**sections["model"], **train}, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def tiny(cls, **overrides: Any) -> Monodepth2Config:
        """A small variant at 64x64 for CPU tests; not for real training."""
        values = {"height": 64, "width": 64, "encoder_width": 8, "decoder_channels": [4, 8, 16, 16, 32], "batch_size": 2}
        return cls.from_dict({**values, **overrides})


def disp_to_depth(disp: torch.Tensor, min_depth: float = 0.1, max_depth: float = 100.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid output in [0, 1] -> (scaled disparity in [1/max, 1/min], depth in [min, max]). Monodepth2 layers.py."""
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    scaled = min_disp + (max_disp - min_disp) * disp
    return scaled, 1.0 / scaled


class Conv3x3(nn.Module):
    """Reflection pad 1 + 3x3 convolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


class ConvBlock(nn.Module):
    """Conv3x3 + ELU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = Conv3x3(in_channels, out_channels)
        self.nonlin = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin(self.conv(x))


class DepthDecoder(nn.Module):
    """Five encoder features -> {("disp", s): sigmoid disparity at 1/2^s of the input} for s in scales.

    Level i = 4..0: ConvBlock, nearest x2 upsampling, concatenation with encoder feature i-1, ConvBlock; a Conv3x3 + sigmoid
    head at each requested scale. The blocks live in one ModuleList in that order, as in the released model.
    """

    def __init__(self, num_ch_enc: list[int], scales: list[int] | tuple[int, ...] = (0, 1, 2, 3),
                 num_ch_dec: list[int] | tuple[int, ...] = (16, 32, 64, 128, 256)) -> None:
        super().__init__()
        self.scales = sorted(scales)
        blocks = []
        for i in range(4, -1, -1):
            in_ch = num_ch_enc[-1] if i == 4 else num_ch_dec[i + 1]
            blocks.append(ConvBlock(in_ch, num_ch_dec[i]))
            blocks.append(ConvBlock(num_ch_dec[i] + (num_ch_enc[i - 1] if i > 0 else 0), num_ch_dec[i]))
        blocks += [Conv3x3(num_ch_dec[s], 1) for s in self.scales]
        self.decoder = nn.ModuleList(blocks)

    def forward(self, features: list[torch.Tensor]) -> dict[tuple[str, int], torch.Tensor]:
        outputs = {}
        x = features[-1]
        for level, i in enumerate(range(4, -1, -1)):
            x = F.interpolate(self.decoder[2 * level](x), scale_factor=2, mode="nearest")
            if i > 0:
                x = torch.cat([x, features[i - 1]], 1)
            x = self.decoder[2 * level + 1](x)
            if i in self.scales:
                outputs[("disp", i)] = torch.sigmoid(self.decoder[10 + self.scales.index(i)](x))
        return outputs


class EchoScaleEncoder(nn.Module):
    """Echo features (B, C, He, We) -> per-image log scale (B, 1, 1, 1) of the DepthNet's depth (model.echo_input).

    log1p of the magnitudes (an STFT spans orders of magnitude), four stride-2 3x3 convolutions with BatchNorm and ReLU,
    then two linear layers over the flattened map: flattening keeps where along the echo's time (= range) axis the energy
    arrives, which a global pooling would lose. The last layer starts at zero, so an untrained encoder scales by 1."""

    def __init__(self, channels: int, size: list[int] | tuple[int, int], width: int = 16) -> None:
        super().__init__()
        self.channels, self.size = channels, (int(size[0]), int(size[1]))
        layers: list[nn.Module] = []
        cin = channels
        for cout in (width, 2 * width, 4 * width, 4 * width):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        h, w = self.size
        for _ in range(4):
            h, w = (h + 1) // 2, (w + 1) // 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(cin * h * w, 4 * width), nn.ReLU(inplace=True),
                                  nn.Linear(4 * width, 1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, echo: torch.Tensor) -> torch.Tensor:
        if echo.dim() != 4 or echo.shape[1] != self.channels or tuple(echo.shape[-2:]) != self.size:
            raise ValueError(f"DepthNet echo input: expected (B, {self.channels}, {self.size[0]}, {self.size[1]}) echo "
                             f"features (model.echo_channels, model.echo_size), got {tuple(echo.shape)}")
        return self.head(self.features(torch.log1p(echo.float().clamp_min(0)))).view(-1, 1, 1, 1)


class DepthNet(nn.Module):
    """rgb (B, 3, H, W) in [0, 1] -> {("disp", s): (B, 1, H / 2^s, W / 2^s)} sigmoid disparities; H, W multiples of 32, >= 64.

    With echo_input "stft" (model.echo_input) forward also takes the echo features and adds ("log_scale", 0): (B, 1, 1, 1),
    the log of the factor that multiplies the depth of every scale (output_depth)."""

    def __init__(self, num_layers: int = 18, scales: list[int] | tuple[int, ...] = (0, 1, 2, 3), encoder_width: int = 64,
                 decoder_channels: list[int] | tuple[int, ...] = (16, 32, 64, 128, 256),
                 pretrained_path: str | Path | None = None, echo_input: str = "none", echo_channels: int = 2,
                 echo_size: list[int] | tuple[int, int] = (64, 128), echo_encoder_width: int = 16) -> None:
        super().__init__()
        if echo_input not in ECHO_INPUTS:
            raise ValueError(f"DepthNet echo_input must be one of {list(ECHO_INPUTS)}, got {echo_input!r}")
        self.encoder = ResNetEncoder(num_layers, in_channels=3, width=encoder_width)
        if pretrained_path is not None:
            self.encoder.load_torchvision_weights(pretrained_path)
        self.decoder = DepthDecoder(self.encoder.num_ch_enc, scales, decoder_channels)
        self.echo_input = echo_input
        # absent (not merely unused) without an echo input: Monodepth2's parameter names and checkpoints stay as they were
        if echo_input != "none":
            self.echo_encoder = EchoScaleEncoder(echo_channels, echo_size, echo_encoder_width)

    @property
    def needs_echo(self) -> bool:
        return self.echo_input != "none"

    @classmethod
    def from_config(cls, config: Monodepth2Config, load_pretrained: bool = True) -> DepthNet:
        return cls(config.num_layers, config.scales, config.encoder_width, config.decoder_channels,
                   config.pretrained_encoder if load_pretrained else None, config.echo_input, config.echo_channels,
                   config.echo_size, config.echo_encoder_width)

    def forward(self, rgb: torch.Tensor, echo: torch.Tensor | None = None) -> dict[tuple[str, int], torch.Tensor]:
        if rgb.dim() != 4 or rgb.shape[1] != 3 or rgb.shape[2] % 32 or rgb.shape[3] % 32 or min(rgb.shape[2:]) < 64:
            raise ValueError(f"DepthNet expects (B, 3, H, W) with H, W multiples of 32 and >= 64, got {tuple(rgb.shape)}")
        if self.needs_echo and echo is None:
            raise ValueError(f"DepthNet with model.echo_input {self.echo_input!r} needs the echo features of every image; "
                             f"got none")
        if not self.needs_echo and echo is not None:
            raise ValueError("DepthNet with model.echo_input 'none' takes no echo; got echo features")
        outputs = self.decoder(self.encoder((rgb - INPUT_MEAN) / INPUT_STD))
        if self.needs_echo:
            if echo.shape[0] != rgb.shape[0]:
                raise ValueError(f"DepthNet: {rgb.shape[0]} images but {echo.shape[0]} echoes")
            outputs[("log_scale", 0)] = self.echo_encoder(echo.to(rgb.device))
        return outputs


def output_depth(outputs: dict[tuple[str, int], torch.Tensor], min_depth: float, max_depth: float,
                 scale: int = 0) -> torch.Tensor:
    """DepthNet outputs -> the depth at `scale`: disp_to_depth of its disparity, times exp(log_scale) where the DepthNet
    has an echo input (metres for an echo-supervised one)."""
    _, depth = disp_to_depth(outputs[("disp", scale)], min_depth, max_depth)
    if ("log_scale", 0) in outputs:
        depth = depth * outputs[("log_scale", 0)].exp()
    return depth


def echo_feature_settings(avsnet_cfg: Any) -> dict[str, Any]:
    """The ECHO_FEATURE_KEYS of an AVSNetConfig (and RANGE_PROFILE_KEYS with echo_range_profile), with its echo input's
    channels and size (what model.echo_features holds)."""
    keys = ECHO_FEATURE_KEYS + (RANGE_PROFILE_KEYS if avsnet_cfg.echo_range_profile else ())
    out = {key: getattr(avsnet_cfg, key) for key in keys}
    out["channels"] = int(avsnet_cfg.echo_channels)
    out["size"] = [int(v) for v in (avsnet_cfg.echo_size or avsnet_cfg.image_size)]
    return out


def check_echo_features(features: dict[str, Any] | None, avsnet_cfg: Any, where: str) -> None:
    """An echo-input DepthNet (its model.echo_features) fed by an AVS-Net's echo features: they must be the ones it was
    trained on; ValueError naming the differing keys otherwise."""
    if not getattr(avsnet_cfg, "use_echo", False):
        raise ValueError(f"{where}: the Monodepth2 DepthNet takes the echo (model.echo_input), but the AVS-Net that would "
                         f"compute its echo features is Only-RGB (use_echo false)")
    theirs = echo_feature_settings(avsnet_cfg)
    ours = features or {}
    differing = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
    if differing:
        raise ValueError(f"{where}: the AVS-Net's echo features differ from those the DepthNet was trained on "
                         f"(model.echo_features) in {[f'{k}: {theirs.get(k)!r} vs {ours.get(k)!r}' for k in differing]}")


class PoseDecoder(nn.Module):
    """Last encoder feature -> (axisangle, translation), each (B, frames, 1, 3): squeeze 1x1 + ReLU, two 3x3 + ReLU, 1x1 to 6 per
    frame, spatial mean, times 0.01 (Monodepth2 pose_decoder.py; the factor keeps early poses near identity)."""

    def __init__(self, num_ch_enc: list[int], frames_to_predict: int = 2) -> None:
        super().__init__()
        self.frames_to_predict = frames_to_predict
        self.net = nn.ModuleList([nn.Conv2d(num_ch_enc[-1], 256, 1), nn.Conv2d(256, 256, 3, 1, 1), nn.Conv2d(256, 256, 3, 1, 1),
                                  nn.Conv2d(256, 6 * frames_to_predict, 1)])

    def forward(self, last_feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.net[0](last_feature))
        x = F.relu(self.net[1](x))
        x = F.relu(self.net[2](x))
        out = 0.01 * self.net[3](x).mean(dim=(2, 3)).view(-1, self.frames_to_predict, 1, 6)
        return out[..., :3], out[..., 3:]


class PoseNet(nn.Module):
    """A separate ResNet over a 6-channel frame pair [earlier, later] -> (axisangle (B, 1, 3), translation (B, 1, 3)).

    The decoder predicts two frames as the released 'separate_resnet' model does; Monodepth2 uses only the first, as does this.
    """

    def __init__(self, num_layers: int = 18, encoder_width: int = 64, pretrained_path: str | Path | None = None) -> None:
        super().__init__()
        self.encoder = ResNetEncoder(num_layers, in_channels=6, width=encoder_width)
        if pretrained_path is not None:
            self.encoder.load_torchvision_weights(pretrained_path)
        self.decoder = PoseDecoder(self.encoder.num_ch_enc, frames_to_predict=2)

    @classmethod
    def from_config(cls, config: Monodepth2Config, load_pretrained: bool = True) -> PoseNet:
        return cls(config.pose_num_layers, config.encoder_width, config.pretrained_encoder if load_pretrained else None)

    def forward(self, frame_a: torch.Tensor, frame_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if frame_a.shape != frame_b.shape or frame_a.dim() != 4 or frame_a.shape[1] != 3:
            raise ValueError(f"PoseNet expects two (B, 3, H, W) frames of one shape, "
                             f"got {tuple(frame_a.shape)} and {tuple(frame_b.shape)}")
        x = (torch.cat([frame_a, frame_b], 1) - INPUT_MEAN) / INPUT_STD
        axisangle, translation = self.decoder(self.encoder(x)[-1])
        return axisangle[:, 0], translation[:, 0]


def predict_poses(pose_net: PoseNet, target: torch.Tensor, sources: dict[int, torch.Tensor],
                  rotations: dict[int, torch.Tensor] | None = None) -> dict[int, torch.Tensor]:
    """Transform (B, 4, 4) from the target camera to each source camera, keyed by source offset.

    PoseNet always sees the pair in temporal order: [source, target] for offset < 0, whose transform is then inverted;
    [target, source] otherwise (Monodepth2 trainer.predict_poses). rotations (model.pose_prior imu): per offset the
    (B, 3, 3) rotation of the pair's transform in that same temporal order (first camera -> second camera), used instead
    of PoseNet's, whose translation is kept.
    """
    poses = {}
    for offset, source in sources.items():
        pair = (source, target) if offset < 0 else (target, source)
        axisangle, translation = pose_net(*pair)
        if rotations is None:
            poses[offset] = transformation_from_parameters(axisangle, translation, invert=offset < 0)
        else:
            poses[offset] = transformation_from_rotation(rotations[offset], translation, invert=offset < 0)
    return poses


def transformation_from_rotation(R: torch.Tensor, translation: torch.Tensor, invert: bool = False) -> torch.Tensor:
    """geometry.transformation_from_parameters with a given rotation (B, 3, 3) instead of PoseNet's axis-angle."""
    R4 = torch.eye(4, dtype=translation.dtype, device=translation.device).repeat(R.shape[0], 1, 1)
    R4[:, :3, :3] = R.to(translation.dtype)
    if invert:
        return R4.transpose(1, 2) @ get_translation_matrix(-translation)
    return get_translation_matrix(translation) @ R4


def _load_exact(net: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """load_state_dict that names missing, unexpected and misshapen keys in a ValueError instead of a RuntimeError."""
    own = net.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    misshapen = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
                 if k in own and v.shape != own[k].shape]
    if missing or unexpected or misshapen:
        raise ValueError(f"{where}: missing {missing[:5]}, unexpected {unexpected[:5]}, shapes {misshapen[:5]}")
    net.load_state_dict(state)


def _read_release_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Monodepth2 weights not found")
    state = load_torch_weights(path, "Monodepth2 weights")
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def _release_encoder_state(raw: dict[str, Any]) -> dict[str, torch.Tensor]:
    # Released encoders wrap a torchvision ResNet as .encoder (fc unused) and carry height/width/use_stereo entries.
    return {k.removeprefix("encoder."): v for k, v in raw.items()
            if isinstance(v, torch.Tensor) and not k.startswith("encoder.fc.")}


def load_monodepth2_release(depth_net: DepthNet, encoder_path: str | Path, depth_path: str | Path,
                            pose_net: PoseNet | None = None, pose_encoder_path: str | Path | None = None,
                            pose_path: str | Path | None = None) -> dict[str, int]:
    """Load nianticlabs/monodepth2 release files (encoder.pth, depth.pth, pose_encoder.pth, pose.pth) from local paths.

    They are read with torch.load(weights_only=True). Returns the training size recorded in encoder.pth ({"height", "width"})
    when present, since the released models expect that input size.
    """
    encoder_raw = _read_release_file(encoder_path)
    _load_exact(depth_net.encoder, _release_encoder_state(encoder_raw), f"{encoder_path}: does not fit the ResNet encoder")
    _load_exact(depth_net.decoder, _read_release_file(depth_path), f"{depth_path}: does not fit the depth decoder")
    if pose_net is not None:
        if pose_encoder_path is None or pose_path is None:
            raise ValueError("loading a Monodepth2 PoseNet needs both pose_encoder_path and pose_path")
        _load_exact(pose_net.encoder, _release_encoder_state(_read_release_file(pose_encoder_path)),
                    f"{pose_encoder_path}: does not fit the pose encoder")
        _load_exact(pose_net.decoder, _read_release_file(pose_path), f"{pose_path}: does not fit the pose decoder")
    return {k: int(encoder_raw[k]) for k in ("height", "width") if k in encoder_raw}


def save_monodepth2(path: str | Path, depth_net: DepthNet, config: Monodepth2Config, pose_net: PoseNet | None = None,
                    meta: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """One checkpoint (safetensors + JSON, kind "monodepth2") with the depth net under "depth." and, if given, the pose net
    under "pose."; extra: optimizer/scheduler state for resuming (avs_depth_core.checkpoint)."""
    state = {f"depth.{k}": v for k, v in depth_net.state_dict().items()}
    if pose_net is not None:
        state.update({f"pose.{k}": v for k, v in pose_net.state_dict().items()})
    stored = dict(config.to_dict(), pretrained_encoder=None)  # the weights are in the checkpoint now
    return save_checkpoint(path, state, stored, CHECKPOINT_KIND, meta or {}, extra)


def _load_part(net: nn.Module, state: dict[str, torch.Tensor], prefix: str, path: str | Path) -> None:
    part = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    _load_exact(net, part, f"{path}: '{prefix}*' weights do not match the stored config")


@dataclass
class Monodepth2Checkpoint:
    depth_net: DepthNet
    config: Monodepth2Config
    meta: dict[str, Any]
    pose_net: PoseNet | None = None


def load_monodepth2(path: str | Path, device: str | torch.device = "cpu", with_pose: bool = False) -> Monodepth2Checkpoint:
    """Networks from a save_monodepth2 checkpoint, in eval mode on device; the pose net only with with_pose."""
    state, stored, kind, meta = load_checkpoint(path)
    if kind != CHECKPOINT_KIND:
        raise ValueError(f"{path}: checkpoint kind is {kind!r}, expected {CHECKPOINT_KIND!r}")
    config = Monodepth2Config.from_dict(stored, source=f"{path} config")
    depth_net = DepthNet.from_config(config, load_pretrained=False)
    _load_part(depth_net, state, "depth.", path)
    depth_net = depth_net.to(device).eval()
    if not with_pose:
        return Monodepth2Checkpoint(depth_net, config, meta)
    if not any(k.startswith("pose.") for k in state):
        raise ValueError(f"{path}: holds no pose network (saved for inference only)")
    pose_net = PoseNet.from_config(config, load_pretrained=False)
    _load_part(pose_net, state, "pose.", path)
    return Monodepth2Checkpoint(depth_net, config, meta, pose_net.to(device).eval())
