"""Indoor scenes: a shoebox room with furniture-like boxes, lights and procedural textures.

World frame: z up, floor at z = 0, the room centred on the origin in x and y. A scene is generated at scale 1 and may be
scaled about the origin as a whole (geometry, lights, texture periods, echo patches) with `Scene.scaled`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from avs_depth_core.sim.presets import FURNITURE, MATERIALS, Preset
from avs_depth_core.sim.textures import TEXTURE_SIZE, WALL_TEXEL, make_texture, make_wall_texture

ROOM_FACES = 6  # x-lo, x-hi, y-lo, y-hi, floor, ceiling; box b owns faces 6 + 6b + 2 * axis + (1 if positive side)


@dataclass(frozen=True)
class Box:
    """An upright box standing on the floor. Local axes: x along its width (its wall), y its depth, z up."""
    center: np.ndarray     # (3,) world; center[2] = half height
    half: np.ndarray       # (3,) half extents along the local axes
    yaw: float             # rotation of the local x axis about world z, rad
    kind: str
    material: str
    textures: tuple[int, int, int]  # texture ids (Scene.textures) for the long sides (local +-y), the ends (+-x), top and bottom

    def axes(self) -> np.ndarray:
        """(3, 3) rows = the local x, y, z axes in world coordinates."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])

    def footprint(self) -> np.ndarray:
        """(4, 2) corners of the floor footprint in world x, y."""
        ax = self.axes()[:2, :2]
        signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
        return self.center[:2] + (signs * self.half[:2]) @ ax


@dataclass(frozen=True)
class Light:
    position: np.ndarray  # (3,)
    range: float          # distance at which the light falls to half intensity (scales with the scene)
    power: float


@dataclass(frozen=True)
class Scene:
    name: str                         # a short description at scale 1, e.g. "office 7.2x5.1x2.8 m, 5 boxes"
    room_lo: np.ndarray
    room_hi: np.ndarray
    room_materials: tuple[str, ...]   # one per room face, in ROOM_FACES order
    room_textures: tuple[int, ...]
    boxes: tuple[Box, ...]
    lights: tuple[Light, ...]
    ambient: float
    textures: tuple[np.ndarray, ...]  # (rows, cols, 3) uint8 images, sides powers of two
    periods: tuple[tuple[float, float] | None, ...]  # per texture: metres per tile (u, v); None = fit to the face
    patch_size: float                 # edge of the diffuse-echo patches, metres
    patch_seed: int                   # seeds the patches' positions and phases (independent of the scale)
    scale: float = 1.0

    def scaled(self, s: float) -> Scene:
        """The same scene with every length multiplied by s about the origin; textures stay attached to the surfaces."""
        if not s > 0:
            raise ValueError(f"scene scale must be positive, got {s}")
        boxes = tuple(replace(b, center=b.center * s, half=b.half * s) for b in self.boxes)
        lights = tuple(Light(li.position * s, li.range * s, li.power) for li in self.lights)
        periods = tuple(None if p is None else (p[0] * s, p[1] * s) for p in self.periods)
        return replace(self, room_lo=self.room_lo * s, room_hi=self.room_hi * s, boxes=boxes, lights=lights,
                       periods=periods, patch_size=self.patch_size * s, scale=self.scale * s)

    @property
    def size(self) -> np.ndarray:
        return self.room_hi - self.room_lo


@dataclass(frozen=True)
class Surfaces:
    """Every face of a scene as arrays (F = 6 + 6 * boxes): geometry, texture mapping and acoustics."""
    normal: np.ndarray      # (F, 3) unit, pointing into the free space
    origin: np.ndarray      # (F, 3) the face's corner where surface coordinates are (0, 0)
    u_axis: np.ndarray      # (F, 3)
    v_axis: np.ndarray      # (F, 3)
    extent: np.ndarray      # (F, 2) metres along u and v
    texture: np.ndarray     # (F,) atlas id
    period: np.ndarray      # (F, 2) metres per texture tile along u and v
    absorption: np.ndarray  # (F,)
    scattering: np.ndarray  # (F,)
    is_box: np.ndarray      # (F,) bool

    @property
    def center(self) -> np.ndarray:
        return self.origin + 0.5 * (self.extent[:, :1] * self.u_axis + self.extent[:, 1:] * self.v_axis)


def scene_surfaces(scene: Scene) -> Surfaces:
    lo, hi = scene.room_lo, scene.room_hi
    size = hi - lo
    ex, ey, ez = np.eye(3)
    rows = []  # (normal, origin, u, v, extent_u, extent_v, texture, material, is_box)
    room_axes = [(ey, ez), (ey, ez), (ex, ez), (ex, ez), (ex, ey), (ex, ey)]
    for face in range(ROOM_FACES):
        axis, positive = divmod(face, 2)
        normal = -np.eye(3)[axis] if positive else np.eye(3)[axis]
        origin = lo.copy()
        origin[axis] = hi[axis] if positive else lo[axis]
        u, v = room_axes[face]
        rows.append((normal, origin, u, v, float(size @ u), float(size @ v), scene.room_textures[face],
                     scene.room_materials[face], False))
    for box in scene.boxes:
        ax = box.axes()
        for axis in range(3):
            u_i, v_i = {0: (1, 2), 1: (0, 2), 2: (0, 1)}[axis]
            tex = box.textures[{1: 0, 0: 1, 2: 2}[axis]]
            for sign in (-1.0, 1.0):
                normal = sign * ax[axis]
                centre = box.center + sign * box.half[axis] * ax[axis]
                origin = centre - box.half[u_i] * ax[u_i] - box.half[v_i] * ax[v_i]
                rows.append((normal, origin, ax[u_i], ax[v_i], 2 * box.half[u_i], 2 * box.half[v_i], tex, box.material, True))
    normal, origin, u, v = (np.array([r[i] for r in rows], float) for i in range(4))
    extent = np.array([[r[4], r[5]] for r in rows], float)
    texture = np.array([r[6] for r in rows], np.int64)
    period = np.array([extent[i] if scene.periods[t] is None else scene.periods[t] for i, t in enumerate(texture)], float)
    absorption = np.array([MATERIALS[r[7]].absorption for r in rows])
    scattering = np.array([MATERIALS[r[7]].scattering for r in rows])
    return Surfaces(normal, origin, u, v, extent, texture, period, absorption, scattering, np.array([r[8] for r in rows]))


@dataclass(frozen=True)
class Patches:
    """Small surface elements that scatter sound diffusely (Lambert): centre, normal, area, scattering, a random phase."""
    position: np.ndarray    # (P, 3)
    normal: np.ndarray      # (P, 3)
    area: np.ndarray        # (P,)
    scattering: np.ndarray  # (P,)
    absorption: np.ndarray  # (P,)
    amplitude: np.ndarray   # (P,) signed Rayleigh-distributed factor with mean square 1 (random phase of a rough surface)


def scene_patches(scene: Scene, surfaces: Surfaces) -> Patches:
    """Tile every face into cells of about patch_size (the floor side of boxes excepted) with one jittered point per cell.
    The cell counts and random numbers depend on the scene at scale 1 only, so scaling moves the patches with the scene."""
    rng = np.random.default_rng(scene.patch_seed)
    pos, nrm, area, scat, absorb = [], [], [], [], []
    for f in range(len(surfaces.normal)):
        if surfaces.is_box[f] and surfaces.normal[f, 2] < -0.5:
            continue  # standing on the floor
        nu, nv = (max(1, math.ceil(e / scene.patch_size - 1e-6)) for e in surfaces.extent[f])
        jitter = rng.random((nv, nu, 2))
        fu = (np.arange(nu)[None, :] + jitter[..., 0]) / nu * surfaces.extent[f, 0]
        fv = (np.arange(nv)[:, None] + jitter[..., 1]) / nv * surfaces.extent[f, 1]
        p = surfaces.origin[f] + fu[..., None] * surfaces.u_axis[f] + fv[..., None] * surfaces.v_axis[f]
        pos.append(p.reshape(-1, 3))
        nrm.append(np.broadcast_to(surfaces.normal[f], (nu * nv, 3)))
        area.append(np.full(nu * nv, surfaces.extent[f].prod() / (nu * nv)))
        scat.append(np.full(nu * nv, surfaces.scattering[f]))
        absorb.append(np.full(nu * nv, surfaces.absorption[f]))
    count = sum(len(a) for a in area)
    amplitude = rng.rayleigh(1 / math.sqrt(2), count) * rng.choice([-1.0, 1.0], count)
    return Patches(np.concatenate(pos), np.concatenate(nrm), np.concatenate(area), np.concatenate(scat), np.concatenate(absorb),
                   amplitude)


def _footprints_overlap(a: np.ndarray, b: np.ndarray, gap: float) -> bool:
    """Separating-axis test of two convex footprints (4, 2), each grown by gap / 2."""
    for poly in (a, b):
        for i in range(4):
            edge = poly[(i + 1) % 4] - poly[i]
            axis = np.array([-edge[1], edge[0]]) / (np.linalg.norm(edge) + 1e-12)
            pa, pb = a @ axis, b @ axis
            if pa.max() + gap <= pb.min() or pb.max() + gap <= pa.min():
                return False
    return True


@dataclass(frozen=True)
class ClearanceMap:
    """Distance (m) from each floor cell centre to the nearest wall or box footprint, on a regular x-y grid."""
    distance: np.ndarray  # (ny, nx)
    x0: float
    y0: float
    resolution: float

    def at(self, x: float, y: float) -> float:
        """Bilinear lookup; outside the grid counts as blocked."""
        fx, fy = (x - self.x0) / self.resolution - 0.5, (y - self.y0) / self.resolution - 0.5
        ny, nx = self.distance.shape
        if not (0 <= fx <= nx - 1 and 0 <= fy <= ny - 1):
            return 0.0
        ix, iy = min(int(fx), nx - 2), min(int(fy), ny - 2)
        tx, ty = fx - ix, fy - iy
        d = self.distance
        low = d[iy, ix] * (1 - tx) + d[iy, ix + 1] * tx
        high = d[iy + 1, ix] * (1 - tx) + d[iy + 1, ix + 1] * tx
        return float(low * (1 - ty) + high * ty)

    def at_many(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Vectorised `at`."""
        ny, nx = self.distance.shape
        fx, fy = (np.asarray(x) - self.x0) / self.resolution - 0.5, (np.asarray(y) - self.y0) / self.resolution - 0.5
        inside = (fx >= 0) & (fx <= nx - 1) & (fy >= 0) & (fy <= ny - 1)
        fx, fy = np.clip(fx, 0, nx - 1), np.clip(fy, 0, ny - 1)
        ix, iy = np.minimum(fx.astype(np.int64), nx - 2), np.minimum(fy.astype(np.int64), ny - 2)
        tx, ty = fx - ix, fy - iy
        d = self.distance
        value = (d[iy, ix] * (1 - tx) + d[iy, ix + 1] * tx) * (1 - ty) + (d[iy + 1, ix] * (1 - tx) + d[iy + 1, ix + 1] * tx) * ty
        return np.where(inside, value, 0.0)

    def cell_centres(self) -> tuple[np.ndarray, np.ndarray]:
        ny, nx = self.distance.shape
        return self.x0 + (np.arange(nx) + 0.5) * self.resolution, self.y0 + (np.arange(ny) + 0.5) * self.resolution


def clearance_map(room_lo: np.ndarray, room_hi: np.ndarray, boxes: tuple[Box, ...], cells: int = 160) -> ClearanceMap:
    res = float(max(room_hi[0] - room_lo[0], room_hi[1] - room_lo[1]) / cells)
    nx, ny = (max(2, math.ceil((room_hi[i] - room_lo[i]) / res)) for i in range(2))
    xs = room_lo[0] + (np.arange(nx) + 0.5) * res
    ys = room_lo[1] + (np.arange(ny) + 0.5) * res
    gx, gy = np.meshgrid(xs, ys)
    free = (gx < room_hi[0]) & (gy < room_hi[1])
    for box in boxes:
        ax = box.axes()
        lx = (gx - box.center[0]) * ax[0, 0] + (gy - box.center[1]) * ax[0, 1]
        ly = (gx - box.center[0]) * ax[1, 0] + (gy - box.center[1]) * ax[1, 1]
        free &= ~((np.abs(lx) <= box.half[0]) & (np.abs(ly) <= box.half[1]))
    # Walls are a blocked one-cell border; the distance is between cell centres, so take off half a cell to stay conservative.
    padded = np.pad(free, 1, constant_values=False)
    dist = ndimage.distance_transform_edt(padded)[1:-1, 1:-1] * res - 0.5 * res
    return ClearanceMap(np.maximum(dist, 0.0), float(room_lo[0]), float(room_lo[1]), res)


def reachable_fraction(cmap: ClearanceMap, clearance: float) -> tuple[float, np.ndarray]:
    """Fraction of the floor in the largest connected region where the robot keeps `clearance`, and that region's mask."""
    ok = cmap.distance >= clearance
    labels, count = ndimage.label(ok)
    if count == 0:
        return 0.0, ok
    sizes = np.bincount(labels.ravel())[1:]
    best = int(np.argmax(sizes)) + 1
    return float(sizes[best - 1] / ok.size), labels == best


def _random_box(preset: Preset, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, float, str]:
    kind = str(rng.choice(preset.furniture))
    spec = FURNITURE[kind]
    size = hi - lo
    width = min(rng.uniform(*spec.width), 0.6 * max(size[0], size[1]))
    depth = min(rng.uniform(*spec.depth), 0.4 * min(size[0], size[1]))
    height = size[2] if spec.height == (0.0, 0.0) else min(rng.uniform(*spec.height), 0.9 * size[2])
    half = np.array([width / 2, depth / 2, height / 2])
    if spec.against_wall:
        wall = int(rng.integers(4))
        along_axis = 1 if wall < 2 else 0
        across_axis = 1 - along_axis
        # A narrow room (bv2_rooms' corridors) can be shorter than the piece along this wall: it then fills the wall.
        # Never the case in bv1 and bv2 (the draw would fail), so their scenes are unchanged.
        width = min(width, 0.95 * size[along_axis])
        half[0] = width / 2
        centre = np.zeros(3)
        span = size[along_axis] / 2 - width / 2
        centre[along_axis] = (lo[along_axis] + hi[along_axis]) / 2 + rng.uniform(-span, span)
        offset = depth / 2 + rng.uniform(0.02, 0.1)
        centre[across_axis] = hi[across_axis] - offset if wall % 2 else lo[across_axis] + offset
        # local x runs along the wall; the local +y side faces the room
        yaw = {0: -math.pi / 2, 1: math.pi / 2, 2: 0.0, 3: math.pi}[wall]
    else:
        centre = np.array([rng.uniform(lo[0], hi[0]), rng.uniform(lo[1], hi[1]), 0.0])
        yaw = rng.uniform(0, math.pi) if rng.random() < 0.4 else rng.integers(2) * math.pi / 2 + rng.normal(0, 0.05)
    centre[2] = height / 2
    return centre, half, float(yaw), kind


def random_scene(preset: Preset, rng: np.random.Generator, texture_size: int = TEXTURE_SIZE) -> Scene:
    """Draw a room of the preset: size, materials, furniture that leaves enough floor reachable, lights, textures."""
    size = np.array([rng.uniform(*preset.room_length), rng.uniform(*preset.room_width), rng.uniform(*preset.room_height)])
    lo, hi = np.array([-size[0] / 2, -size[1] / 2, 0.0]), np.array([size[0] / 2, size[1] / 2, size[2]])
    images: list[np.ndarray] = []
    periods: list[tuple[float, float] | None] = []

    def add_texture(image: np.ndarray, period: tuple[float, float] | None) -> int:
        images.append(np.round(image * 255).astype(np.uint8))
        periods.append(period)
        return len(images) - 1

    wall, floor, ceiling = (str(rng.choice(options)) for options in (preset.walls, preset.floors, preset.ceilings))
    wall_texel = WALL_TEXEL * TEXTURE_SIZE / texture_size
    paint = int(rng.integers(2**31))  # the four walls share their material's colour
    room_textures = [add_texture(*make_wall_texture(MATERIALS[wall].texture, rng, float(size[2]), wall_texel,
                                                    np.random.default_rng(paint))) for _ in range(4)]
    room_textures.append(add_texture(*make_texture(MATERIALS[floor].texture, rng, texture_size)))
    room_textures.append(add_texture(*make_texture(MATERIALS[ceiling].texture, rng, texture_size)))

    boxes: list[Box] = []
    wanted = int(rng.integers(preset.box_count[0], preset.box_count[1] + 1))
    for _ in range(4 * wanted):
        if len(boxes) == wanted:
            break
        centre, half, yaw, kind = _random_box(preset, rng, lo, hi)
        material = str(rng.choice(FURNITURE[kind].materials))
        box = Box(centre, half, yaw, kind, material, (-1, -1, -1))
        corners = box.footprint()
        if np.any(corners < lo[:2] - 1e-9) or np.any(corners > hi[:2] + 1e-9):
            continue
        if any(_footprints_overlap(corners, other.footprint(), 0.05) for other in boxes):
            continue
        if reachable_fraction(clearance_map(lo, hi, (*boxes, box)), preset.clearance)[0] < preset.min_free_fraction:
            continue
        kinds = ("bookshelf", "wood", "wood") if material == "bookshelf" else (MATERIALS[material].texture,) * 3
        extent_side = (2 * half[0], 2 * half[2])
        ids = []
        for i, tex_kind in enumerate(kinds):
            if i and tex_kind == kinds[i - 1]:
                ids.append(ids[-1])
            else:
                ids.append(add_texture(*make_texture(tex_kind, rng, texture_size, extent_side)))
        boxes.append(replace(box, textures=tuple(ids)))

    lights = []
    for _ in range(int(rng.integers(preset.light_count[0], preset.light_count[1] + 1))):
        pos = np.array([rng.uniform(0.7 * lo[0], 0.7 * hi[0]), rng.uniform(0.7 * lo[1], 0.7 * hi[1]), hi[2] - 0.15])
        lights.append(Light(pos, float(rng.uniform(0.5, 0.8) * max(size[0], size[1])), float(rng.uniform(0.7, 1.1))))
    norm = 1 / math.sqrt(len(lights))
    lights = [Light(li.position, li.range, li.power * norm) for li in lights]
    kind = {"bv1": "office", "bv2_rooms": "room"}.get(preset.name, "hall")
    label = f"{kind} {size[0]:.1f}x{size[1]:.1f}x{size[2]:.1f} m, {len(boxes)} boxes"
    return Scene(label, lo, hi, (wall,) * 4 + (floor, ceiling), tuple(room_textures), tuple(boxes), tuple(lights),
                 float(rng.uniform(0.22, 0.38)), tuple(images), tuple(periods), preset.patch_size,
                 int(rng.integers(2**31)))


def simple_scene(room_lo: np.ndarray, room_hi: np.ndarray, boxes: tuple[tuple[np.ndarray, np.ndarray, float], ...] = (),
                 material: str = "plaster", texture_size: int = 16, seed: int = 0, patch_size: float = 0.5) -> Scene:
    """A hand-placed scene (tests, examples): one material everywhere, boxes given as (centre, half extents, yaw),
    one light under the middle of the ceiling."""
    if material not in MATERIALS:
        raise ValueError(f"unknown material {material!r}; expected one of {sorted(MATERIALS)}")
    rng = np.random.default_rng(seed)
    room_lo, room_hi = np.asarray(room_lo, float), np.asarray(room_hi, float)
    image, period = make_texture(MATERIALS[material].texture, rng, texture_size)
    texture = np.round(image * 255).astype(np.uint8)
    placed = tuple(Box(np.asarray(c, float), np.asarray(h, float), float(yaw), "crate", material, (0, 0, 0))
                   for c, h, yaw in boxes)
    centre = (room_lo + room_hi) / 2
    light = Light(np.array([centre[0], centre[1], room_hi[2] - 0.1]), float(np.max(room_hi - room_lo)), 1.0)
    return Scene("simple", room_lo, room_hi, (material,) * 6, (0,) * 6, placed, (light,), 0.3, (texture,), (period,),
                 patch_size, seed)
