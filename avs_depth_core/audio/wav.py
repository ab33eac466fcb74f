"""wav reading with correct integer scaling (the real BatVision BV2 sample is 32-bit int PCM)."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
from scipy.io import wavfile


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """(channels, n) float32 in [-1, 1] and the sample rate. int16/int32 are divided by 2^15/2^31, uint8 centred."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: wav file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", wavfile.WavFileWarning)  # e.g. "Reached EOF prematurely": a cut file
            rate, data = wavfile.read(path)
    except (ValueError, EOFError, struct.error, IndexError, wavfile.WavFileWarning) as err:
        # scipy raises these for a file cut inside its header or data, or that is no wav at all
        raise ValueError(f"{path}: not a readable wav file ({err or type(err).__name__}; truncated or damaged?)") from None
    if data.dtype == np.int16:
        out = data.astype(np.float32) / 2**15
    elif data.dtype == np.int32:
        out = (data.astype(np.float64) / 2**31).astype(np.float32)
    elif data.dtype == np.uint8:
        out = (data.astype(np.float32) - 128.0) / 128.0
    elif data.dtype in (np.float32, np.float64):
        out = data.astype(np.float32)
    else:
        raise ValueError(f"{path}: unsupported wav sample type {data.dtype}; expected int16, int32, uint8 or float")
    out = out[:, None] if out.ndim == 1 else out
    return np.ascontiguousarray(out.T), int(rate)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write (channels, n) float samples in [-1, 1] as float32 wav."""
    wavfile.write(Path(path), int(sample_rate), np.asarray(samples, dtype=np.float32).T)
