"""Cross-modal attention that injects the echo into the visual bottleneck (AVS-Net, arXiv 2412.01637, eq. 1-2).

Query = visual bottleneck tokens, key = value = audio tokens; out = Q + MultiHeadAttention(Q, K, V) (the skip connection),
reshaped back to the bottleneck map. It sits where ZoeDepth feeds its bottleneck to conv2 and the seed bin regressor.
"""

from __future__ import annotations

import torch
from torch import nn


class CrossModalAttention(nn.Module):
    """nn.MultiheadAttention(embed_dim=C_v, num_heads, kdim=vdim=C_a) with a residual connection.

    layer_norm=True is a documented deviation (not in the paper): pre-norm of queries and audio tokens before the attention.
    Heads: the paper does not fix the count; 8 is the default here.
    """

    def __init__(self, visual_channels: int, audio_channels: int, num_heads: int = 8, layer_norm: bool = False) -> None:
        super().__init__()
        if visual_channels % num_heads:
            raise ValueError(f"fusion heads: {num_heads} heads do not divide the {visual_channels} visual channels")
        self.attention = nn.MultiheadAttention(visual_channels, num_heads, kdim=audio_channels, vdim=audio_channels,
                                               batch_first=True)
        self.norm_query = nn.LayerNorm(visual_channels) if layer_norm else nn.Identity()
        self.norm_audio = nn.LayerNorm(audio_channels) if layer_norm else nn.Identity()

    def forward(self, visual: torch.Tensor, audio_tokens: torch.Tensor, return_attention: bool = False):
        """visual (B,C_v,h,w), audio_tokens (B,N,C_a) -> fused (B,C_v,h,w) [, attention (B, h*w, N), mean over heads]."""
        b, c, h, w = visual.shape
        query = visual.flatten(2).transpose(1, 2)
        audio = self.norm_audio(audio_tokens)
        attended, weights = self.attention(self.norm_query(query), audio, audio, need_weights=return_attention)
        fused = (query + attended).transpose(1, 2).reshape(b, c, h, w)
        return (fused, weights) if return_attention else fused
