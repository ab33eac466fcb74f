"""Streaming convolution (the room in the loop convolves what a speaker plays with it)."""

from __future__ import annotations

import numpy as np
import pytest

from avs_depth_core.audio.convolve import StreamingConvolver


def test_streaming_convolver_matches_convolution_and_changes_filter_between_blocks():
    rng = np.random.default_rng(0)
    h1, h2 = rng.normal(size=(2, 300)), rng.normal(size=(2, 120))
    x = rng.normal(size=64 * 12)
    conv = StreamingConvolver(64, 300)
    conv.set_filter(h1)
    y = []
    for i in range(12):
        if i == 6:
            conv.set_filter(h2)  # from block 6 on: earlier input keeps ringing with h1
        y.append(conv.process(x[64 * i:64 * (i + 1)]))
    y = np.concatenate(y, axis=1)
    first, second = x.copy(), x.copy()
    first[64 * 6:], second[:64 * 6] = 0.0, 0.0
    expected = np.stack([np.convolve(first, h1[c])[:len(x)] + np.convolve(second, h2[c])[:len(x)] for c in range(2)])
    assert np.allclose(y, expected, atol=1e-9)
    with pytest.raises(ValueError, match="filter of shape"):
        conv.set_filter(np.zeros((2, 301)))
