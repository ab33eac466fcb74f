"""Procedural surface textures: seamless tiles defined in surface coordinates.

A texture is an (rows, cols, 3) float32 image in display space ([0, 1], row index = v, column = u; both sizes powers of
two) plus the metres one tile spans along u and v. "Fit" textures (bookshelves, crates) span their face exactly, so their
period is None and the renderer uses the face's extent. Because periods are lengths attached to the surface, scaling a
scene scales its textures. Generators take `repeats` = how many of the material's natural tiles one image holds, so a
wall tile can hold a whole number of brick tiles drawn at full resolution.
"""

from __future__ import annotations

import colorsys

import numpy as np

TEXTURE_SIZE = 256      # texels per side of a material tile
WALL_TEXEL = 0.012      # metres per texel on walls (posters, doors and skirting are drawn into the wall tile)
MAX_WALL_SIZE = 1024

Shape = tuple[int, int]


def periodic_noise(rng: np.random.Generator, shape: Shape, cells: Shape) -> np.ndarray:
    """Smooth value noise in [0, 1] tiling with the image: a random grid of cells, smoothstep-interpolated."""
    grid = rng.random(cells).astype(np.float32)

    def axis(n: int, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.arange(n, dtype=np.float32) * c / n
        i0 = x.astype(np.int64)
        f = x - i0
        return i0, (i0 + 1) % c, f * f * (3 - 2 * f)

    v0, v1, fv = axis(shape[0], cells[0])
    u0, u1, fu = axis(shape[1], cells[1])
    rows = grid[v0] * (1 - fv)[:, None] + grid[v1] * fv[:, None]
    return rows[:, u0] * (1 - fu)[None, :] + rows[:, u1] * fu[None, :]


def fbm(rng: np.random.Generator, shape: Shape, cells: tuple[float, float], octaves: int = 4) -> np.ndarray:
    """Fractal noise (octaves of periodic value noise, halving amplitude), normalised to [0, 1].
    cells = (along v, along u) of the first octave; unequal counts give streaks along the axis with fewer cells."""
    out = np.zeros(shape, np.float32)
    amp, total = 1.0, 0.0
    for k in range(octaves):
        c = (max(1, min(shape[0], round(cells[0] * 2**k))), max(1, min(shape[1], round(cells[1] * 2**k))))
        out += amp * periodic_noise(rng, shape, c)
        total += amp
        amp *= 0.5
    lo, hi = out.min(), out.max()
    return (out - lo) / max(hi - lo, 1e-6)


def hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)), np.float32)


def _grid(shape: Shape) -> tuple[np.ndarray, np.ndarray]:
    """Texel centres in tile coordinates [0, 1): v as a column, u as a row."""
    return ((np.arange(shape[0], dtype=np.float32) + 0.5) / shape[0])[:, None], \
        ((np.arange(shape[1], dtype=np.float32) + 0.5) / shape[1])[None, :]


def _grain(rng, shape):
    return rng.random(shape).astype(np.float32) - 0.5


def _plaster(rng, shape, rep):
    base = hsv(rng.random(), rng.uniform(0.03, 0.25), rng.uniform(0.72, 0.93))
    shade = 0.9 + 0.12 * fbm(rng, shape, (3 * rep[1], 3 * rep[0]), 4) + 0.05 * _grain(rng, shape)
    return base * shade[..., None]


def _concrete(rng, shape, rep):
    base = hsv(rng.uniform(0.05, 0.15), rng.uniform(0.0, 0.12), rng.uniform(0.45, 0.72))
    shade = 0.78 + 0.3 * fbm(rng, shape, (4 * rep[1], 4 * rep[0]), 5)
    specks = (rng.random(shape) < 0.02) * rng.uniform(-0.15, 0.15, shape)
    return base * (shade + specks.astype(np.float32))[..., None]


def _brick(rng, shape, rep):
    v, u = _grid(shape)
    rows, cols = 8 * rep[1], 4 * rep[0]
    row = np.floor(v * rows)
    shifted = u * cols + 0.5 * (row % 2)
    col = np.floor(shifted) % cols
    mortar = (shifted % 1.0 < 0.05) | ((v * rows) % 1.0 < 0.13)
    base = hsv(rng.uniform(0.0, 0.06), rng.uniform(0.45, 0.7), rng.uniform(0.45, 0.6))
    tints = rng.uniform(0.75, 1.1, (rows, cols)).astype(np.float32)[row.astype(int) % rows, col.astype(int)]
    img = base * (tints * (0.85 + 0.3 * fbm(rng, shape, (8 * rep[1], 8 * rep[0]), 3)))[..., None]
    mortar_colour = hsv(0.1, 0.08, 0.72) * (0.9 + 0.2 * fbm(rng, shape, (16 * rep[1], 16 * rep[0]), 2))[..., None]
    return np.where(mortar[..., None], mortar_colour, img)


def _ceiling_tiles(rng, shape, rep):
    v, u = _grid(shape)
    bar = ((u * 2 * rep[0]) % 1.0 < 0.03) | ((v * 2 * rep[1]) % 1.0 < 0.03)
    base = hsv(rng.uniform(0.08, 0.15), rng.uniform(0.02, 0.08), rng.uniform(0.85, 0.95))
    fissures = 0.9 + 0.1 * (rng.random(shape) > 0.2) + 0.05 * fbm(rng, shape, (16 * rep[1], 16 * rep[0]), 2)
    return np.where(bar[..., None], hsv(0.0, 0.0, 0.78), base * fissures[..., None])


def _wood(rng, shape, rep, planks=5, light=None):
    v, u = _grid(shape)
    n = planks * rep[1]
    plank = np.floor(v * n).astype(int) % n
    along = (u * rep[0] + rng.random(n).astype(np.float32)[plank]) % 1.0
    joint = (along < 0.01) | ((v * n) % 1.0 < 0.04)
    tints = rng.uniform(0.8, 1.15, n).astype(np.float32)[plank]
    streak = fbm(rng, shape, (12 * rep[1], 2 * rep[0]), 4)
    grain = 0.85 + 0.15 * np.sin(2 * np.pi * (v * n * 3 + 2.5 * streak))
    base = hsv(rng.uniform(0.05, 0.1), rng.uniform(0.45, 0.7), rng.uniform(0.35, 0.7) if light is None else light)
    img = base * (tints * grain)[..., None]
    return np.where(joint[..., None], img * 0.55, img)


def _floor_tiles(rng, shape, rep):
    v, u = _grid(shape)
    nu, nv = 2 * rep[0], 2 * rep[1]
    grout = ((u * nu) % 1.0 < 0.02) | ((v * nv) % 1.0 < 0.02)
    idx = (np.floor(v * nv) * nu + np.floor(u * nu)).astype(int)
    tints = rng.uniform(0.9, 1.08, nu * nv).astype(np.float32)[idx]
    base = hsv(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.55, 0.9))
    img = base * (tints * (0.88 + 0.16 * fbm(rng, shape, (4 * rep[1], 4 * rep[0]), 5)))[..., None]
    return np.where(grout[..., None], hsv(0.1, 0.05, 0.45), img)


def _carpet(rng, shape, rep):
    v, u = _grid(shape)
    checker = ((np.floor(u * 2 * rep[0]) + np.floor(v * 2 * rep[1])) % 2).astype(np.float32)
    base = hsv(rng.random(), rng.uniform(0.2, 0.6), rng.uniform(0.3, 0.6))
    pile = 0.8 + 0.4 * rng.random(shape).astype(np.float32)
    return base * (pile * (0.92 + 0.08 * checker) * (0.9 + 0.2 * fbm(rng, shape, (4 * rep[1], 4 * rep[0]), 3)))[..., None]


def _fabric(rng, shape, rep):
    v, u = _grid(shape)
    weave = 0.9 + 0.1 * np.sin(2 * np.pi * u * 64 * rep[0]) * np.sin(2 * np.pi * v * 64 * rep[1])
    stripes = 0.9 + 0.1 * (np.sin(2 * np.pi * u * rep[0] * int(rng.integers(2, 6))) > 0.6)
    base = hsv(rng.random(), rng.uniform(0.3, 0.75), rng.uniform(0.3, 0.7))
    return base * (weave * stripes * (0.9 + 0.15 * fbm(rng, shape, (4 * rep[1], 4 * rep[0]), 3)))[..., None]


def _metal(rng, shape, rep):
    base = hsv(rng.uniform(0.5, 0.65), rng.uniform(0.0, 0.2), rng.uniform(0.5, 0.8))
    return base * (0.85 + 0.25 * fbm(rng, shape, (16 * rep[1], 2 * rep[0]), 5))[..., None]


def _bookshelf(rng, shape, rep, extent_v):
    rows, cols = shape
    shelves = max(2, int(round(extent_v / 0.35)))
    img = _wood(rng, shape, rep, planks=1)
    bv, bu = max(2, rows // 25), max(2, cols // 25)
    inner = rows - 2 * bv
    for s in range(shelves):
        lo = bv + s * inner // shelves
        hi = bv + (s + 1) * inner // shelves - max(1, rows // 50)
        x = bu
        while x < cols - bu:
            w = max(1, int(rng.uniform(0.015, 0.05) * cols))
            top = lo + int((hi - lo) * rng.uniform(0.65, 0.95))
            colour = hsv(rng.random(), rng.uniform(0.3, 0.85), rng.uniform(0.25, 0.85))
            x1 = min(x + w, cols - bu)
            ramp = 0.85 + 0.15 * np.arange(x1 - x, dtype=np.float32) / w
            img[lo:top, x:x1] = colour * ramp[None, :, None]
            x = x1 + (int(rng.uniform(0.03, 0.12) * cols) if rng.random() < 0.08 else 0)
    return img


def _crate(rng, shape, rep):
    v, u = _grid(shape)
    light = rng.uniform(0.45, 0.75)
    img = _wood(rng, shape, rep, planks=int(rng.integers(3, 6)), light=light)
    edge = (u < 0.07) | (u > 0.93) | (v < 0.07) | (v > 0.93)
    diagonal = np.abs(u - v) < 0.05
    frame = _wood(rng, shape, rep, planks=1, light=light * 0.85)
    img = np.where((edge | diagonal)[..., None], frame, img)
    if rng.random() < 0.5:
        label = (np.abs(u - 0.5) < 0.15) & (np.abs(v - 0.6) < 0.08)
        img = np.where(label[..., None], hsv(rng.random(), 0.7, 0.8), img)
    return img


# kind -> natural tile period (u, v) in metres; None = fit to the face
TILE_PERIODS: dict[str, tuple[float, float] | None] = {
    "plaster": (2.0, 2.0), "concrete": (2.5, 2.5), "brick": (0.9, 0.6), "ceiling_tiles": (1.2, 1.2),
    "wood": (1.5, 1.0), "tiles": (1.0, 1.0), "carpet": (1.0, 1.0), "fabric": (0.6, 0.6), "metal": (1.2, 1.2),
    "bookshelf": None, "crate": None,
}


def _draw(kind: str, rng: np.random.Generator, shape: Shape, rep: tuple[int, int], extent: tuple[float, float]) -> np.ndarray:
    if kind not in TILE_PERIODS:
        raise ValueError(f"unknown texture kind {kind!r}; expected one of {sorted(TILE_PERIODS)}")
    makers = {"plaster": _plaster, "concrete": _concrete, "brick": _brick, "ceiling_tiles": _ceiling_tiles, "wood": _wood,
              "tiles": _floor_tiles, "carpet": _carpet, "fabric": _fabric, "metal": _metal, "crate": _crate}
    if kind == "bookshelf":
        return _bookshelf(rng, shape, rep, extent[1])
    return makers[kind](rng, shape, rep)


def make_texture(kind: str, rng: np.random.Generator, size: int = TEXTURE_SIZE,
                 extent: tuple[float, float] = (1.0, 1.0)) -> tuple[np.ndarray, tuple[float, float] | None]:
    """A square texture of `kind` and its tile period (u, v) in metres (None: stretched over the face).
    `extent` = the face's (u, v) size in metres, used by fit textures for their layout."""
    img = _draw(kind, rng, (size, size), (1, 1), extent)
    return np.clip(img, 0.0, 1.0).astype(np.float32), TILE_PERIODS[kind]


def _pow2(n: float, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, 2 ** round(np.log2(max(n, 1.0))))))


def make_wall_texture(kind: str, rng: np.random.Generator, wall_height: float, texel: float = WALL_TEXEL,
                      paint: np.random.Generator | None = None) -> tuple[np.ndarray, tuple[float, float]]:
    """A wall tile spanning floor to ceiling (v) and 3-5 m along the wall (u), about `texel` metres per texel: a whole
    number of the material's tiles, a skirting board, posters and maybe a door. The material is drawn from `paint` when
    given (walls of one room pass generators with the same seed, so they share their colour), else from rng."""
    span = float(rng.uniform(3.0, 5.0))
    period = TILE_PERIODS[kind]
    if period is None:
        raise ValueError(f"texture kind {kind!r} fits its face and cannot cover a wall")
    rep = (max(1, round(span / period[0])), max(1, round(wall_height / period[1])))
    shape = (_pow2(wall_height / texel, 16, MAX_WALL_SIZE), _pow2(span / texel, 16, MAX_WALL_SIZE))
    img = _draw(kind, rng if paint is None else paint, shape, rep, (span, wall_height))
    v, u = _grid(shape)
    height_m, along_m = v * wall_height, u * span
    img = np.where((height_m < rng.uniform(0.06, 0.12))[..., None], hsv(rng.random(), 0.1, rng.uniform(0.2, 0.9)), img)
    if rng.random() < 0.5 and span > 2.0 and wall_height > 2.3:
        left = rng.uniform(0.2, span - 1.1)
        door = (along_m > left) & (along_m < left + 0.9) & (height_m < 2.05)
        inside = (along_m > left + 0.05) & (along_m < left + 0.85) & (height_m < 2.0)
        panel = _wood(rng, shape, (1, 1), planks=1)
        img = np.where(door[..., None], np.where(inside[..., None], panel, panel * 0.6), img)
    for _ in range(int(rng.integers(0, 3))):
        w, h = rng.uniform(0.3, 1.0), rng.uniform(0.3, 0.8)
        left = rng.uniform(0.1, max(span - w - 0.1, 0.11))
        bottom = rng.uniform(1.1, max(min(wall_height, 2.6) - h, 1.11))
        poster = (along_m > left) & (along_m < left + w) & (height_m > bottom) & (height_m < bottom + h)
        colour = hsv(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.3, 0.9))
        art = colour * (0.6 + 0.6 * fbm(rng, shape, (4, 4), 3))[..., None]
        img = np.where(poster[..., None], art, img)
    return np.clip(img, 0.0, 1.0).astype(np.float32), (span, wall_height)
