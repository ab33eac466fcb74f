"""Latency compensation by the direct path (audio/direct_path.py) on signals with known delays."""

import numpy as np
import pytest

from avs_depth_core.audio import synthesize_chirp
from avs_depth_core.audio.direct_path import direct_aligned_offset
from avs_depth_core.sim.world import simulator_direct_onset_s

FS = 44100


def _recording(direct_at: int, echo_at: int, n: int = 4000) -> np.ndarray:
    chirp = synthesize_chirp()
    x = np.random.default_rng(0).normal(0, 1e-4, (2, n))
    x[:, direct_at:direct_at + len(chirp)] += 0.7 * chirp
    x[:, echo_at:echo_at + len(chirp)] += 0.2 * chirp
    return x.astype(np.float32)


@pytest.mark.parametrize("latency", [0, 120, 300])
def test_offset_puts_the_direct_path_at_the_reference(latency):
    x = _recording(latency + 19, latency + 400)
    offset = direct_aligned_offset(x, FS, reference_onset_s=19 / FS)
    # The onset is where the sweep's fade-in reaches 10 % of the peak: a few samples in, the same for the simulator's
    # reference (measured with the same detector), so only the latency shifts the offset.
    assert 0 <= offset - latency <= 6
    assert direct_aligned_offset(_recording(19, 400), FS, 19 / FS) == offset - latency
    # Never before the given emission mark, and a reference later than the onset clamps to it.
    assert direct_aligned_offset(x, FS, reference_onset_s=0.01, emission_offset=0) == 0


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="binaural"):
        direct_aligned_offset(np.zeros((1, 100), np.float32), FS, 0.0)
    with pytest.raises(ValueError, match="reference_onset_s"):
        direct_aligned_offset(np.zeros((2, 100), np.float32), FS, -1.0)


def test_simulator_direct_onset_is_the_rig_flight_time():
    # The rig's speaker sits 0.06 m below and 0.02 m ahead of the ears, 0.09 m to the side: 0.11 m, 0.32 ms of flight,
    # plus the transducer model's group delay.
    assert 0.25e-3 < simulator_direct_onset_s() < 0.8e-3
