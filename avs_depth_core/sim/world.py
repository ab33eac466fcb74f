"""The synthetic audio-visual world: sequences of (RGB, metric depth, binaural echo) frames along smooth robot paths.

    world = SimWorld(preset="bv2", seed=0, height=256, width=512)
    seq = world.sequence(3)           # one scene + one trajectory, deterministic from (seed, 3)
    frame = seq.frame(10)             # SimFrame, deterministic from (seed, 3, 10), in any order

Randomness comes from independent streams of np.random.SeedSequence([seed, index]): scene, motion, scale, audio levels,
image noise; and per frame SeedSequence([seed, index, frame]) for the echo's tail and noise. So `--scale-ambiguous` with
a fixed scale changes nothing but the scale: the same scene, path, image noise and RGB.

Scale ambiguity: the scene (room, boxes, lights, texture periods), the camera path and the sound-scattering patches are
all multiplied by s about the origin. The camera's intrinsics do not change, so the image is the same for every s while
depth and echo delays grow by s. The robot's rig (speaker, microphone spacing) stays real-sized.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np

from avs_depth_core.audio.chirp import BATVISION_CHIRP, ChirpSpec
from avs_depth_core.audio.echo_stats import EchoStatsSettings, find_direct_path
from avs_depth_core.sim.acoustics import AcousticScene, BinauralRig, EchoSimulator
from avs_depth_core.sim.presets import PRESETS, Preset, get_preset, preset_parts
from avs_depth_core.sim.randomise import AcousticRanges, AcousticVariation, draw_variation
from avs_depth_core.sim.render import IMAGE_NOISE, PreparedScene, Renderer, intrinsics, prepare
from avs_depth_core.sim.scene import Scene, clearance_map, random_scene
from avs_depth_core.sim.trajectory import Motion, RobotPath

__all__ = ["PRESETS", "SimFrame", "SimSequence", "SimWorld", "simulator_direct_onset_s"]

# Per-sequence recording level: the direct path's peak, as a fraction of full scale (real BV2 sample: 0.60 and 0.75).
# It does not depend on the scene's scale (that would be a scale cue); returns louder than full scale, from surfaces a
# shrunken world brings close to the real-sized rig, go through the preamp's soft limiter (acoustics.preamp_limit).
LEVEL_RANGE = (0.6, 0.75)
CHANNEL_MISMATCH = 0.05   # std of the microphones' relative sensitivity


@dataclass(frozen=True)
class SimFrame:
    rgb: np.ndarray            # (H, W, 3) uint8
    depth: np.ndarray          # (H, W) float32 metres along camera Z; NaN beyond max_depth
    K: np.ndarray              # (3, 3) float64
    echo: np.ndarray           # (2, n) float32 in [-1, 1], channels "left,right"
    emission_offset: int       # index in echo of the sample recorded when the chirp left the speaker
    sample_rate: int
    chirp: ChirpSpec
    time_s: float              # since the sequence's first frame
    pose: np.ndarray           # (4, 4) camera-to-world (optical frame: x right, y down, z forward; world z up)
    scale: float
    max_depth: float
    index: int = 0             # frame number in its sequence
    # Worlds with moving objects only (sim/dynamic.py, DynamicWorld): the instance map (H, W) uint16 (0 = no object)
    # and the objects' ground truth.
    instances: np.ndarray | None = None
    objects: Any = None        # sim.dynamic.ObjectStates


def _texture_size(width: int) -> int:
    return int(min(256, max(64, 2 ** math.ceil(math.log2(max(width, 2) / 2)))))


class SimWorld:
    """A family of random worlds (a preset) at one image size and frame rate; sequences are drawn by index."""

    def __init__(self, preset: str = "bv2", seed: int = 0, height: int = 256, width: int = 512, scale_ambiguous: bool = False,
                 scale_range: tuple[float, float] = (0.5, 2.0), rate_hz: float = 10.0, *, ism_order: int = 3,
                 rig: BinauralRig | None = None, chirp: ChirpSpec = BATVISION_CHIRP,
                 acoustic_ranges: AcousticRanges | None = None, supersample: int = 1) -> None:
        self.preset: Preset = get_preset(preset)
        self.parts = preset_parts(preset)
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if int(height) < 8 or int(width) < 8:
            raise ValueError(f"image size must be at least 8x8 pixels, got height {height}, width {width}")
        lo, hi = (float(x) for x in scale_range)
        if not (0 < lo <= hi and math.isfinite(hi)):
            raise ValueError(f"scale range must satisfy 0 < low <= high, got {scale_range}")
        if not (rate_hz > 0 and math.isfinite(rate_hz)):
            raise ValueError(f"frame rate must be positive, got {rate_hz} Hz")
        self.seed, self.height, self.width = int(seed), int(height), int(width)
        self.scale_ambiguous, self.scale_range, self.rate_hz = bool(scale_ambiguous), (lo, hi), float(rate_hz)
        self.K = intrinsics(self.height, self.width, self.preset.hfov_deg)
        # supersample N > 1: anti-aliased colour (render.Renderer); the scene, textures, depth and noise stay as with 1.
        self.renderer = Renderer(self.K, self.height, self.width, self.preset.max_depth, supersample)
        self.acoustics = EchoSimulator(self.preset.max_depth, chirp=chirp, rig=rig or BinauralRig(), ism_order=ism_order)
        self.texture_size = _texture_size(self.width)
        # Acoustic domain randomisation (sim/randomise.py): None records every sequence through the same chain and room.
        self.acoustic_ranges = acoustic_ranges

    @property
    def max_depth(self) -> float:
        return self.preset.max_depth

    @property
    def echo_samples(self) -> int:
        return self.acoustics.num_samples

    def sequence(self, index: int) -> SimSequence:
        if not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"sequence index must be a non-negative integer, got {index!r}")
        return SimSequence(self, int(index))


class SimSequence:
    """One scene and one robot path. Frames are computed on request; the path is simulated lazily and cached."""

    def __init__(self, world: SimWorld, index: int) -> None:
        self.world, self.index = world, index
        self.name = f"{world.preset.name}-seed{world.seed}-seq{index:05d}"
        scene_ss, motion_ss, scale_ss, audio_ss, noise_ss = np.random.SeedSequence([world.seed, index]).spawn(5)
        preset = world.preset
        if len(world.parts) > 1:
            # A mix: the part comes from a stream of its own (the seventh child; the sixth is the acoustic variation's)
            weights = np.array([w for _, w in world.parts])
            pick = np.random.default_rng(np.random.SeedSequence([world.seed, index]).spawn(7)[6]).choice(
                len(weights), p=weights / weights.sum())
            preset = world.parts[int(pick)][0]
        self.preset: Preset = preset
        base = random_scene(preset, np.random.default_rng(scene_ss), world.texture_size)
        if world.scale_ambiguous:
            lo, hi = world.scale_range
            self.scale = float(math.exp(np.random.default_rng(scale_ss).uniform(math.log(lo), math.log(hi))))
        else:
            self.scale = 1.0
        self.scene: Scene = base.scaled(self.scale) if self.scale != 1.0 else base
        motion_rng = np.random.default_rng(motion_ss)
        motion = Motion.random(motion_rng, preset.speed, preset.camera_height, preset.camera_pitch_deg)
        self.path = RobotPath(clearance_map(base.room_lo, base.room_hi, base.boxes), preset.clearance, motion, motion_rng,
                              world.rate_hz, horizon=0.5 * preset.max_depth)
        audio_rng = np.random.default_rng(audio_ss)
        self.level = float(audio_rng.uniform(*LEVEL_RANGE))
        self.channel_gain = tuple(float(g) for g in np.clip(1 + audio_rng.normal(0, CHANNEL_MISMATCH, 2), 0.8, 1.2))
        pixels = world.height * world.width * 4
        self._noise = np.random.default_rng(noise_ss).normal(0, IMAGE_NOISE, pixels + 65536).astype(np.float32)
        self.render_scene: PreparedScene = prepare(self.scene)
        self.acoustic_scene: AcousticScene = world.acoustics.prepare(self.scene)
        self.variation: AcousticVariation | None = None
        self.simulator = world.acoustics
        if world.acoustic_ranges is not None:
            # A stream of its own (the sixth child; the first five are the ones above), so the scene, path and images
            # stay those of the plain world with the same seed.
            variation_ss = np.random.SeedSequence([world.seed, index]).spawn(6)[5]
            v = draw_variation(world.acoustic_ranges, np.random.default_rng(variation_ss))
            self.variation, self.level, self.channel_gain = v, v.level, v.ear_gain
            self.simulator = world.acoustics.varied(v)
            self.acoustic_scene = replace(self.acoustic_scene, t60=self.acoustic_scene.t60 * v.t60_factor,
                                          tail_energy=self.acoustic_scene.tail_energy * 10 ** (v.tail_gain_db / 10))

    def _frame_rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.world.seed, self.index, i])

    def time_s(self, i: int) -> float:
        return i / self.world.rate_hz

    def pose(self, i: int) -> np.ndarray:
        """Camera-to-world pose of frame i in the (scaled) scene."""
        pose = self.path.pose(i, self.time_s(i))
        pose[:3, 3] *= self.scale
        return pose

    def render(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 (H, W, 3) and depth float32 (H, W) of frame i."""
        start = int(self._frame_rng(i).integers(0, 65536))
        noise = self._noise[start:start + self.world.height * self.world.width * 4]
        return self.world.renderer.render(self.render_scene, self.pose(i), noise)

    def echo(self, i: int, noise: bool = True, tail: bool = True) -> np.ndarray:
        """The binaural recording (2, n) float32 of frame i's chirp (emitted at the frame's time)."""
        rng = self._frame_rng(i)
        rng.integers(0, 65536)  # the image-noise offset drawn by render(); keeps the two streams apart
        simulator = self.simulator
        if self.variation is not None and self.variation.jitter_ms > 0:
            jitter = np.random.default_rng([self.world.seed, self.index, i, 1]).uniform(-1, 1) * self.variation.jitter_ms
            simulator = simulator.with_latency(simulator.latency + jitter * 1e-3 * simulator.fs)
        return simulator.render(self.acoustic_scene_at(i), self.pose(i), rng, self.level, self.channel_gain,
                                noise=noise, tail=tail)

    def acoustic_scene_at(self, i: int) -> AcousticScene:
        """What sound meets at frame i's emission: the room, the same for every frame (moving objects: sim/dynamic.py)."""
        return self.acoustic_scene

    def frame(self, i: int) -> SimFrame:
        if not isinstance(i, (int, np.integer)) or i < 0:
            raise ValueError(f"frame index must be a non-negative integer, got {i!r}")
        i = int(i)
        rgb, depth = self.render(i)
        return self.assemble(i, rgb, depth, self.echo(i))

    def assemble(self, i: int, rgb: np.ndarray, depth: np.ndarray, echo: np.ndarray) -> SimFrame:
        """The SimFrame of frame i from its rendered parts (frame() = assemble(i, *render(i), echo(i)))."""
        world = self.world
        return SimFrame(rgb=rgb, depth=depth, K=world.K.copy(), echo=echo, emission_offset=world.acoustics.pre_roll,
                        sample_rate=world.acoustics.fs, chirp=world.acoustics.chirp_spec, time_s=self.time_s(i),
                        pose=self.pose(i), scale=self.scale, max_depth=world.max_depth, index=i)

    def frames(self, n: int, start: int = 0) -> Iterator[SimFrame]:
        """Frames start, start + 1, ..., start + n - 1."""
        if n < 0 or start < 0:
            raise ValueError(f"frames needs n >= 0 and start >= 0, got n={n}, start={start}")
        for i in range(start, start + n):
            yield self.frame(i)


@lru_cache(maxsize=4)
def simulator_direct_onset_s(preset: str = "bv2", seed: int = 0) -> float:
    """Where the simulator's direct path starts after its emission mark, s: measured with the same onset detector on
    the first frame of a plain world (the rig's speaker-to-microphone flight plus the transducer's delay)."""
    world = SimWorld(preset, seed=seed, height=8, width=16)
    echo = world.sequence(0).echo(0, noise=False, tail=False)
    direct = find_direct_path(echo, world.acoustics.fs, world.acoustics.pre_roll, EchoStatsSettings())
    return (direct.onset - world.acoustics.pre_roll) / world.acoustics.fs
