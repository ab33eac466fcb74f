"""Echo encoder: a ResNet over the 2-channel magnitude STFT, giving audio tokens for the cross-modal attention.

AVS-Net (arXiv 2412.01637) encodes the binaural echo spectrogram, resized to the image resolution, with ResNet-18; its
deepest stage (1/32 resolution, 512 channels) is flattened into tokens: a 256x512 spectrogram gives (B, 8*16 = 128, 512).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from avs_depth_core.models.resnet import ResNetEncoder


class AudioEncoder(nn.Module):
    """ResNet-N with `in_channels` inputs, no avgpool/fc. forward(spec (B,C,H,W)) -> tokens (B, H/32 * W/32, channels)."""

    def __init__(self, num_layers: int = 18, in_channels: int = 2, width: int = 64, weights: str | Path | None = None) -> None:
        super().__init__()
        self.encoder = ResNetEncoder(num_layers, in_channels=in_channels, width=width)
        self.channels = self.encoder.num_ch_enc[-1]
        if weights:
            # ImageNet init (the paper's ResNet-18 is ImageNet-pretrained) from a local torchvision file; conv1 is tiled to 2 ch.
            self.encoder.load_torchvision_weights(weights)

    def feature_map(self, spec: torch.Tensor) -> torch.Tensor:
        """The last stage (B, channels, H/32, W/32)."""
        e = self.encoder
        x = e.maxpool(e.relu(e.bn1(e.conv1(spec))))
        return e.layer4(e.layer3(e.layer2(e.layer1(x))))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return self.feature_map(spec).flatten(2).transpose(1, 2)
