"""Streaming convolution of a mono signal with a multichannel filter that may change between blocks (uniform
overlap-add, one FFT per block). A room in the loop (avs_depth_ros.room_loop) convolves what a speaker plays with the
simulated room's binaural response this way: sound played before a filter change keeps ringing with the old room, as
sound emitted before a robot moved does."""

from __future__ import annotations

import numpy as np


class StreamingConvolver:
    """process(block) -> (channels, block): the input convolved with the filter in effect when each block came in."""

    def __init__(self, block: int, max_filter: int, channels: int = 2) -> None:
        if block < 1 or max_filter < 1:
            raise ValueError(f"block ({block}) and max_filter ({max_filter}) must be positive")
        self.block, self.max_filter, self.channels = int(block), int(max_filter), int(channels)
        self.nfft = 1 << int(np.ceil(np.log2(self.block + self.max_filter - 1)))
        self._spectrum = np.zeros((self.channels, self.nfft // 2 + 1), np.complex128)
        self._acc = np.zeros((self.channels, self.nfft))

    def set_filter(self, h: np.ndarray) -> None:
        """A new (channels, n) filter, n <= max_filter; used from the next block on (safe from another thread)."""
        h = np.asarray(h, dtype=np.float64)
        if h.ndim != 2 or h.shape[0] != self.channels or not 0 < h.shape[1] <= self.max_filter:
            raise ValueError(f"filter of shape {h.shape}: expected ({self.channels}, 1..{self.max_filter})")
        self._spectrum = np.fft.rfft(h, self.nfft, axis=1)  # one reference swap: the audio thread sees old or new

    def process(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.block,):
            raise ValueError(f"block of shape {x.shape}: expected ({self.block},)")
        y = np.fft.irfft(np.fft.rfft(x, self.nfft)[None] * self._spectrum, self.nfft, axis=1)
        self._acc += y
        out = self._acc[:, :self.block].copy()
        self._acc[:, :-self.block] = self._acc[:, self.block:]
        self._acc[:, -self.block:] = 0.0
        return out
