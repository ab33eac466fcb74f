"""Range-profile encoder: tokens from the matched-filter range profile of each ear, for the cross-modal attention.

A deviation option of AVS-Net (AVSNetConfig.echo_range_profile): the profile (B, ears, bins) over [0, max_depth), with
the normalised range r / max_depth as one more input channel (attention is blind to the order of its keys, so every
token must carry where in range it lies), goes through three strided 1-D convolutions (stride 2 each) to bins / 8 tokens
of the audio encoder's width, which join the ResNet's STFT tokens as keys and values.
"""

from __future__ import annotations

import torch
from torch import nn


class RangeProfileEncoder(nn.Module):
    """forward(profile (B, ears, bins)) -> tokens (B, bins / 8, channels)."""

    def __init__(self, bins: int, channels: int, ears: int = 2, width: int = 64) -> None:
        super().__init__()
        if bins % 8:
            raise ValueError(f"range encoder: bins must be a multiple of 8, got {bins}")
        self.bins, self.channels = bins, channels
        self.register_buffer("position", torch.linspace(0.0, 1.0, bins).view(1, 1, bins), persistent=False)

        def block(cin: int, cout: int, kernel: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv1d(cin, cout, kernel, stride=2, padding=kernel // 2, bias=False),
                                 nn.BatchNorm1d(cout), nn.ReLU(inplace=True))

        self.layers = nn.Sequential(block(ears + 1, width // 2, 7), block(width // 2, width, 5), block(width, width, 3),
                                    nn.Conv1d(width, channels, 1))

    def forward(self, profile: torch.Tensor) -> torch.Tensor:
        position = self.position.to(profile.dtype).expand(profile.shape[0], 1, self.bins)
        return self.layers(torch.cat([profile, position], dim=1)).transpose(1, 2)
