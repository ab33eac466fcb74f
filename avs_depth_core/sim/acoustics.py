"""Binaural echoes of the chirp from a scene's geometry, vectorised numpy (no per-path Python loops).

The room impulse response from the speaker to each microphone is a sum of delayed, attenuated taps:
- the direct speaker -> microphone path (through the rig, attenuated by `direct_gain`);
- specular reflections off the room (image-source method of Allen & Berkley 1979 for a shoebox, up to `ism_order`);
- first-order specular returns off every box face: the mirror path when its reflection point lies on the face, otherwise
  the shortest path over the face (its nearest edge or corner, weakened like a diffracted return), so every obstacle
  returns sound from its nearest point;
- first-order diffuse returns off small patches of every surface (Lambertian scattering with a fixed random phase);
- a late stochastic tail decaying with the room's Sabine reverberation time.
Taps carry 1/r spreading, air absorption, surface absorption, a forward-facing speaker's directivity and a little head
shadow at each ear. Occlusion by boxes is not modelled (sound diffracts around furniture-sized objects anyway). The
impulse response is convolved with the emitted chirp and scaled so the direct path peaks at the recorder's level; then
background and microphone noise are added, and the microphone preamp's soft limiter (preamp_limit) keeps the loudest
returns below full scale.

Sample 0 of the returned window is `pre_roll` samples before the chirp leaves the speaker (emission_offset = pre_roll),
and the window covers BatVision's echo cut for the preset's max depth at 340 m/s plus one chirp, so downstream cutting
with either 340 or 343 m/s finds its samples.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace

import numpy as np
from scipy.signal import butter, fftconvolve, lfilter, sosfilt

from avs_depth_core.audio.chirp import BATVISION_CHIRP, ChirpSpec, synthesize_chirp
from avs_depth_core.audio.window import SPEED_OF_SOUND, echo_window_samples
from avs_depth_core.sim.randomise import AcousticVariation, chain_gain_db, hum, minimum_phase_fir, wall_gain_db
from avs_depth_core.sim.scene import Patches, Scene, Surfaces, scene_patches, scene_surfaces

PRE_ROLL = 256            # samples before emission; the real BV2 sample's direct path arrives ~300 samples in
# Broadband air absorption in dB per metre: 8 kHz at 20 C and 50-70 % humidity, m = 0.0135 1/m (Vorlaender 2008 annex,
# as tabulated in pyroomacoustics.parameters), i.e. 4.34 * m = 0.06 dB/m; the chirp's energy lies mostly above 2 kHz.
AIR_DB_PER_M = 0.06
SINC_TAPS = 8             # fractional-delay interpolation of the specular taps (Hann-windowed sinc)
# Openings, people and soft furnishing the scenes do not model, as extra absorption per square metre of surface. With it
# bv1 offices reverberate for 0.2-0.75 s (the real BV2 sample's tail falls ~17 dB in 90 ms, i.e. T60 ~0.3 s) and bv2 halls
# with hard surfaces for ~2 s.
UNMODELLED_ABSORPTION = 0.08
SPEAKER_Q = 3.0           # directivity factor of a cardioid: the reverberant field gets a third of the on-axis power
# The microphone preamp's soft limiter: linear up to LIMITER_THRESHOLD of full scale, then a tanh knee that approaches
# LIMITER_CEILING. An assumption about the recorder (field recorders and audio interfaces ship such limiters; BatVision's
# is not documented), needed because the rig is real-sized while --scale-ambiguous shrinks the world: at scale 0.5 the
# floor lies ~0.3 m below the microphones, walls and boxes come as close as 0.6 x clearance x 0.5, and their first
# returns exceed the direct path (up to ~3x). The threshold sits above the direct path's level (world.LEVEL_RANGE
# 0.6-0.75 times a channel gain near 1), so ordinary recordings pass unchanged (a rare direct path at 0.85 leaves at
# 0.849); the ceiling stays below data/messages.CLIP_LEVEL (0.999), so limited peaks are not taken for clipping. A
# recording gain lowered with the scene's scale would avoid the limiter, but would give the network a level cue for
# the scale that the scale-ambiguous data hides.
LIMITER_THRESHOLD = 0.8
LIMITER_CEILING = 0.98


@dataclass(frozen=True)
class BinauralRig:
    """Speaker and two microphones fixed to the camera, in the camera's optical frame (x right, y down, z forward).

    mic_spacing: distance between the ears (BatVision records binaurally; 0.18 m is an assumption, about a human head).
    direct_gain: the direct speaker -> microphone path relative to free-field 1/r spreading. The speaker faces forward and
    the microphones sit beside and behind it, so the direct path is weak; 0.07 puts echoes from 1-4 m at 0.1-0.5 of full
    scale under a direct path peaking at 0.6-0.75, as in the real BV2 sample. Tuned by eye on that
    one sample: a documented assumption, not a calibration.
    """
    mic_spacing: float = 0.18
    speaker_offset: tuple[float, float, float] = (0.0, 0.06, 0.0)
    mic_offset: tuple[float, float, float] = (0.0, 0.0, -0.02)
    direct_gain: float = 0.07
    speaker_floor: float = 0.1    # speaker directivity: max(floor, (1 + cos theta) / 2) (cardioid)
    head_shadow: float = 0.3      # an ear hears sound from the far side this much weaker

    def positions(self, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """World positions: speaker (3,), mics (2, 3) [left, right]; speaker axis (3,); outward ear axes (2, 3)."""
        R, o = pose[:3, :3], pose[:3, 3]
        speaker = o + R @ np.asarray(self.speaker_offset)
        half = 0.5 * self.mic_spacing
        ears = np.asarray(self.mic_offset) + np.array([[-half, 0.0, 0.0], [half, 0.0, 0.0]])
        mics = o + ears @ R.T
        return speaker, mics, R[:, 2], np.stack([-R[:, 0], R[:, 0]])


def image_source_orders(max_order: int) -> tuple[np.ndarray, np.ndarray]:
    """All shoebox images up to max_order reflections, the direct source excluded.
    Returns (n, q), each (M, 3) int: the image of axis k sits at lo + 2 n L + (1 - 2 q)(x - lo) and has met the lo wall
    |n - q| times and the hi wall |n| times (Allen & Berkley 1979)."""
    per_axis = [(n, q) for n in range(-max_order, max_order + 2) for q in (0, 1) if abs(n - q) + abs(n) <= max_order]
    rows = []
    for a in per_axis:
        for b in per_axis:
            for c in per_axis:
                order = sum(abs(n - q) + abs(n) for n, q in (a, b, c))
                if 0 < order <= max_order:
                    rows.append((a, b, c))
    arr = np.array(rows, np.int64)  # (M, 3, 2)
    return arr[..., 0], arr[..., 1]


@dataclass(frozen=True)
class AcousticScene:
    """What the echo simulator needs from a scene, computed once per scene."""
    scene: Scene
    surfaces: Surfaces
    patches: Patches
    patch_gain: np.ndarray      # (P,) sqrt((1 - absorption) * scattering * area / pi) * random phase amplitude
    image_gain: np.ndarray      # (M,) product of the walls' specular reflection amplitudes per image
    box_faces: np.ndarray       # indices of the box faces in surfaces
    box_gain: np.ndarray        # their specular reflection amplitudes
    t60: float                  # Sabine reverberation time, s
    tail_energy: float          # sum of squared tail taps (direct tap = 1 / r convention)
    mean_free_path: float       # 4 V / S, metres


class EchoSimulator:
    """Binaural recordings of one chirp in a scene: `prepare(scene)` once, then `render(prepared, pose, rng, ...)` per frame.

    max_depth sets the window (BatVision's cut for it at 340 m/s after the pre-roll, plus one chirp); ism_order the
    image-source order of the room; ambient_noise / mic_noise the standard deviations of the background (low-passed,
    partly shared by the ears) and microphone (white) noise, full scale = 1 (the real BV2 sample shows ~1.5e-3 before the
    direct path); transducer=False emits the bare chirp instead of the chirp through transducer_response().
    limiter: (threshold, ceiling) of the preamp's soft limiter (preamp_limit), or None for none: samples beyond full scale
    are then hard-clipped to [-1, 1], as an ADC does.
    """

    def __init__(self, max_depth: float, chirp: ChirpSpec = BATVISION_CHIRP, rig: BinauralRig = BinauralRig(),
                 ism_order: int = 3, speed_of_sound: float = SPEED_OF_SOUND, pre_roll: int = PRE_ROLL,
                 ambient_noise: float = 1.2e-3, mic_noise: float = 3e-4, transducer: bool = True,
                 limiter: tuple[float, float] | None = (LIMITER_THRESHOLD, LIMITER_CEILING)) -> None:
        if ism_order < 0:
            raise ValueError(f"image-source order must be >= 0, got {ism_order}")
        if limiter is not None and not 0 < limiter[0] < limiter[1] <= 1:
            raise ValueError(f"limiter needs 0 < threshold < ceiling <= 1 (of full scale), got {limiter}")
        self.limiter = None if limiter is None else (float(limiter[0]), float(limiter[1]))
        self.chirp_spec, self.rig, self.c = chirp, rig, float(speed_of_sound)
        self.fs = chirp.sample_rate
        self.chirp = synthesize_chirp(chirp).astype(np.float64)
        # What actually leaves the speaker and reaches the recorder: the chirp through the transducers' response.
        self.emitted = transducer_response(self.chirp, self.fs) if transducer else self.chirp
        self.pre_roll = int(pre_roll)
        # BatVision's loader cuts int(2 * max_depth / 340 * fs) samples after emission (its dataloader); add one chirp.
        self.num_samples = self.pre_roll + echo_window_samples(max_depth, self.fs, 340.0) + 1 + len(self.chirp)
        self.ism_order = ism_order
        self.n, self.q = image_source_orders(ism_order)
        self.ambient_noise, self.mic_noise = ambient_noise, mic_noise
        half = SINC_TAPS // 2
        self._sinc_offsets = np.arange(-half + 1, half + 1)
        # Set by varied() only (acoustic domain randomisation); the plain simulator leaves them as they are here.
        self.variation: AcousticVariation | None = None
        self.latency = 0.0            # samples between the emission mark (pre_roll) and the sound leaving the speaker
        self.reflection_fir: np.ndarray | None = None

    def varied(self, v: AcousticVariation) -> EchoSimulator:
        """A copy recording through variation v (sim/randomise.py): its rig, chain, latency, clock, noise, hum and
        limiter; the room's own draws (reverberation time, tail energy) apply to the AcousticScene (SimSequence)."""
        out = copy.copy(self)
        out.variation = v
        out.rig = replace(self.rig, mic_spacing=v.ear_spacing_m, direct_gain=v.direct_gain)
        out.c = self.c / (1 + v.clock_ppm * 1e-6)  # a fast recording clock counts more samples per metre
        out.latency = v.latency_ms * 1e-3 * self.fs
        taps = 512
        freqs = np.fft.rfftfreq(2 * taps, 1 / self.fs)
        emitted = fftconvolve(self.emitted, minimum_phase_fir(chain_gain_db(v, freqs), taps))
        out.emitted = emitted[: np.nonzero(np.abs(emitted) > 1e-4 * np.abs(emitted).max())[0][-1] + 1]
        out.reflection_fir = minimum_phase_fir(wall_gain_db(v, freqs), taps)
        out.ambient_noise, out.mic_noise = v.ambient_noise, v.mic_noise
        out.limiter = (v.limiter_threshold, LIMITER_CEILING)
        return out

    def with_latency(self, latency: float) -> EchoSimulator:
        """A copy whose sound leaves the speaker `latency` samples after the emission mark."""
        out = copy.copy(self)
        out.latency = float(latency)
        return out

    def prepare(self, scene: Scene) -> AcousticScene:
        surf = scene_surfaces(scene)
        patches = scene_patches(scene, surf)
        # Each surface reflects a (1 - absorption) share of the energy, split specular (1 - scattering) / diffuse (scattering).
        specular = np.sqrt((1 - surf.absorption) * (1 - surf.scattering))
        lo_gain, hi_gain = specular[0:6:2], specular[1:6:2]  # room faces: x-lo, x-hi, y-lo, y-hi, floor, ceiling
        image_gain = np.prod(lo_gain ** np.abs(self.n - self.q) * hi_gain ** np.abs(self.n), axis=1)
        patch_gain = np.sqrt((1 - patches.absorption) * patches.scattering * patches.area / np.pi) * patches.amplitude
        box_faces = np.nonzero(surf.is_box & (surf.normal[:, 2] > -0.5))[0]
        size = scene.size
        volume = float(np.prod(size) - sum(8 * np.prod(b.half) for b in scene.boxes))
        areas = surf.extent.prod(axis=1)
        sabine_area = float(np.sum(areas * surf.absorption * ~(surf.is_box & (surf.normal[:, 2] < -0.5))))
        sabine_area += 4 * 0.003 * volume  # air: 4 m V with m = 0.003 1/m (2-4 kHz, same table as AIR_DB_PER_M)
        sabine_area += UNMODELLED_ABSORPTION * float(areas.sum())
        t60 = 0.161 * volume / sabine_area
        mean_absorption = min(sabine_area / float(areas.sum()), 0.95)
        # Diffuse-field steady state: reverberant intensity 4 P (1 - a) / A, with P = 4 pi / Q for a source whose on-axis
        # tap is 1 / r and whose directivity factor is Q (3 for the cardioid speaker).
        tail_energy = 16 * np.pi * (1 - mean_absorption) / sabine_area / SPEAKER_Q
        return AcousticScene(scene, surf, patches, patch_gain, image_gain, box_faces, specular[box_faces], float(t60),
                             float(tail_energy), float(4 * volume / areas.sum()))

    # --- geometry -------------------------------------------------------------------------------------------------

    def _directivity(self, cos_theta: np.ndarray) -> np.ndarray:
        return np.maximum(self.rig.speaker_floor, 0.5 * (1 + cos_theta))

    def _shadow(self, towards_source: np.ndarray, outward: np.ndarray) -> np.ndarray:
        """towards_source (2, K, 3) unit vectors from each mic; outward (2, 3)."""
        facing = np.einsum("mkd,md->mk", towards_source, outward)
        return 1 - self.rig.head_shadow * np.maximum(0.0, -facing)

    def _air(self, length: np.ndarray) -> np.ndarray:
        return 10 ** (-AIR_DB_PER_M * length / 20)

    def paths(self, ac: AcousticScene, pose: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Every tap per microphone, grouped by kind: {kind: (path lengths (2, K) m, amplitudes (2, K))}.
        Kinds: direct, room (image sources), box (specular / nearest-point returns), diffuse (patches)."""
        speaker, mics, axis, outward = self.rig.positions(pose)
        scene, out = ac.scene, {}
        d = np.linalg.norm(mics - speaker, axis=1)
        out["direct"] = (d[:, None], (self.rig.direct_gain / d)[:, None])

        lo, hi = scene.room_lo, scene.room_hi
        images = lo + 2 * self.n * (hi - lo) + (1 - 2 * self.q) * (speaker - lo)  # (M, 3)
        to_mic = mics[:, None, :] - images[None]                                   # (2, M, 3)
        r = np.linalg.norm(to_mic, axis=2)
        depart = to_mic / r[..., None] * np.where(self.q % 2, -1.0, 1.0)[None]       # mirrored back to the real source
        gain = ac.image_gain * self._directivity(depart @ axis) * self._shadow(-to_mic / r[..., None], outward) / r * self._air(r)
        out["room"] = (r, gain)

        surf, faces = ac.surfaces, ac.box_faces
        if len(faces):
            normal, u, v = surf.normal[faces], surf.u_axis[faces], surf.v_axis[faces]
            half = 0.5 * surf.extent[faces]
            centre = surf.origin[faces] + half[:, :1] * u + half[:, 1:] * v
            s_dist = np.einsum("fk,fk->f", speaker - centre, normal)                                          # (F,)
            m_dist = np.einsum("mfk,fk->mf", mics[:, None, :] - centre[None], normal)                         # (2, F)
            mirrored = speaker - 2 * s_dist[:, None] * normal                                                 # (F, 3)
            t = s_dist[None] / np.where(s_dist[None] + m_dist > 0, s_dist[None] + m_dist, 1.0)
            hit = mirrored[None] + t[..., None] * (mics[:, None, :] - mirrored[None])                        # (2, F, 3)
            rel = hit - centre[None]
            pu, pv = np.einsum("mfk,fk->mf", rel, u), np.einsum("mfk,fk->mf", rel, v)
            cu, cv = np.clip(pu, -half[:, 0], half[:, 0]), np.clip(pv, -half[:, 1], half[:, 1])
            point = centre[None] + cu[..., None] * u[None] + cv[..., None] * v[None]
            leg1 = point - speaker
            r1 = np.linalg.norm(leg1, axis=2)
            leg2 = mics[:, None, :] - point
            r2 = np.linalg.norm(leg2, axis=2)
            length = r1 + r2
            off = np.hypot(pu - cu, pv - cv)
            edge = np.where(off > 1e-9, 0.3 / (1 + 10 * off / length), 1.0)
            visible = (s_dist[None] > 0) & (m_dist > 0)
            gain = (ac.box_gain * edge * self._directivity(np.einsum("mfk,k->mf", leg1, axis) / r1)
                    * self._shadow(-leg2 / r2[..., None], outward) / length * self._air(length))
            out["box"] = (length, np.where(visible, gain, 0.0))

        p = ac.patches
        leg1 = p.position - speaker                                   # (P, 3)
        r1 = np.linalg.norm(leg1, axis=1)
        cos_in = -np.einsum("pk,pk->p", leg1, p.normal) / r1
        leg2 = mics[:, None, :] - p.position[None]                    # (2, P, 3)
        r2 = np.linalg.norm(leg2, axis=2)
        cos_out = np.einsum("mpk,pk->mp", leg2, p.normal) / r2
        lit = (cos_in > 0)[None] & (cos_out > 0)
        length = r1[None] + r2
        gain = (ac.patch_gain * np.sqrt(np.where(lit, cos_in[None] * cos_out, 0.0)) / (r1[None] * r2)
                * self._directivity(leg1 @ axis / r1)[None] * self._shadow(-leg2 / r2[..., None], outward) * self._air(length))
        out["diffuse"] = (length, gain)
        return out

    # --- signal ---------------------------------------------------------------------------------------------------

    def _add_sinc_taps(self, ir: np.ndarray, delays: np.ndarray, gains: np.ndarray) -> None:
        """Add taps at fractional sample positions with a Hann-windowed sinc (SINC_TAPS long), per channel."""
        for ch in range(ir.shape[0]):
            pos = delays[ch]
            base = np.floor(pos)
            idx = base[:, None] + self._sinc_offsets[None]
            x = idx - pos[:, None]
            w = np.sinc(x) * (0.5 + 0.5 * np.cos(np.pi * x / (SINC_TAPS / 2)))
            ok = (idx >= 0) & (idx < ir.shape[1])
            ir[ch] += np.bincount(idx[ok].astype(np.int64), weights=(w * gains[ch][:, None])[ok], minlength=ir.shape[1])

    def _add_linear_taps(self, ir: np.ndarray, delays: np.ndarray, gains: np.ndarray) -> None:
        for ch in range(ir.shape[0]):
            pos = delays[ch]
            base = np.floor(pos).astype(np.int64)
            frac = pos - base
            idx = np.concatenate([base, base + 1])
            w = np.concatenate([gains[ch] * (1 - frac), gains[ch] * frac])
            ok = (idx >= 0) & (idx < ir.shape[1])
            ir[ch] += np.bincount(idx[ok], weights=w[ok], minlength=ir.shape[1])

    def impulse_response(self, ac: AcousticScene, pose: np.ndarray, rng: np.random.Generator | None = None,
                         tail: bool = True) -> np.ndarray:
        """(2, num_samples) impulse response, emission at sample pre_roll, direct tap = 1 / r convention.
        The stochastic tail needs rng."""
        ir = np.zeros((2, self.num_samples))
        direct = ir if self.reflection_fir is None else np.zeros_like(ir)
        paths = self.paths(ac, pose)
        to_samples = self.fs / self.c
        for kind, (length, gain) in paths.items():
            delays = self.pre_roll + self.latency + length * to_samples
            add = self._add_linear_taps if kind == "diffuse" else self._add_sinc_taps
            add(direct if kind == "direct" else ir, delays, gain)
        if tail and rng is not None:
            ir += self._tail(ac, pose, rng)
        if self.reflection_fir is not None:  # absorption per band colours what the walls return, not the direct path
            ir = fftconvolve(ir, self.reflection_fir[None], axes=1)[:, : self.num_samples] + direct
        return ir

    def _tail(self, ac: AcousticScene, pose: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Gaussian noise under exp(-6.91 t / T60), scaled to the diffuse-field energy, faded in between the first room
        reflection and the time sound needs for `ism_order` mean free paths (where the image sources thin out)."""
        speaker = self.rig.positions(pose)[0]
        scene = ac.scene
        nearest = float(min(np.min(speaker - scene.room_lo), np.min(scene.room_hi - speaker)))
        t_first = 2 * nearest / self.c
        t_mix = max(2 * t_first, max(1, self.ism_order) * ac.mean_free_path / self.c)
        t = (np.arange(self.num_samples) - self.pre_roll - self.latency) / self.fs
        decay = 6.91 / ac.t60
        # sum over samples of a0^2 exp(-2 decay t) = a0^2 fs / (2 decay) = tail_energy
        a0 = math.sqrt(ac.tail_energy * 2 * decay / self.fs)
        ramp = np.clip((t - t_first) / max(t_mix - t_first, 1e-6), 0.0, 1.0)
        envelope = a0 * np.exp(-decay * np.maximum(t, 0.0)) * ramp * ramp * (3 - 2 * ramp)
        return rng.standard_normal((2, self.num_samples)) * envelope

    def render(self, ac: AcousticScene, pose: np.ndarray, rng: np.random.Generator | None = None, level: float = 0.68,
               channel_gain: tuple[float, float] = (1.0, 1.0), noise: bool = True, tail: bool = True) -> np.ndarray:
        """The recorded window: (2, num_samples) float32 in [-1, 1] (left, right), the direct path peaking near `level`,
        through the preamp's limiter (or hard-clipped at full scale without one). rng drives the reverberation tail and
        the noise; without rng (or with noise=False, tail=False) it is noise-free."""
        ir = self.impulse_response(ac, pose, rng, tail=tail)
        wave = fftconvolve(ir, self.emitted[None], axes=1)[:, : self.num_samples] * self.recording_scale(pose, level)
        wave *= np.asarray(channel_gain)[:, None]
        if noise and rng is not None:
            white = rng.standard_normal((3, self.num_samples))
            # Ambient noise: low-passed (one pole at ~140 Hz), half shared by both ears; microphone self-noise: white.
            ambient = lfilter([0.02], [1.0, -0.98], white, axis=1)
            ambient /= max(float(ambient.std()), 1e-12)
            shared = ambient[2] * math.sqrt(0.5)
            wave += self.ambient_noise * (ambient[:2] * math.sqrt(0.5) + shared)
            wave += self.mic_noise * rng.standard_normal((2, self.num_samples))
            if self.variation is not None:
                wave += hum(self.variation, self.num_samples, self.fs, rng)
        if self.limiter is not None:
            wave = preamp_limit(wave, *self.limiter)
        return np.clip(wave, -1.0, 1.0).astype(np.float32)


    def recording_scale(self, pose: np.ndarray, level: float) -> float:
        """Factor from (impulse response * emitted sound) to the recording: the direct path then peaks near `level`."""
        speaker, mics, _, _ = self.rig.positions(pose)
        d = float(np.linalg.norm(mics - speaker, axis=1).mean())
        return level / (self.rig.direct_gain / d) / float(np.abs(self.emitted).max())

    def recording_response(self, ac: AcousticScene, pose: np.ndarray, rng: np.random.Generator | None = None,
                           level: float = 0.68, channel_gain: tuple[float, float] = (1.0, 1.0),
                           tail: bool = True) -> np.ndarray:
        """(2, n) float64 filter from the bare chirp, as played, to the noiseless recording before the preamp: the impulse
        response through the transducers, scaled as render() scales it. Convolving the chirp with it gives render()'s
        wave without noise and limiter (up to the transducer tail render() trims). Sample 0 is the emission; the pre-roll
        is not included. For a room in the loop (avs_depth_ros.room_loop), which convolves what a speaker plays."""
        ir = self.impulse_response(ac, pose, rng, tail=tail)[:, self.pre_roll:]
        transducers = transducer_response(np.r_[1.0, np.zeros(63)], self.fs)
        response = fftconvolve(ir, transducers[None], axes=1)[:, : ir.shape[1]]
        return response * self.recording_scale(pose, level) * np.asarray(channel_gain)[:, None]


def preamp_limit(wave: np.ndarray, threshold: float = LIMITER_THRESHOLD, ceiling: float = LIMITER_CEILING) -> np.ndarray:
    """A soft limiter: |x| <= threshold passes unchanged; above, threshold + (ceiling - threshold) tanh(excess / (ceiling -
    threshold)), which has slope 1 at the threshold and rises monotonically towards the ceiling. Sign is kept."""
    magnitude = np.abs(wave)
    over = magnitude > threshold
    if not over.any():
        return wave
    span = ceiling - threshold
    out = wave.copy()
    out[over] = np.sign(wave[over]) * (threshold + span * np.tanh((magnitude[over] - threshold) / span))
    return out


def _peaking_biquad(f0: float, gain_db: float, q: float, fs: int) -> np.ndarray:
    """One second-order section of a peaking equaliser (R. Bristow-Johnson, Audio EQ Cookbook)."""
    a = 10 ** (gain_db / 40)
    w = 2 * np.pi * f0 / fs
    alpha = np.sin(w) / (2 * q)
    b0, b1, b2 = 1 + alpha * a, -2 * np.cos(w), 1 - alpha * a
    a0, a1, a2 = 1 + alpha / a, -2 * np.cos(w), 1 - alpha / a
    return np.array([[b0 / a0, b1 / a0, b2 / a0, 1.0, a1 / a0, a2 / a0]])


def transducer_response(signal: np.ndarray, fs: int, tail: int = 512) -> np.ndarray:
    """The signal through a generic small loudspeaker and microphone: 2nd-order high-pass at 200 Hz, low-pass at 18 kHz and
    a +6 dB resonance at 1.5 kHz (Q 1.5). An assumption, not a measurement of BatVision's speaker (a JBL Flip 4): it gives
    the direct path the ringing onset of the real BV2 recordings instead of a flat-topped chirp. The ringing tail is kept
    down to 1e-4 of the peak (at most `tail` samples)."""
    sos = np.concatenate([butter(2, 200, "highpass", fs=fs, output="sos"), butter(2, 18_000, "lowpass", fs=fs, output="sos"),
                          _peaking_biquad(1500.0, 6.0, 1.5, fs)])
    out = sosfilt(sos, np.concatenate([signal, np.zeros(tail)]))
    keep = np.nonzero(np.abs(out) > 1e-4 * np.abs(out).max())[0][-1] + 1
    return out[:keep]

