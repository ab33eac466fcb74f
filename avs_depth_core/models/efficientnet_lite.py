"""EfficientNet-Lite in plain torch, with gen-efficientnet-pytorch (geffnet) parameter names.

MiDaS v2.1 small uses geffnet's `tf_efficientnet_lite3` (isl-org/MiDaS midas/midas_net_custom.py): channel multiplier
1.2, depth multiplier 1.4, ReLU6, a fixed 32-channel stem, no squeeze-excite, TF 'same' padding and BatchNorm eps 1e-3
(the "tf_" port of the TF weights).
Only the stem and the seven block stages are built (MiDaS never uses the classifier head).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# geffnet _gen_efficientnet_lite arch_def: (block type, repeats, kernel, stride, expansion, channels) per stage.
LITE_STAGES = (
    ("ds", 1, 3, 1, 1, 16),
    ("ir", 2, 3, 2, 6, 24),
    ("ir", 2, 5, 2, 6, 40),
    ("ir", 3, 3, 2, 6, 80),
    ("ir", 3, 5, 1, 6, 112),
    ("ir", 4, 5, 2, 6, 192),
    ("ir", 1, 3, 1, 6, 320),
)
BN_EPS = 1e-3  # TF default; geffnet's tf_ variants use it
BN_MOMENTUM = 0.1  # geffnet keeps PyTorch's default momentum for the tf_ ports


def make_divisible(value: float, divisor: int = 8) -> int:
    """geffnet's channel rounding: nearest multiple of divisor, never more than 10 % below value."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def tf_same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF 'SAME' padding for one spatial dim: (before, after); the odd pixel goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """Conv2d with TF 'SAME' padding computed from the input size on every call (asymmetric for strided convs)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, 0, 1, groups, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = tf_same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = tf_same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        return super().forward(F.pad(x, (left, right, top, bottom)))


def same_conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """'SAME' conv as geffnet builds it: static symmetric padding where that is exact (stride 1, odd kernel), else dynamic."""
    if stride == 1 and kernel % 2 == 1:
        return nn.Conv2d(in_channels, out_channels, kernel, 1, kernel // 2, groups=groups, bias=False)
    return Conv2dSame(in_channels, out_channels, kernel, stride, groups)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class DepthwiseSeparableConv(nn.Module):
    """geffnet DepthwiseSeparableConv without SE: dw conv-BN-ReLU6, pw conv-BN (no activation), residual when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.has_residual = stride == 1 and in_channels == out_channels
        self.conv_dw = same_conv(in_channels, in_channels, kernel, stride, groups=in_channels)
        self.bn1 = batch_norm(in_channels)
        self.act1 = nn.ReLU6(inplace=True)
        self.conv_pw = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = batch_norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv_dw(x)))
        out = self.bn2(self.conv_pw(out))
        return out + x if self.has_residual else out


class InvertedResidual(nn.Module):
    """geffnet InvertedResidual without SE: pw expand-BN-ReLU6, dw-BN-ReLU6, pw linear-BN, residual when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = make_divisible(in_channels * expansion)
        self.has_residual = stride == 1 and in_channels == out_channels
        self.conv_pw = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn1 = batch_norm(mid)
        self.act1 = nn.ReLU6(inplace=True)
        self.conv_dw = same_conv(mid, mid, kernel, stride, groups=mid)
        self.bn2 = batch_norm(mid)
        self.act2 = nn.ReLU6(inplace=True)
        self.conv_pwl = nn.Conv2d(mid, out_channels, 1, bias=False)
        self.bn3 = batch_norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv_pw(x)))
        out = self.act2(self.bn2(self.conv_dw(out)))
        out = self.bn3(self.conv_pwl(out))
        return out + x if self.has_residual else out


class EfficientNetLite(nn.Module):
    """Stem + seven block stages of EfficientNet-Lite. forward(x) -> the output of every stage (list of 7 tensors).

    Lite3 = EfficientNetLite(1.2, 1.4). Like geffnet (fix_first_last, fix_stem), the first and last stages keep one block and
    the stem keeps 32 channels; stage repeats are ceil(repeats * depth_multiplier). Dropout/drop-connect are not built
    (MiDaS builds the encoder with neither).
    """

    def __init__(self, channel_multiplier: float = 1.2, depth_multiplier: float = 1.4, stem_channels: int = 32) -> None:
        super().__init__()
        self.conv_stem = same_conv(3, stem_channels, 3, 2)
        self.bn1 = batch_norm(stem_channels)
        self.act1 = nn.ReLU6(inplace=True)
        stages = []
        in_channels = stem_channels
        self.stage_channels: list[int] = []
        for index, (kind, repeats, kernel, stride, expansion, channels) in enumerate(LITE_STAGES):
            out_channels = make_divisible(channels * channel_multiplier)
            first_or_last = index in (0, len(LITE_STAGES) - 1)
            count = repeats if first_or_last else int(math.ceil(repeats * depth_multiplier))
            blocks = []
            for i in range(count):
                block_stride = stride if i == 0 else 1
                if kind == "ds":
                    blocks.append(DepthwiseSeparableConv(in_channels, out_channels, kernel, block_stride))
                else:
                    blocks.append(InvertedResidual(in_channels, out_channels, kernel, block_stride, expansion))
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
            self.stage_channels.append(out_channels)
        self.blocks = nn.Sequential(*stages)
        self._init_weights()

    def _init_weights(self) -> None:
        # geffnet _init_weight_goog: conv normal(0, sqrt(2 / fan_out)) with fan_out = k*k*out/groups, BN weight 1 bias 0.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.act1(self.bn1(self.conv_stem(x)))
        features = []
        for stage in self.blocks:
            x = stage(x)
            features.append(x)
        return features


def efficientnet_lite3() -> EfficientNetLite:
    """geffnet tf_efficientnet_lite3: stages of 24, 32, 48, 96, 136, 232, 384 channels."""
    return EfficientNetLite(1.2, 1.4)
