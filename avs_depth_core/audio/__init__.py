"""Chirp synthesis, echo windowing, STFT features and wav I/O (BatVision settings)."""

from avs_depth_core.audio.chirp import BATVISION_CHIRP, ChirpSpec, synthesize_chirp
from avs_depth_core.audio.features import StftSettings, echo_features, echo_spectrogram, resize_spectrogram
from avs_depth_core.audio.wav import read_wav
from avs_depth_core.audio.window import SPEED_OF_SOUND, echo_window, echo_window_samples

__all__ = [
    "BATVISION_CHIRP", "SPEED_OF_SOUND", "ChirpSpec", "StftSettings", "echo_features", "echo_spectrogram", "echo_window",
    "echo_window_samples", "read_wav", "resize_spectrogram", "synthesize_chirp",
]
