"""EchoSimulator.recording_response: the filter from the played chirp to the recording, as render() records it."""

from __future__ import annotations

import numpy as np

from avs_depth_core.sim.world import SimWorld


def test_recording_response_reproduces_the_simulators_recording():
    world = SimWorld("bv2", seed=1, height=32, width=64)
    seq = world.sequence(0)
    ac = world.acoustics
    response = ac.recording_response(seq.acoustic_scene, seq.pose(3), None, seq.level, seq.channel_gain, tail=False)
    heard = np.stack([np.convolve(ac.chirp, response[c]) for c in range(2)])
    rendered = seq.echo(3, noise=False, tail=False)[:, ac.pre_roll:]
    n = min(heard.shape[1], rendered.shape[1])
    peak = np.abs(rendered).max()
    assert 0.5 < peak < 0.99 and np.abs(heard[:, :n] - rendered[:, :n]).max() < 1e-3 * peak
