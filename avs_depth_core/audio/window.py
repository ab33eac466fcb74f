"""The echo window: the samples after emission that can hold echoes from within the maximum depth."""

from __future__ import annotations

import numpy as np

# m/s at about 20 C. BatVision's loader (AmandineBtto/Batvision-Dataset) cuts with 340 m/s; pass speed_of_sound=340 to match it.
SPEED_OF_SOUND = 343.0


def echo_window_samples(max_depth: float, sample_rate: int, speed_of_sound: float = SPEED_OF_SOUND) -> int:
    """Round trip to max_depth in samples: int(2 * max_depth / c * fs). BV2 (30 m, 340 m/s) gives 7782, BV1 (12 m) 3112."""
    if max_depth <= 0 or sample_rate <= 0 or speed_of_sound <= 0:
        raise ValueError(f"echo window needs positive max_depth, sample_rate and speed_of_sound, "
                         f"got {max_depth}, {sample_rate}, {speed_of_sound}")
    return int(2.0 * max_depth / speed_of_sound * sample_rate)


def echo_window(samples: np.ndarray, sample_rate: int, max_depth: float, emission_offset: int = 0,
                speed_of_sound: float = SPEED_OF_SOUND) -> np.ndarray:
    """Cut (channels, n) samples to the window [emission, emission + round trip to max_depth), zero-padding a short one."""
    samples = np.atleast_2d(np.asarray(samples, dtype=np.float32))
    length = echo_window_samples(max_depth, sample_rate, speed_of_sound)
    if not 0 <= emission_offset <= samples.shape[1]:
        raise ValueError(f"emission offset {emission_offset} lies outside the {samples.shape[1]}-sample recording")
    out = samples[:, emission_offset:emission_offset + length]
    if out.shape[1] < length:
        out = np.pad(out, ((0, 0), (0, length - out.shape[1])))
    return out
