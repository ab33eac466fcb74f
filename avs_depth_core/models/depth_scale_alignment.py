"""The Depth Scale Alignment network of Nguyen et al. ("Mining Supervision for Dynamic Regions", CVPR 2024; B.6 of
../shared/reference/rescale_maps_and_dynamic_regions.md): one scalar per object that brings its mean-normalised depth
to the scene depth's scale.

Theirs: ResNet-18 on 5 channels ([RGB, scene context + object shape, object shape]) with every BatchNorm replaced by
GroupNorm with one group, global average pooling, an MLP 512-256-128-1 and no output activation. Here the same layout
at the project's encoder width (64 = theirs) and from random initialisation (no ImageNet weights offline).
"""

from __future__ import annotations

import torch
from torch import nn

from avs_depth_core.models.resnet import ResNetEncoder

IN_CHANNELS = 5
HIDDEN = (256, 128)  # their MLP after the 512 pooled features


def batchnorm_to_groupnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in `module` by GroupNorm(1, C) with the same affine parameters (their DSA's change)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            norm = nn.GroupNorm(1, child.num_features, affine=True)
            with torch.no_grad():
                norm.weight.copy_(child.weight)
                norm.bias.copy_(child.bias)
            setattr(module, name, norm)
        else:
            batchnorm_to_groupnorm(child)
    return module


class DepthScaleAlignmentNet(nn.Module):
    """(B, 5, H, W) -> (B,) object scale beta, in the scene depth's units per unit of the mean-normalised object depth."""

    def __init__(self, width: int = 64, num_layers: int = 18) -> None:
        super().__init__()
        self.encoder = batchnorm_to_groupnorm(ResNetEncoder(num_layers, in_channels=IN_CHANNELS, width=width))
        layers: list[nn.Module] = []
        features = self.encoder.num_ch_enc[-1]
        for hidden in HIDDEN:
            layers += [nn.Linear(features, hidden), nn.ReLU(inplace=True)]
            features = hidden
        layers.append(nn.Linear(features, 1))
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != IN_CHANNELS:
            raise ValueError(f"DepthScaleAlignmentNet: expected (B, {IN_CHANNELS}, H, W), got {tuple(x.shape)}")
        pooled = self.encoder(x)[-1].mean(dim=(2, 3))
        return self.head(pooled)[:, 0]
