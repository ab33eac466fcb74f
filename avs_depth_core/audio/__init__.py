"""Chirp synthesis, echo windowing, STFT features and wav I/O (BatVision settings).

The STFT features need torch; they are imported on first use, so that audio drivers (echo_node, the room loop) start
without loading torch (5 s of a 10 s echo_node start at CPU load 8 on 2 cores).
"""

from typing import Any

from avs_depth_core.audio.chirp import BATVISION_CHIRP, ChirpSpec, synthesize_chirp
from avs_depth_core.audio.wav import read_wav
from avs_depth_core.audio.window import SPEED_OF_SOUND, echo_window, echo_window_samples

_FEATURES = ("StftSettings", "echo_features", "echo_spectrogram", "resize_spectrogram")

__all__ = [
    "BATVISION_CHIRP", "SPEED_OF_SOUND", "ChirpSpec", "StftSettings", "echo_features", "echo_spectrogram", "echo_window",
    "echo_window_samples", "read_wav", "resize_spectrogram", "synthesize_chirp",
]


def __getattr__(name: str) -> Any:
    if name in _FEATURES:
        from avs_depth_core.audio import features

        return getattr(features, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
