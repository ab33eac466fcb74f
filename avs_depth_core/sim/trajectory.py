"""Smooth robot trajectories through a room's free floor, and camera poses along them.

The robot is a unicycle that drives to random goals on the reachable floor, one after another. For each goal a geodesic
distance map over the floor cells that keep `clearance` to walls and boxes is computed (Dijkstra on the 8-connected grid),
so the robot never gets trapped behind furniture. Once per frame it probes directions around its heading and steers by a
soft arg-max that favours progress along the geodesic map and small turns, plus a slow random "wander" turn; turn rate
and speed are low-pass filtered and integrated in substeps, so heading and position are smooth. It slows down where the
free run ahead is short, and the step length never exceeds the clearance minus a hard minimum, so the robot cannot get
closer than `hard_fraction * clearance` to a wall or box. The path is simulated lazily and only ever extended (goals are
drawn from their own random stream as they are needed), so frame i depends on (scene, seed) and i alone, never on how
many frames are asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from avs_depth_core.sim.scene import ClearanceMap, reachable_fraction

PROBE_ANGLES = np.radians(np.arange(-150, 151, 15))
PROBE_STEPS = 24
STALL_S = 6.0  # a goal the robot gets no closer to for this long is given up for a new one


def camera_pose(position: np.ndarray, yaw: float, pitch: float) -> np.ndarray:
    """Camera-to-world 4x4 of an optical frame (x right, y down, z forward) looking along yaw (about world z), pitched up."""
    forward = np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), math.sin(pitch)])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, position
    return pose


@dataclass(frozen=True)
class Motion:
    """Per-sequence motion parameters (metres and radians at scale 1)."""
    speed: float
    height: float
    pitch: float
    look_amplitude: float   # the camera looks around the heading by up to this much
    look_frequency: float   # Hz
    look_phase: float
    wander: tuple[tuple[float, float, float], ...]  # (amplitude rad/s, frequency Hz, phase) of the wander turn
    bob_phase: float

    @staticmethod
    def random(rng: np.random.Generator, speed: tuple[float, float], height: tuple[float, float],
               pitch_deg: tuple[float, float]) -> Motion:
        wander = tuple((float(rng.uniform(0.05, 0.2)), float(rng.uniform(0.02, 0.12)), float(rng.uniform(0, 2 * math.pi)))
                       for _ in range(3))
        return Motion(float(rng.uniform(*speed)), float(rng.uniform(*height)), math.radians(rng.uniform(*pitch_deg)),
                      math.radians(rng.uniform(3, 12)), float(rng.uniform(0.03, 0.12)), float(rng.uniform(0, 2 * math.pi)),
                      wander, float(rng.uniform(0, 2 * math.pi)))


class RobotPath:
    """Frame-indexed robot states (x, y, heading) at scale 1, simulated on demand."""

    def __init__(self, cmap: ClearanceMap, clearance: float, motion: Motion, rng: np.random.Generator, rate_hz: float,
                 substeps: int = 4, hard_fraction: float = 0.6, max_turn_rate: float = 0.5, horizon: float = 8.0) -> None:
        self.cmap, self.clearance, self.motion = cmap, clearance, motion
        self.dt = 1.0 / (rate_hz * substeps)
        self.substeps, self.max_turn = substeps, max_turn_rate
        self.hard_min = hard_fraction * clearance
        self.probe_range = np.geomspace(0.3 * clearance, horizon, PROBE_STEPS)  # fine near the robot, coarse far away
        self.horizon = horizon
        self.rng = rng
        self.step_probe = min(1.5, 3 * clearance)
        _, region = reachable_fraction(cmap, clearance)
        xs, ys = cmap.cell_centres()
        self._graph, self._node = _grid_graph(region, cmap.resolution)
        iy, ix = np.nonzero(region & (cmap.distance >= min(1.5 * clearance, cmap.distance.max() * 0.9)))
        if len(ix) == 0:
            iy, ix = np.nonzero(region)
        if len(ix) == 0:
            raise ValueError("no floor cell keeps the robot's clearance from walls and boxes")
        self._spots = np.stack([xs[ix], ys[iy]], axis=1)  # where start and goals may lie
        self._spot_nodes = self._node[iy, ix]
        self._reach = float(np.hypot(*(self._spots.max(0) - self._spots.min(0))))
        x, y = (float(v) for v in self._spots[int(rng.integers(len(self._spots)))])
        self._x, self._y, self._heading, self._turn, self._speed, self._t = x, y, 0.0, 0.0, 0.0, 0.0
        self._new_goal()
        probes = np.radians(np.arange(-180, 180, 15))
        self._heading = float(probes[int(np.argmax(self._progress(x, y, probes, np.full(len(probes), self.step_probe))))])
        self.states: list[tuple[float, float, float]] = [(x, y, self._heading)]

    def _new_goal(self) -> None:
        """A random reachable spot at least a third of the reachable extent away, not far behind the robot (where there is
        one), and its geodesic distance map."""
        dx, dy = self._spots[:, 0] - self._x, self._spots[:, 1] - self._y
        far = np.hypot(dx, dy) >= self._reach / 3
        ahead = far & (np.cos(np.arctan2(dy, dx) - self._heading) > -0.2)  # keep driving on if possible
        pool = np.nonzero(ahead if ahead.any() else far if far.any() else np.ones(len(far), bool))[0]
        k = int(pool[int(self.rng.integers(len(pool)))])
        self._goal = self._spots[k]
        self._geodesic = dijkstra(self._graph, indices=int(self._spot_nodes[k]))
        self._best, self._best_t = np.inf, self._t

    def _geo(self, x, y):
        """Geodesic distance (m) to the goal of the cells holding the points; inf off the reachable floor."""
        cm = self.cmap
        ny, nx = cm.distance.shape
        ix = np.floor((np.asarray(x) - cm.x0) / cm.resolution).astype(np.int64)
        iy = np.floor((np.asarray(y) - cm.y0) / cm.resolution).astype(np.int64)
        inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
        node = np.where(inside, self._node[np.clip(iy, 0, ny - 1), np.clip(ix, 0, nx - 1)], -1)
        return np.where(node >= 0, self._geodesic[np.maximum(node, 0)], np.inf)

    def _progress(self, x: float, y: float, angles: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Geodesic progress toward the goal per metre when moving `lengths` along each angle (-inf where not reachable)."""
        here = float(self._geo(x, y))
        if not np.isfinite(here):  # off the graph (between cells at its edge): use the nearest probe that is on it
            nudge = 0.5 * self.cmap.resolution
            here = float(np.min(self._geo(x + nudge * np.cos(angles), y + nudge * np.sin(angles))))
        there = self._geo(x + lengths * np.cos(angles), y + lengths * np.sin(angles))
        with np.errstate(invalid="ignore"):
            return np.where(np.isfinite(there) & (lengths > 0), (here - there) / np.maximum(lengths, 1e-6), -np.inf)

    def _free_runs(self, x: float, y: float, heading: float, offsets: np.ndarray) -> np.ndarray:
        """Distance along each direction heading + offset before the clearance drops below 0.8 * `clearance` (up to the
        horizon; 0 when blocked at the first probe)."""
        angles = heading + offsets
        px = x + np.cos(angles)[:, None] * self.probe_range[None]
        py = y + np.sin(angles)[:, None] * self.probe_range[None]
        blocked = self.cmap.at_many(px, py) < 0.8 * self.clearance
        first = np.where(blocked.any(axis=1), blocked.argmax(axis=1), len(self.probe_range))
        return np.concatenate([[0.0], self.probe_range])[first]

    def _control(self) -> tuple[float, float]:
        """Target turn rate and speed: progress toward the goal, small turns, slower near obstacles and in sharp turns."""
        m = self.motion
        left = float(self._geo(self._x, self._y))
        if left < self._best - 0.3:
            self._best, self._best_t = left, self._t
        if left < 2 * self.clearance or self._t - self._best_t > STALL_S:
            self._new_goal()
        free = self._free_runs(self._x, self._y, self._heading, PROBE_ANGLES)
        progress = self._progress(self._x, self._y, self._heading + PROBE_ANGLES, np.full(len(free), self.step_probe))
        progress[free < 0.6 * self.step_probe] = -np.inf  # only directions the robot can actually drive along
        score = progress - 0.2 * np.abs(PROBE_ANGLES) / np.pi
        if np.isfinite(score).any():
            weights = np.exp((score - score.max()) / 0.1)
            preferred = float(weights @ PROBE_ANGLES / weights.sum())
        else:  # boxed in by the probes' resolution: turn toward the longest free run
            preferred = float(PROBE_ANGLES[int(np.argmax(free))])
        wander = sum(a * math.sin(2 * math.pi * f * self._t + p) for a, f, p in m.wander)
        turn = max(-self.max_turn, min(self.max_turn, 1.2 * preferred + wander))
        ahead = float(free[len(PROBE_ANGLES) // 2])
        room = max(0.0, min(1.0, (ahead - 0.3 * self.clearance) / (1.5 * self.clearance)))
        aligned = max(0.3, math.cos(min(abs(preferred), math.pi / 2)))  # slow down for sharp turns
        return turn, m.speed * room * room * (3 - 2 * room) * aligned

    def _step(self, target_turn: float, target_speed: float) -> None:
        dt = self.dt
        self._turn += (target_turn - self._turn) * min(1.0, dt / 0.4)
        self._speed += (target_speed - self._speed) * min(1.0, dt / 0.5)
        here = self.cmap.at(self._x, self._y)
        self._speed = max(0.0, min(self._speed, 0.5 * (here - self.hard_min) / dt))
        self._heading += self._turn * dt
        self._x += self._speed * math.cos(self._heading) * dt
        self._y += self._speed * math.sin(self._heading) * dt
        self._t += dt

    def state(self, i: int) -> tuple[float, float, float]:
        if i < 0:
            raise ValueError(f"frame index must be non-negative, got {i}")
        while len(self.states) <= i:
            turn, speed = self._control()
            for _ in range(self.substeps):
                self._step(turn, speed)
            self.states.append((self._x, self._y, self._heading))
        return self.states[i]

    def pose(self, i: int, time_s: float) -> np.ndarray:
        """Camera-to-world pose at frame i (scale 1): the heading plus a slow look-around, a small height bob and tilt wobble."""
        x, y, heading = self.state(i)
        m = self.motion
        yaw = heading + m.look_amplitude * math.sin(2 * math.pi * m.look_frequency * time_s + m.look_phase)
        height = m.height + 0.01 * math.sin(2 * math.pi * 1.3 * time_s + m.bob_phase)
        pitch = m.pitch + math.radians(1.0) * math.sin(2 * math.pi * 0.2 * time_s + m.bob_phase)
        return camera_pose(np.array([x, y, height]), yaw, pitch)


def _grid_graph(free: np.ndarray, resolution: float) -> tuple[coo_matrix, np.ndarray]:
    """8-connected graph over the True cells of `free` (edge weights in metres) and the cell -> node index map (-1 off)."""
    node = np.full(free.shape, -1, np.int64)
    node[free] = np.arange(int(free.sum()))
    rows, cols, weights = [], [], []
    ny, nx = free.shape
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = node[0:ny - dy, max(0, -dx):nx - max(0, dx)]   # cell (y, x) ...
        b = node[dy:ny, max(0, dx):nx - max(0, -dx)]       # ... and its neighbour (y + dy, x + dx)
        ok = (a >= 0) & (b >= 0)
        rows.append(a[ok])
        cols.append(b[ok])
        weights.append(np.full(int(ok.sum()), resolution * math.hypot(dx, dy)))
    r, c, w = np.concatenate(rows), np.concatenate(cols), np.concatenate(weights)
    n = int(free.sum())
    graph = coo_matrix((np.concatenate([w, w]), (np.concatenate([r, c]), np.concatenate([c, r]))), shape=(n, n)).tocsr()
    return graph, node
