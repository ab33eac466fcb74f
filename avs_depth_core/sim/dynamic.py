"""Moving rigid objects in the synthetic world (`avs-depth simulate --dynamic`).

Self-supervised depth fails on objects that move: one moving with the camera shows no parallax and looks infinitely far,
one moving along the optical axis in the image centre barely moves in the image, and a crossing one breaks the static-scene
assumption of the photometric loss (Nguyen et al., "Mining Supervision for Dynamic Regions in Self-Supervised Monocular
Depth Estimation", CVPR 2024). A DynamicWorld(preset, seed, ...) takes SimWorld's arguments; its sequence is the
plain sequence of the same seed (same room, furniture, robot path and sound) plus upright textured boxes of three kinds
(person, cart, crate), each with a ground-truth trajectory:

  with_camera  rigidly attached to the camera's ground-projected frame, 0.6-1.2 m to one side (a person walking beside
               the robot): no residual image motion at all;
  axial        in the image centre, moving along the optical axis between NEAR and `reach` (triangle wave);
  crossing     crossing the view laterally at a fixed distance (triangle wave between -CROSS_HALF_WIDTH and +);
  static       standing still beside the robot's path (the same kinds, so a learned scale alignment can train on them).

Every sequence holds one object of each moving case plus MOVING_EXTRA more, and STATIC_COUNT static ones. Moving objects
keep in front of the wall or furniture ahead of the camera (their distance is capped by the free floor along the view,
its minimum over ROOM_WINDOW frames either side, so the cap changes smoothly; with less room than NEAR they stay behind
the wall rather than crowd the view), but they follow the camera, not the floor
plan, and may still cut into a side wall or a box; the renderer's z-buffer then shows whichever surface is nearer.
Their faces are rendered and heard like furniture: specular and nearest-point returns off every face and diffuse patches
that move with the object, at the object's pose at the chirp's emission (the frame's stamp; Doppler within a 3 ms chirp
is ignored, about 2 v / c f = 117 Hz at 1 m/s and 20 kHz). The room's reverberation stays that of the empty room.
Object randomness comes from its own streams (children of the seventh child of SeedSequence([seed, sequence])), so the
room, path, images of the room and its echoes stay those of the plain world with the same seed wherever no object is,
and the objects and their trajectories do not depend on the image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from avs_depth_core.sim.acoustics import AcousticScene
from avs_depth_core.sim.presets import MATERIALS
from avs_depth_core.sim.render import PreparedScene, prepare
from avs_depth_core.sim.scene import ROOM_FACES, Box, Patches, Scene, scene_surfaces
from avs_depth_core.sim.textures import make_texture
from avs_depth_core.sim.world import SimFrame, SimSequence, SimWorld

CASES = ("with_camera", "axial", "crossing")
STATIC = "static"
# A moving flag per instance and frame: world speed above this (m/s), as in the plan for the dynamic-region benchmark.
MOVING_SPEED = 0.05
MOVING_EXTRA = (0, 1)     # moving objects beyond one per case, drawn uniformly (3-4 move; B.12's plan asks for 2-6)
STATIC_COUNT = (2, 3)
NEAR = 1.5                # m: the nearest an axial or attached object comes to the camera
CROSS_HALF_WIDTH = 2.5    # m: a crossing object sweeps this far left and right of the optical axis
STATIC_HORIZON = 300      # frames of the robot path that static objects keep clear of
STATIC_VIEW = 100         # static objects are placed ahead of the robot at one of its first frames, so they get seen
ROOM_WINDOW = 3           # frames either side over which the free floor ahead is minimised
OBJECT_PATCH = 0.3        # m: diffuse-echo patch edge on object faces (bv1's furniture patches are 0.35 m)


@dataclass(frozen=True)
class ObjectKind:
    """Sizes (full width, depth, height in metres) and looks of a kind of moving thing."""
    width: tuple[float, float]
    depth: tuple[float, float]
    height: tuple[float, float]
    materials: tuple[str, ...]


OBJECT_KINDS: dict[str, ObjectKind] = {
    "person": ObjectKind((0.45, 0.6), (0.25, 0.4), (1.55, 1.85), ("fabric",)),
    "cart": ObjectKind((0.6, 1.0), (0.5, 0.7), (0.9, 1.1), ("metal", "wood")),
    "crate": ObjectKind((0.4, 0.7), (0.4, 0.7), (0.4, 0.7), ("crate", "wood", "metal")),
}


@dataclass(frozen=True)
class DynamicObject:
    """One rigid object and its trajectory parameters (scale 1, camera-attached frame: x forward, y left, on the floor)."""
    id: int                  # its value in the instance map (1, 2, ...; 0 is the background)
    kind: str
    motion: str              # one of CASES or STATIC
    half: np.ndarray         # (3,) half extents at scale 1
    material: str
    textures: tuple[int, int, int]  # ids into the dynamic scene's textures (long sides, ends, top/bottom)
    forward: float           # with_camera / crossing: distance ahead; axial: start of the triangle wave
    lateral: float           # with_camera / axial: offset to the left; crossing: start of the triangle wave
    speed: float             # axial / crossing: relative speed, m/s
    yaw: float               # relative to the carrier frame (the camera's for moving objects, the world's for static ones)
    position: tuple[float, float] = (0.0, 0.0)  # static: world x, y at scale 1


@dataclass(frozen=True)
class ObjectStates:
    """Ground truth of every object at one frame (what the bag's /camera/objects carries).

    pose: object-to-camera (N, 4, 4) in the camera's optical frame (the box centre; local x along its width, z up);
    velocity: world velocity (N, 3) m/s over the next frame interval; moving: speed > MOVING_SPEED;
    residual_motion: (N, 4, 4) the object's own motion from this frame to the next, in this frame's camera frame:
    a point X (camera coordinates at t) of the object is at residual_motion @ X in the same frame at t + 1 (identity for
    static objects), so its position in the next camera is inv(T_cam(t+1)) @ T_cam(t) @ residual_motion @ X.
    """
    ids: np.ndarray            # (N,) uint16
    kinds: tuple[str, ...]
    motions: tuple[str, ...]
    moving: np.ndarray         # (N,) bool
    half_extents: np.ndarray   # (N, 3) metres (scaled)
    pose: np.ndarray           # (N, 4, 4)
    velocity: np.ndarray       # (N, 3)
    residual_motion: np.ndarray  # (N, 4, 4)
    camera_to_world: np.ndarray  # (4, 4)


def _carrier(pose: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The camera's ground-projected frame: origin on the floor below it, forward and left unit vectors, its yaw."""
    forward = pose[:3, 2].copy()
    forward[2] = 0.0
    forward /= max(float(np.linalg.norm(forward)), 1e-9)
    left = np.array([-forward[1], forward[0], 0.0])
    origin = np.array([pose[0, 3], pose[1, 3], 0.0])
    return origin, forward, left, math.atan2(forward[1], forward[0])


def _triangle(x: float, lo: float, hi: float) -> float:
    """x folded into [lo, hi] back and forth (a constant-speed bounce)."""
    span = hi - lo
    if span <= 0:
        return lo
    phase = (x - lo) % (2 * span)
    return lo + (phase if phase <= span else 2 * span - phase)


def object_box(obj: DynamicObject, camera_pose: np.ndarray, time_s: float, scale: float, reach: float,
               room: float = math.inf) -> Box:
    """The object's box in the (scaled) world at time_s, with the camera at camera_pose (scaled); room: free floor ahead of
    the camera at scale 1 (moving objects stay 0.3 m short of it; where that is nearer than NEAR they are left behind it)."""
    half = obj.half * scale
    if obj.motion == STATIC:
        centre = np.array([obj.position[0] * scale, obj.position[1] * scale, half[2]])
        return Box(centre, half, obj.yaw, obj.kind, obj.material, obj.textures)
    origin, forward, left, yaw = _carrier(camera_pose)
    far = min(reach, room - obj.half[1] - 0.3)
    if far < NEAR:  # facing a wall: no room in front of it, so the object stays where it was meant to be, behind it
        far = reach
    ahead, side = min(obj.forward, far), obj.lateral
    if obj.motion == "axial":
        ahead = _triangle(obj.forward + obj.speed * time_s, NEAR, far)
    elif obj.motion == "crossing":
        side = _triangle(obj.lateral + obj.speed * time_s, -CROSS_HALF_WIDTH, CROSS_HALF_WIDTH)
    centre = origin + scale * (ahead * forward + side * left)
    centre[2] = half[2]
    return Box(centre, half, yaw + obj.yaw, obj.kind, obj.material, obj.textures)


def box_to_world(box: Box) -> np.ndarray:
    """4x4 object-to-world: rotation by the box's yaw about z, translation to its centre."""
    T = np.eye(4)
    T[:3, :3] = box.axes().T  # columns = local axes in world coordinates
    T[:3, 3] = box.center
    return T


def floor_share(frame: SimFrame) -> float:
    """Share of the image whose depth lands on the floor (world z within 2 cm of 0, scaled with the scene)."""
    K, pose, depth = frame.K, frame.pose, np.nan_to_num(frame.depth, nan=0.0)
    v, u = np.mgrid[0:depth.shape[0], 0:depth.shape[1]]
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(depth)], axis=-1)
    z = pose[2, 3] + depth * (rays @ pose[2, :3])
    return float(((depth > 0) & (np.abs(z) < 0.02 * frame.scale)).mean())


def _face_patches(half: np.ndarray, patch: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Diffuse-echo patches of a box's five exposed faces in its local frame (centre at the origin), as
    scene.scene_patches tiles furniture: one jittered point per cell of about `patch`; (position, normal, area)."""
    pos, nrm, area = [], [], []
    for axis in range(3):
        u_i, v_i = [k for k in range(3) if k != axis]
        for sign in (-1.0, 1.0):
            if axis == 2 and sign < 0:
                continue  # standing on the floor
            eu, ev = 2 * half[u_i], 2 * half[v_i]
            nu, nv = (max(1, math.ceil(e / patch - 1e-6)) for e in (eu, ev))
            jitter = rng.random((nv, nu, 2))
            fu = ((np.arange(nu)[None, :] + jitter[..., 0]) / nu - 0.5) * eu
            fv = ((np.arange(nv)[:, None] + jitter[..., 1]) / nv - 0.5) * ev
            p = np.zeros((nv, nu, 3))
            p[..., axis] = sign * half[axis]
            p[..., u_i], p[..., v_i] = fu, fv
            pos.append(p.reshape(-1, 3))
            normal = np.zeros(3)
            normal[axis] = sign
            nrm.append(np.broadcast_to(normal, (nu * nv, 3)))
            area.append(np.full(nu * nv, eu * ev / (nu * nv)))
    return np.concatenate(pos), np.concatenate(nrm), np.concatenate(area)


class DynamicWorld(SimWorld):
    """A SimWorld whose sequences (DynamicSequence) hold moving objects; same arguments, same rooms, paths and sound."""

    def sequence(self, index: int) -> DynamicSequence:
        if not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"sequence index must be a non-negative integer, got {index!r}")
        return DynamicSequence(self, int(index))


class DynamicSequence(SimSequence):
    """A SimSequence with moving objects: frames carry an instance map and the objects' ground truth."""

    def __init__(self, world, index: int) -> None:
        super().__init__(world, index)
        # Three streams: geometry and motion, textures (their draws depend on the texture size, i.e. the image size),
        # sound (the objects' diffuse patches); so the objects and their paths do not depend on the image size.
        rng, texture_rng, sound_rng = (np.random.default_rng(s) for s in
                                       np.random.SeedSequence([world.seed, index]).spawn(7)[6].spawn(3))
        self.reach = 0.5 * world.preset.max_depth  # the farthest an axial object goes and a crossing one stands
        self._free: dict[int, float] = {}
        textures: list[np.ndarray] = []
        periods: list[tuple[float, float] | None] = []
        motions = [*CASES, *(str(rng.choice(CASES)) for _ in range(int(rng.integers(MOVING_EXTRA[0], MOVING_EXTRA[1] + 1))))]
        motions += [STATIC] * int(rng.integers(STATIC_COUNT[0], STATIC_COUNT[1] + 1))
        objects = []
        first_texture = len(self.scene.textures)
        for k, motion in enumerate(motions):
            kind = str(rng.choice(sorted(OBJECT_KINDS)))
            spec = OBJECT_KINDS[kind]
            half = 0.5 * np.array([rng.uniform(*spec.width), rng.uniform(*spec.depth), rng.uniform(*spec.height)])
            material = str(rng.choice(spec.materials))
            image, period = make_texture(MATERIALS[material].texture, texture_rng, world.texture_size,
                                         (2 * half[0], 2 * half[2]))
            textures.append(np.round(image * 255).astype(np.uint8))
            periods.append(None if period is None else (period[0] * self.scale, period[1] * self.scale))
            tex = first_texture + len(textures) - 1
            forward = float(rng.uniform(2.0, min(4.0, self.reach)))
            lateral = float(rng.uniform(0.6, 1.2)) * float(rng.choice([-1.0, 1.0]))  # beside the robot's path
            speed = float(rng.uniform(0.3, 1.0)) * float(rng.choice([-1.0, 1.0]))
            yaw = float(rng.uniform(0, 2 * math.pi))
            if motion == "axial":
                forward, lateral = float(rng.uniform(NEAR, self.reach)), float(rng.uniform(-0.15, 0.15))
            elif motion == "crossing":
                forward = float(rng.uniform(2.0, self.reach))
                lateral = float(rng.uniform(-CROSS_HALF_WIDTH, CROSS_HALF_WIDTH))
                yaw = math.pi / 2  # walking sideways across the view, its long side along the motion
            objects.append(DynamicObject(k + 1, kind, motion, half, material, (tex, tex, tex), forward, lateral, speed, yaw))
        self.objects = tuple(self._place_static(o, rng) for o in objects)
        self.objects = tuple(o for o in self.objects if o is not None)
        self.dynamic_scene: Scene = replace(self.scene, textures=self.scene.textures + tuple(textures),
                                            periods=self.scene.periods + tuple(periods))
        self._prepared: PreparedScene = prepare(replace(self.dynamic_scene, boxes=self.scene.boxes + self.boxes(0)))
        self._patches = []
        for obj in self.objects:
            pos, nrm, area = _face_patches(obj.half * self.scale, OBJECT_PATCH * self.scale, sound_rng)
            m = MATERIALS[obj.material]
            amplitude = sound_rng.rayleigh(1 / math.sqrt(2), len(area)) * sound_rng.choice([-1.0, 1.0], len(area))
            self._patches.append((pos, nrm, np.sqrt((1 - m.absorption) * m.scattering * area / np.pi) * amplitude,
                                  area, m.scattering, m.absorption))

    def _place_static(self, obj: DynamicObject, rng: np.random.Generator) -> DynamicObject | None:
        """A static object beside the robot's path, where the floor is free and the robot never passes (None if no
        such place was found in 60 draws)."""
        if obj.motion != STATIC:
            return obj
        path = self.path
        states = np.array([path.state(i) for i in range(STATIC_HORIZON)])
        radius = float(np.hypot(obj.half[0], obj.half[1]))
        for _ in range(60):
            x, y, heading = states[int(rng.integers(STATIC_VIEW))]
            ahead, side = rng.uniform(1.5, 5.0), rng.uniform(-2.0, 2.0)
            px = x + ahead * math.cos(heading) - side * math.sin(heading)
            py = y + ahead * math.sin(heading) + side * math.cos(heading)
            if path.cmap.at(px, py) < radius + 0.05:
                continue
            if np.min(np.hypot(states[:, 0] - px, states[:, 1] - py)) < radius + path.clearance:
                continue
            return replace(obj, position=(float(px), float(py)))
        return None

    # --- geometry per frame ---------------------------------------------------------------------------------------

    def free_ahead(self, i: int) -> float:
        """Free floor (scale 1, m) along the camera's ground direction at frame i before a wall or furniture."""
        if i not in self._free:
            origin, forward, _, _ = _carrier(self.pose(i))
            steps = np.arange(0.2, self.reach + 1.0, 0.1)
            x = origin[0] / self.scale + steps * forward[0]
            y = origin[1] / self.scale + steps * forward[1]
            blocked = self.path.cmap.at_many(x, y) <= 0.05
            self._free[i] = float(steps[int(np.argmax(blocked))]) if blocked.any() else math.inf
        return self._free[i]

    def room_ahead(self, i: int) -> float:
        return min(self.free_ahead(j) for j in range(max(0, i - ROOM_WINDOW), i + ROOM_WINDOW + 1))

    def boxes(self, i: int) -> tuple[Box, ...]:
        """Every object's box at frame i."""
        pose, room = self.pose(i), self.room_ahead(i)
        return tuple(object_box(o, pose, self.time_s(i), self.scale, self.reach, room) for o in self.objects)

    def _scene_at(self, i: int) -> Scene:
        return replace(self.dynamic_scene, boxes=self.scene.boxes + self.boxes(i))

    def render_instances(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """RGB uint8 (H, W, 3), depth float32 (H, W) (NaN beyond max_depth) and the instance map uint16 (H, W) of frame i
        (0: room and furniture, or no valid depth; k: object k)."""
        world = self.world
        start = int(self._frame_rng(i).integers(0, 65536))
        noise = self._noise[start:start + world.height * world.width * 4]
        scene = self._scene_at(i)
        prep = replace(self._prepared, scene=scene, surfaces=scene_surfaces(scene))
        pose = self.pose(i)
        depth, face = world.renderer.cast(prep, pose)
        rgb = world.renderer.colour(prep, pose, depth, face, noise)
        first = ROOM_FACES + 6 * len(self.scene.boxes)
        ids = np.array([0] + [o.id for o in self.objects], np.uint16)
        slot = np.where(face >= first, (face - first) // 6 + 1, 0)
        out = depth.copy()
        out[~(depth <= world.max_depth)] = np.nan
        instances = ids[slot]
        instances[np.isnan(out)] = 0
        return rgb, out, instances

    def render(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        rgb, depth, _ = self.render_instances(i)
        return rgb, depth

    def acoustic_scene_at(self, i: int) -> AcousticScene:
        """The room's acoustic scene with the objects where they are at frame i's emission: their faces join the box
        returns and their patches the diffuse returns; reverberation stays the empty room's."""
        base = self.acoustic_scene
        scene = replace(base.scene, boxes=base.scene.boxes + self.boxes(i), textures=self.dynamic_scene.textures,
                        periods=self.dynamic_scene.periods)
        surf = scene_surfaces(scene)
        box_faces = np.nonzero(surf.is_box & (surf.normal[:, 2] > -0.5))[0]
        specular = np.sqrt((1 - surf.absorption) * (1 - surf.scattering))
        positions, normals, gains, areas, scattering, absorption = [base.patches.position], [base.patches.normal], \
            [base.patch_gain], [base.patches.area], [base.patches.scattering], [base.patches.absorption]
        for box, (pos, nrm, gain, area, scat, absorb) in zip(self.boxes(i), self._patches, strict=True):
            R = box.axes().T
            positions.append(pos @ R.T + box.center)
            normals.append(nrm @ R.T)
            gains.append(gain)
            areas.append(area)
            scattering.append(np.full(len(area), scat))
            absorption.append(np.full(len(area), absorb))
        patches = Patches(np.concatenate(positions), np.concatenate(normals), np.concatenate(areas),
                          np.concatenate(scattering), np.concatenate(absorption), np.concatenate(gains))
        return replace(base, scene=scene, surfaces=surf, patches=patches, patch_gain=np.concatenate(gains),
                       box_faces=box_faces, box_gain=specular[box_faces])

    def object_states(self, i: int) -> ObjectStates:
        """The objects' ground truth at frame i (ObjectStates)."""
        dt = 1.0 / self.world.rate_hz
        cam = self.pose(i)
        cam_inv = np.linalg.inv(cam)
        now, nxt = self.boxes(i), self.boxes(i + 1)
        poses, motions, velocity = [], [], []
        for a, b in zip(now, nxt, strict=True):
            Ta, Tb = box_to_world(a), box_to_world(b)
            poses.append(cam_inv @ Ta)
            motions.append(cam_inv @ Tb @ np.linalg.inv(Ta) @ cam)
            velocity.append((b.center - a.center) / dt)
        velocity_arr = np.array(velocity).reshape(-1, 3)
        return ObjectStates(
            ids=np.array([o.id for o in self.objects], np.uint16), kinds=tuple(o.kind for o in self.objects),
            motions=tuple(o.motion for o in self.objects),
            moving=np.linalg.norm(velocity_arr, axis=1) > MOVING_SPEED,
            half_extents=np.array([o.half * self.scale for o in self.objects]).reshape(-1, 3),
            pose=np.array(poses).reshape(-1, 4, 4), velocity=velocity_arr,
            residual_motion=np.array(motions).reshape(-1, 4, 4), camera_to_world=cam)

    def frame(self, i: int) -> SimFrame:
        if not isinstance(i, (int, np.integer)) or i < 0:
            raise ValueError(f"frame index must be a non-negative integer, got {i!r}")
        i = int(i)
        rgb, depth, instances = self.render_instances(i)
        frame = self.assemble(i, rgb, depth, self.echo(i))
        return replace(frame, instances=instances, objects=self.object_states(i))

    def describe_objects(self) -> list[dict]:
        """The objects for the bag's sequence metadata."""
        return [{"id": o.id, "kind": o.kind, "motion": o.motion, "material": o.material,
                 "size_m": [round(float(x) * 2 * self.scale, 3) for x in o.half]} for o in self.objects]
