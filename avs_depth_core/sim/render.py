"""Pinhole camera rendering of a scene by vectorised ray casting: RGB (textured, Lambertian-shaded) and metric depth.

Rays are parametrised by camera Z (the ray through pixel (u, v) is Z * ((u - cx) / fx, (v - cy) / fy, 1) in the camera
frame), so the hit parameter is the depth directly. Every per-pixel quantity that only depends on the hit face (texture
coordinates, n . d, the light geometry) is affine in the normalised pixel coordinates, so per face a few coefficients are
computed in float64 and gathered once per pixel. Boxes are intersected only inside the screen rectangle of their projected
corners. The room is convex and closed and the camera is inside it, so every ray hits something.

Colour = texel (nearest, from the mipmap level that matches the pixel's footprint on the surface, so distant brick walls
do not alias) x sqrt(ambient + Lambertian point lights with a 1 / (1 + (d / range)^2) fall-off) x vignetting, plus mild
noise. No shadows or inter-reflections. Every length in this computation scales with the scene, so a scene scaled by s
renders the same image from the same (scaled) pose. One nearest texel per pixel still aliases at texel edges (a texture
shifted by a fraction of a pixel changes abruptly), which starves a photometric loss of sub-pixel signal;
Renderer(supersample=N) averages N x N samples per pixel instead (`avs-depth simulate --supersample N`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from avs_depth_core.sim.scene import ROOM_FACES, Scene, Surfaces, scene_surfaces

IMAGE_NOISE = 1.5      # std of the additive sensor noise, in 8-bit levels
VIGNETTING = 0.2       # brightness lost in the image corners
GAMMA = 2.0            # display gamma applied to the shading (textures are stored in display space)
MIP_LEVELS = 8


def intrinsics(height: int, width: int, hfov_deg: float) -> np.ndarray:
    """Square pixels, principal point at the image centre (pixel centres at integer coordinates)."""
    if not 0 < hfov_deg < 180:
        raise ValueError(f"horizontal field of view must lie in (0, 180) degrees, got {hfov_deg}")
    fx = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
    return np.array([[fx, 0.0, (width - 1) / 2], [0.0, fx, (height - 1) / 2], [0.0, 0.0, 1.0]])


def mipmaps(image: np.ndarray) -> list[np.ndarray]:
    """The image and its 2x2 box-filtered halvings, down to MIP_LEVELS levels or a side of 1."""
    levels = [image.astype(np.float32)]
    while len(levels) < MIP_LEVELS and min(levels[-1].shape[:2]) > 1:
        x = levels[-1]
        levels.append(0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2]))
    return levels


@dataclass(frozen=True)
class PreparedScene:
    """What the renderer needs from a scene, computed once per scene."""
    scene: Scene
    surfaces: Surfaces
    atlas: np.ndarray           # (texels,) uint32 packed RGB(0): every texture's mip levels, row-major, one after the other
    mip_table: np.ndarray       # (T * MIP_LEVELS,) int64 per (texture, level): atlas offset << 16 | log2(cols) << 8 | log2(rows)
    last_level: np.ndarray      # (T,) index of each texture's last mip level


def prepare(scene: Scene) -> PreparedScene:
    """Mipmaps packed into one atlas, and the surface table."""
    chunks, table, counts, offset = [], [], [], 0
    for t, image in enumerate(scene.textures):
        rows, cols = image.shape[:2]
        if rows & (rows - 1) or cols & (cols - 1) or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"texture {t} must be (rows, cols, 3) with power-of-two sides, got {image.shape}")
        levels = mipmaps(image)
        counts.append(len(levels))
        for k in range(MIP_LEVELS):
            level = levels[min(k, len(levels) - 1)]
            r, c = level.shape[:2]
            if k < len(levels):
                rgb = np.round(level).astype(np.uint32).reshape(-1, 3)
                chunks.append(rgb[:, 0] | (rgb[:, 1] << 8) | (rgb[:, 2] << 16))
                level_offset = offset
                offset += r * c
            table.append((level_offset << 16) | ((c.bit_length() - 1) << 8) | (r.bit_length() - 1))
    atlas = np.concatenate(chunks).astype("<u4")
    return PreparedScene(scene, scene_surfaces(scene), atlas, np.array(table, np.int64), np.array(counts) - 1)


class Renderer:
    """supersample N > 1: colour is rendered at N x the size (intrinsics scaled to match, so the pixel grids share their
    centres' rays) and box-filtered down before the sensor noise is added, an anti-aliased camera; depth stays the ray
    through each pixel centre, the same as with N = 1. N = 1 (the default) renders one nearest texel per pixel."""

    def __init__(self, K: np.ndarray, height: int, width: int, max_depth: float, supersample: int = 1) -> None:
        if not isinstance(supersample, (int, np.integer)) or supersample < 1:
            raise ValueError(f"supersample must be a positive integer, got {supersample!r}")
        self.K, self.height, self.width, self.max_depth = np.asarray(K, float), int(height), int(width), float(max_depth)
        self.supersample = int(supersample)
        self.fine: Renderer | None = None
        if self.supersample > 1:
            n = self.supersample
            # Pixel u of this image averages fine pixels n u .. n u + n - 1, centred at n u + (n - 1) / 2.
            fine_K = np.diag([n, n, 1.0]) @ self.K
            fine_K[:2, 2] += (n - 1) / 2
            self.fine = Renderer(fine_K, self.height * n, self.width * n, max_depth)
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        self.xn = ((np.arange(self.width) - cx) / fx).astype(np.float32)
        self.yn = ((np.arange(self.height) - cy) / fy).astype(np.float32)
        self.ray_norm2 = (self.xn[None, :] ** 2 + self.yn[:, None] ** 2 + 1.0).ravel()  # |d|^2 per pixel
        r2 = (self.xn[None, :] / self.xn[-1]) ** 2 + (self.yn[:, None] / self.yn[-1]) ** 2 if self.width > 1 and self.height > 1 \
            else np.zeros((self.height, self.width), np.float32)
        self.vignette = (1.0 - VIGNETTING * r2 / 2.0).astype(np.float32).ravel()
        self.xn_flat = np.broadcast_to(self.xn[None, :], (self.height, self.width)).ravel()
        self.yn_flat = np.broadcast_to(self.yn[:, None], (self.height, self.width)).ravel()
        self.ray_norm15 = self.ray_norm2 ** np.float32(0.75)  # |d| ** 1.5

    def _affine(self, coeff: np.ndarray) -> np.ndarray:
        """(3,) coefficients c -> c0 * xn + c1 * yn + c2 over the image, float32 (H, W)."""
        c = coeff.astype(np.float32)
        return (c[0] * self.xn)[None, :] + (c[1] * self.yn + c[2])[:, None]

    def cast(self, prep: PreparedScene, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Depth (camera Z, float32 (H, W)) and the index of the hit face (int32 (H, W))."""
        scene = prep.scene
        R, o = pose[:3, :3], pose[:3, 3]
        H, W = self.height, self.width
        depth = np.full((H, W), np.inf, np.float32)
        face = np.zeros((H, W), np.int32)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for axis in range(3):
                d = self._affine(R[axis])          # world direction component, per pixel
                inv = 1.0 / d
                t = np.maximum(np.float32(scene.room_hi[axis] - o[axis]) * inv, np.float32(scene.room_lo[axis] - o[axis]) * inv)
                closer = t < depth
                np.copyto(depth, t, where=closer)
                np.copyto(face, (2 * axis + (d > 0)).astype(np.int32), where=closer)
            for b, box in enumerate(scene.boxes):
                roi = self._box_roi(box, R, o)
                if roi is None:
                    continue
                v0, v1, u0, u1 = roi
                self._cast_box(box, ROOM_FACES + 6 * b, R, o, depth[v0:v1, u0:u1], face[v0:v1, u0:u1], v0, v1, u0, u1)
        return depth, face

    def _box_roi(self, box, R: np.ndarray, o: np.ndarray) -> tuple[int, int, int, int] | None:
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
        corners = box.center + (signs * box.half) @ box.axes()
        cam = (corners - o) @ R  # camera-frame corners
        if np.all(cam[:, 2] <= 1e-6):
            return None
        if np.any(cam[:, 2] <= 1e-6):
            return 0, self.height, 0, self.width
        u = self.K[0, 0] * cam[:, 0] / cam[:, 2] + self.K[0, 2]
        v = self.K[1, 1] * cam[:, 1] / cam[:, 2] + self.K[1, 2]
        u0, u1 = max(0, math.floor(u.min()) - 1), min(self.width, math.ceil(u.max()) + 2)
        v0, v1 = max(0, math.floor(v.min()) - 1), min(self.height, math.ceil(v.max()) + 2)
        if u0 >= u1 or v0 >= v1:
            return None
        return v0, v1, u0, u1

    def _cast_box(self, box, first_face: int, R, o, depth, face, v0, v1, u0, u1) -> None:
        """Slab test in the box's local frame over one screen rectangle, writing nearer hits into depth/face (views)."""
        axes = box.axes()
        xn, yn = self.xn[u0:u1], self.yn[v0:v1]
        tmin, tmax, dirs = [], [], []
        for k in range(3):
            c = (R.T @ axes[k]).astype(np.float32)
            d = (c[0] * xn)[None, :] + (c[1] * yn + c[2])[:, None]
            ol = float(axes[k] @ (o - box.center))
            inv = 1.0 / d
            t1 = np.float32(-box.half[k] - ol) * inv
            t2 = np.float32(box.half[k] - ol) * inv
            tmin.append(np.minimum(t1, t2))
            tmax.append(np.maximum(t1, t2))
            dirs.append(d)
        near = np.maximum(np.maximum(tmin[0], tmin[1]), tmin[2])
        tfar = np.minimum(np.minimum(tmax[0], tmax[1]), tmax[2])
        hit = (near <= tfar) & (near > 0) & (near < depth)
        if not hit.any():
            return
        local = np.where(tmin[0] >= near, 0 + (dirs[0] < 0), np.where(tmin[1] >= near, 2 + (dirs[1] < 0), 4 + (dirs[2] < 0)))
        np.copyto(depth, near, where=hit)
        np.copyto(face, (first_face + local).astype(np.int32), where=hit)

    def shade(self, prep: PreparedScene, pose: np.ndarray, depth: np.ndarray, face: np.ndarray,
              noise: np.ndarray | None = None) -> np.ndarray:
        """RGB uint8 (H, W, 3): mip-mapped texture at the hit's surface coordinates x (ambient + Lambertian point lights)
        x vignetting, plus optional noise (H * W * 4 float32 in 8-bit levels; the 4th of each 4 is unused)."""
        return self._finish(self._radiance(prep, pose, depth, face), noise)

    def colour(self, prep: PreparedScene, pose: np.ndarray, depth: np.ndarray, face: np.ndarray,
               noise: np.ndarray | None = None) -> np.ndarray:
        """shade() at this renderer's supersampling: depth and face (of cast()) are used only when supersample is 1."""
        if self.fine is None:
            return self.shade(prep, pose, depth, face, noise)
        n, fine = self.supersample, self.fine
        radiance = fine._radiance(prep, pose, *fine.cast(prep, pose))
        np.clip(radiance, 0, 255, out=radiance)  # each fine sample saturates like a pixel would
        radiance = radiance.reshape(self.height, n, self.width, n, 4).mean((1, 3), dtype=np.float32).reshape(-1, 4)
        return self._finish(radiance, noise)

    def _finish(self, colour: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
        if noise is not None:
            colour += noise.reshape(colour.shape)
        np.clip(colour, 0, 255, out=colour)
        return colour.astype(np.uint8)[:, :3].reshape(self.height, self.width, 3)

    def _radiance(self, prep: PreparedScene, pose: np.ndarray, depth: np.ndarray, face: np.ndarray) -> np.ndarray:
        """(H * W, 4) float32 colour in 8-bit levels before noise and clipping (the 4th channel unused)."""
        scene, surf = prep.scene, prep.surfaces
        R, o = pose[:3, :3], pose[:3, 3]
        lights = scene.lights
        # Per face, all affine in (xn, yn, 1) or constant: texture u, v in level-0 texels = Z * (g . (xn, yn, 1)) + b ;
        # n . d ; texels per metre (for the mip level) ; n . (L - o) per light.
        base = prep.mip_table[surf.texture * MIP_LEVELS]
        cols_t, rows_t = 2.0 ** ((base >> 8) & 255), 2.0 ** (base & 255)
        gu = (surf.u_axis / surf.period[:, :1]) @ R * cols_t[:, None]
        gv = (surf.v_axis / surf.period[:, 1:]) @ R * rows_t[:, None]
        bu = np.einsum("fk,fk->f", o - surf.origin, surf.u_axis) / surf.period[:, 0] * cols_t
        bv = np.einsum("fk,fk->f", o - surf.origin, surf.v_axis) / surf.period[:, 1] * rows_t
        nd = surf.normal @ R
        per_metre = np.maximum(cols_t / surf.period[:, 0], rows_t / surf.period[:, 1]) / self.K[0, 0]
        light_terms = [surf.normal @ (li.position - o) for li in lights]
        table = np.vstack([gu.T, bu, gv.T, bv, nd.T, per_metre, *light_terms]).astype(np.float32)
        f = face.ravel()
        z = depth.ravel()
        c = np.take(table, f, axis=1)
        xn, yn = self.xn_flat, self.yn_flat
        tu = (z * (c[0] * xn + c[1] * yn + c[2]) + c[3]).astype(np.int32)
        tv = (z * (c[4] * xn + c[5] * yn + c[6]) + c[7]).astype(np.int32)
        n_dot_d = c[8] * xn + c[9] * yn + c[10]
        # Mip level = floor(log2(texels one pixel covers)): Z |d| / fx per pixel, stretched by 1 / sqrt(cos incidence).
        # floor(log2(x)) of a positive float32 is its exponent field.
        footprint = z * c[11] * self.ray_norm15 / np.sqrt(np.maximum(np.abs(n_dot_d), np.float32(1e-3)))
        level = np.clip((footprint.view(np.int32) >> 23) - 127, 0, MIP_LEVELS - 1)
        per_face = np.take(np.stack([surf.texture * MIP_LEVELS, prep.last_level[surf.texture]]).astype(np.int32), f, axis=1)
        entry = np.take(prep.mip_table, per_face[0] + level)
        log2_cols, log2_rows = ((entry >> 8) & 255).astype(np.int32), (entry & 255).astype(np.int32)
        shift = np.minimum(level, per_face[1])  # levels past a texture's last one reuse it
        row = (tv >> shift) & ((1 << log2_rows) - 1)
        texel = (entry >> 16) + ((row << log2_cols) | ((tu >> shift) & ((1 << log2_cols) - 1)))
        colour = np.take(prep.atlas, texel).view(np.uint8).reshape(-1, 4).astype(np.float32)
        light = np.full(z.shape, scene.ambient, np.float32)
        z_nd = z * n_dot_d
        z2 = z * z * self.ray_norm2
        for j, li in enumerate(lights):
            rel = li.position - o
            dist2 = self._affine(R.T @ rel).ravel()  # d . (L - o)
            dist2 *= np.float32(-2) * z
            dist2 += z2
            dist2 += np.float32(rel @ rel)  # = |L - P|^2
            np.maximum(dist2, np.float32(1e-6), out=dist2)
            lambert = c[11 + 1 + j] - z_nd
            np.maximum(lambert, 0, out=lambert)
            lambert /= np.sqrt(dist2)
            dist2 *= np.float32(1 / li.range**2)
            dist2 += 1
            lambert /= dist2
            lambert *= np.float32(li.power)
            light += lambert
        gain = (np.sqrt(light) if GAMMA == 2.0 else light ** (1 / GAMMA)) * self.vignette
        colour *= gain[:, None]
        return colour

    def render(self, prep: PreparedScene, pose: np.ndarray, noise: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 (H, W, 3) and depth float32 (H, W) in metres along camera Z, NaN beyond max_depth."""
        depth, face = self.cast(prep, pose)
        rgb = self.colour(prep, pose, depth, face, noise)
        out = depth.copy()
        out[~(depth <= self.max_depth)] = np.nan
        return rgb, out
