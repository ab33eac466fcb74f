"""Latency compensation by the direct path: put a recording's emission mark where the training world's would be.

A real rig's recording starts some milliseconds before the chirp leaves the speaker (audio buffers, Bluetooth: the real
BatVision V2 sample's direct path starts 6.5 ms after its first sample), while the simulator's emission mark is the
moment the chirp leaves the speaker (direct path 0.3-0.5 ms later: the speaker-to-microphone flight). Every echo then
comes 1.1 m "late" to a model trained on the simulator. Sonar practice takes time zero from the direct path (the
transmit pulse seen by the receiver); this does the same with the onset detector of echo-stats, from the audio alone:

    offset = direct_aligned_offset(samples, fs, reference_onset_s=simulator_direct_onset_s())  # sim.world
"""

from __future__ import annotations

import numpy as np

from avs_depth_core.audio.echo_stats import EchoStatsSettings, find_direct_path


def direct_aligned_offset(samples: np.ndarray, fs: int, reference_onset_s: float, emission_offset: int = 0,
                          search_s: float = 0.02) -> int:
    """The sample index to use as the emission so that the recording's direct-path onset (the strongest arrival within
    search_s after `emission_offset`, echo_stats.find_direct_path) lies reference_onset_s after it; never before
    `emission_offset`."""
    if samples.ndim != 2 or samples.shape[0] != 2:
        raise ValueError(f"expected a (2, n) binaural recording, got shape {samples.shape}")
    if not reference_onset_s >= 0:
        raise ValueError(f"reference_onset_s must be >= 0, got {reference_onset_s}")
    direct = find_direct_path(samples, fs, emission_offset, EchoStatsSettings(direct_search_s=search_s))
    return max(int(emission_offset), direct.onset - int(round(reference_onset_s * fs)))
