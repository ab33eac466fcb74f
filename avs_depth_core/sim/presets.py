"""The numbers that define a simulated world: rooms, furniture, surface materials, the robot's motion.

All lengths are metres at scale 1. `--scale-ambiguous` multiplies every length of a scene (never these tables) by the
sequence's scale factor.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

Range = tuple[float, float]


@dataclass(frozen=True)
class Material:
    """A surface kind: how it looks (texture kind, see textures.py) and how it sounds.

    absorption: energy fraction a reflection loses (reflection amplitude sqrt(1 - absorption)), the 2-4 kHz octave values
    of the matching entry of pyroomacoustics' materials database (pyroomacoustics/data/materials.json, from the annex of
    Vorlaender, Auralization, 2008) where one exists, named in the comment; scattering: energy fraction reflected
    diffusely (a rough guess per surface kind).
    """
    texture: str
    absorption: float
    scattering: float


MATERIALS: dict[str, Material] = {
    "plaster": Material("plaster", 0.04, 0.10),            # plasterboard
    "painted_concrete": Material("concrete", 0.02, 0.10),  # unpainted_concrete
    "brick": Material("brick", 0.04, 0.30),                # brickwork
    "ceiling_tiles": Material("ceiling_tiles", 0.8, 0.20),  # ceiling_fissured_tile (0.75-0.92)
    "wood_floor": Material("wood", 0.06, 0.10),            # stage_floor
    "floor_tiles": Material("tiles", 0.02, 0.05),          # ceramic_tiles
    "carpet": Material("carpet", 0.35, 0.20),              # carpet_thin (0.2-0.35)
    "concrete_floor": Material("concrete", 0.02, 0.10),    # concrete_floor
    "wood": Material("wood", 0.08, 0.15),                  # wood_16mm
    "fabric": Material("fabric", 0.55, 0.40),              # curtains_fabric
    "metal": Material("metal", 0.05, 0.10),                # no entry: a hard, reflective panel
    "bookshelf": Material("bookshelf", 0.30, 0.70),        # no entry: books are porous and very uneven
    "crate": Material("crate", 0.08, 0.30),                # wood_16mm
}


@dataclass(frozen=True)
class Furniture:
    """A kind of box: footprint width (along its wall), depth, height ranges, whether it stands against a wall, materials."""
    width: Range
    depth: Range
    height: Range  # a height of (0, 0) means floor to ceiling (pillars)
    against_wall: bool
    materials: tuple[str, ...]


FURNITURE: dict[str, Furniture] = {
    "desk": Furniture((1.2, 1.8), (0.6, 0.8), (0.72, 0.76), True, ("wood", "metal")),
    "cabinet": Furniture((0.4, 1.0), (0.4, 0.6), (0.8, 2.0), True, ("wood", "metal")),
    "bookshelf": Furniture((0.8, 2.0), (0.3, 0.45), (1.5, 2.2), True, ("bookshelf",)),
    "sofa": Furniture((1.4, 2.2), (0.8, 1.0), (0.7, 0.9), True, ("fabric",)),
    "table": Furniture((0.8, 1.6), (0.8, 1.2), (0.72, 0.76), False, ("wood",)),
    "crate": Furniture((0.4, 0.9), (0.4, 0.9), (0.4, 0.9), False, ("crate", "wood", "metal")),
    "pillar": Furniture((0.4, 1.0), (0.4, 1.0), (0.0, 0.0), False, ("painted_concrete", "plaster", "brick")),
    "partition": Furniture((2.0, 5.0), (0.1, 0.25), (1.6, 2.6), False, ("fabric", "plaster", "wood")),
    "pallet_stack": Furniture((1.0, 2.4), (0.8, 1.6), (0.6, 2.4), False, ("crate", "wood")),
    "bench": Furniture((1.5, 3.0), (0.4, 0.7), (0.45, 0.5), False, ("wood", "metal")),
    "counter": Furniture((2.0, 5.0), (0.6, 1.0), (0.9, 1.1), True, ("wood", "metal", "plaster")),
    # Classroom and office furniture of the bv2_rooms preset (EN 1729-1 school chairs: seat 0.35-0.46 m, back to 0.8-0.9 m;
    # cast-iron panel radiators 0.6-0.9 m high, 0.1-0.2 m deep, under windows).
    "chair": Furniture((0.4, 0.55), (0.4, 0.55), (0.8, 0.95), False, ("fabric", "metal", "wood")),
    "radiator": Furniture((0.6, 1.6), (0.1, 0.2), (0.6, 0.9), True, ("metal",)),
}


@dataclass(frozen=True)
class Preset:
    """A family of worlds. Ranges are sampled uniformly per sequence (counts as integers, inclusive)."""
    name: str
    max_depth: float              # depth beyond this is NaN; the echo window covers its round trip
    room_length: Range            # x extent
    room_width: Range             # y extent
    room_height: Range
    box_count: tuple[int, int]
    furniture: tuple[str, ...]    # kinds drawn uniformly
    floors: tuple[str, ...]
    walls: tuple[str, ...]
    ceilings: tuple[str, ...]
    light_count: tuple[int, int]
    hfov_deg: float               # camera horizontal field of view
    camera_height: Range
    camera_pitch_deg: Range       # constant tilt per sequence, positive = up
    speed: Range                  # cruise speed, m/s
    clearance: float              # the robot keeps this distance (m) from walls and boxes
    patch_size: float             # diffuse-echo patch edge, m
    min_free_fraction: float = 0.3  # furniture stops being added when less of the floor stays reachable


PRESETS: dict[str, Preset] = {
    # BatVision BV1: UC Berkeley offices, depth clipped at 12 m (BatVision dataloader).
    "bv1": Preset(
        name="bv1", max_depth=12.0, room_length=(4.0, 10.0), room_width=(3.0, 8.0), room_height=(2.5, 3.2),
        box_count=(2, 7), furniture=("desk", "cabinet", "bookshelf", "sofa", "table", "crate"),
        floors=("wood_floor", "floor_tiles", "carpet"), walls=("plaster", "plaster", "brick"),
        ceilings=("plaster", "ceiling_tiles"), light_count=(1, 3), hfov_deg=80.0, camera_height=(0.5, 1.2),
        camera_pitch_deg=(-8.0, 3.0), speed=(0.3, 0.6), clearance=0.45, patch_size=0.35,
    ),
    # BatVision BV2: Mines Paris campus halls and corridors, depth clipped at 30 m (BatVision dataloader).
    "bv2": Preset(
        name="bv2", max_depth=30.0, room_length=(12.0, 25.0), room_width=(10.0, 20.0), room_height=(3.5, 7.0),
        box_count=(4, 12), furniture=("pillar", "partition", "pallet_stack", "bench", "counter", "table", "crate"),
        floors=("concrete_floor", "floor_tiles", "wood_floor"), walls=("painted_concrete", "plaster", "brick"),
        ceilings=("plaster", "ceiling_tiles", "painted_concrete"), light_count=(2, 5), hfov_deg=80.0,
        camera_height=(0.6, 1.4), camera_pitch_deg=(-6.0, 4.0), speed=(0.4, 0.9), clearance=0.7, patch_size=0.8,
    ),
    # BatVision BV2's smaller places: the campus's corridors, classrooms and offices (BV2 was recorded across a
    # university campus, halls and corridors and rooms, method_spec section 4), with BV2's 30 m clip and echo window
    # so it mixes with bv2 in one bag. Sizes are common European room sizes, not taken from BV2's depth: offices and
    # classrooms 2.5-10 m by 2.5-6 m, corridors down to 1.8 m wide (an accessible corridor's width), ceilings 2.5-3.5 m.
    # Camera, speed and patch as bv2 except the clearance, which a 1.8 m corridor must leave room for.
    "bv2_rooms": Preset(
        name="bv2_rooms", max_depth=30.0, room_length=(2.5, 10.0), room_width=(1.8, 6.0), room_height=(2.5, 3.5),
        box_count=(2, 8), furniture=("desk", "cabinet", "bookshelf", "table", "chair", "chair", "radiator", "crate"),
        floors=("wood_floor", "floor_tiles", "carpet"), walls=("plaster", "painted_concrete", "brick"),
        ceilings=("plaster", "ceiling_tiles"), light_count=(1, 3), hfov_deg=80.0, camera_height=(0.6, 1.4),
        camera_pitch_deg=(-6.0, 4.0), speed=(0.3, 0.6), clearance=0.35, patch_size=0.35,
    ),
}

# Presets that draw each sequence's world from several presets (weights sum to 1). All parts share max_depth and the
# camera's field of view, which fix the echo window and the intrinsics of the whole bag.
MIXES: dict[str, tuple[tuple[str, float], ...]] = {
    # BatVision V2's places as a whole: halls and the smaller corridors, classrooms and offices, half each.
    "bv2_mix": (("bv2", 0.5), ("bv2_rooms", 0.5)),
}


def preset_names() -> list[str]:
    """Every name `get_preset` accepts: the presets and their mixes."""
    return sorted([*PRESETS, *MIXES])


def preset_parts(name: str) -> tuple[tuple[Preset, float], ...]:
    """(preset, weight) of each part of a mix; a plain preset is its own single part."""
    if name in PRESETS:
        return ((PRESETS[name], 1.0),)
    if name not in MIXES:
        raise ValueError(f"unknown simulation preset {name!r}; expected one of {preset_names()}")
    parts = tuple((PRESETS[part], float(weight)) for part, weight in MIXES[name])
    first = parts[0][0]
    for part, _ in parts:
        if (part.max_depth, part.hfov_deg) != (first.max_depth, first.hfov_deg):
            raise ValueError(f"preset mix {name!r}: {part.name} and {first.name} differ in max_depth or hfov_deg")
    return parts


def get_preset(name: str) -> Preset:
    """A preset by name; for a mix, its first part renamed (what the parts share: max_depth, hfov_deg)."""
    parts = preset_parts(name)
    return parts[0][0] if name in PRESETS else replace(parts[0][0], name=name)
