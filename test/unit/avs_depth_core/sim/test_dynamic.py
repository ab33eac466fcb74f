"""The dynamic world (`simulate --dynamic`): objects' depth against their trajectories, instance maps and flags, echoes
that follow a moving object, the plain world left alone, and the bag round trip of the new topics."""

import numpy as np
import pytest
import torch
from rosbags.highlevel import AnyReader

from avs_depth_core.cli import main
from avs_depth_core.data import topics
from avs_depth_core.data.bag import bag_sequences
from avs_depth_core.data.bag_info import summarise_bag
from avs_depth_core.data.datasets import SupervisedBagDataset, TripletBagDataset
from avs_depth_core.data.instances import WithInstances, has_instances, read_instances
from avs_depth_core.sim.acoustics import SINC_TAPS
from avs_depth_core.sim.dynamic import CASES, MOVING_SPEED, STATIC, DynamicSequence, DynamicWorld, box_to_world
from avs_depth_core.sim.scene import ROOM_FACES
from avs_depth_core.sim.world import SimSequence, SimWorld

H, W = 48, 96


@pytest.fixture(scope="module")
def seq() -> DynamicSequence:
    return DynamicWorld("bv1", seed=4, height=H, width=W).sequence(1)


def _points(seq: SimSequence, i: int, depth: np.ndarray) -> np.ndarray:
    """World points (H, W, 3) of the pixels' depth in frame i."""
    K = seq.world.K
    v, u = np.mgrid[0:H, 0:W]
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, depth], axis=-1)
    pose = seq.pose(i)
    return cam @ pose[:3, :3].T + pose[:3, 3]


def test_every_moving_case_and_static_objects(seq):
    motions = [o.motion for o in seq.objects]
    assert set(CASES) <= set(motions) and STATIC in motions
    ids = [o.id for o in seq.objects]
    assert len(set(ids)) == len(ids) and min(ids) >= 1


def test_object_depth_matches_its_trajectory(seq):
    """Each object pixel's back-projected depth lies on the surface of the object's box where its trajectory puts it."""
    seen = set()
    for i in (0, 7, 15):
        frame = seq.frame(i)
        points = _points(seq, i, np.nan_to_num(frame.depth))
        boxes = {o.id: b for o, b in zip(seq.objects, seq.boxes(i), strict=True)}
        for k in np.unique(frame.instances):
            if k == 0:
                continue
            box = boxes[int(k)]
            local = (points[frame.instances == k] - box.center) @ box.axes().T  # rows of axes() = local axes
            on_surface = np.max(np.abs(local) / box.half, axis=1)
            assert np.allclose(on_surface, 1.0, atol=2e-3), (i, k, on_surface.min(), on_surface.max())
            seen.add(int(k))
        # and the ground-truth pose says the same: object-to-camera == inv(camera) @ object-to-world
        for j, box in enumerate(seq.boxes(i)):
            assert np.allclose(frame.objects.pose[j], np.linalg.inv(seq.pose(i)) @ box_to_world(box), atol=1e-9)
    assert len(seen) >= 3


def test_instance_maps_flags_and_residual_motion_agree(seq):
    a, b = seq.frame(5), seq.frame(6)
    o = a.objects
    assert a.instances.dtype == np.uint16 and a.instances.shape == (H, W)
    assert set(np.unique(a.instances)) <= {0, *o.ids.tolist()}
    assert not np.isnan(a.depth[a.instances > 0]).any()  # labelled pixels have depth
    assert np.array_equal(o.moving, np.linalg.norm(o.velocity, axis=1) > MOVING_SPEED)
    static = np.array([m == STATIC for m in o.motions])
    assert not o.moving[static].any() and o.moving[~static].any()
    assert np.allclose(o.residual_motion[static], np.eye(4), atol=1e-9)
    # The residual motion carries each object from this frame's camera into the next one's.
    ego = np.linalg.inv(b.objects.camera_to_world) @ a.objects.camera_to_world
    for j in range(len(o.ids)):
        assert np.allclose(ego @ o.residual_motion[j] @ o.pose[j], b.objects.pose[j], atol=1e-9)
    # An object attached to the camera does not move relative to it (apart from the camera's small bob and tilt).
    attached = [j for j, m in enumerate(o.motions) if m == "with_camera"]
    for j in attached:
        assert np.linalg.norm(o.pose[j][:3, 3] - b.objects.pose[j][:3, 3]) < 0.05


def test_frames_do_not_depend_on_the_order_they_are_asked_in():
    world = DynamicWorld("bv2", seed=9, height=16, width=32)
    forward = [world.sequence(0).frame(i) for i in (2, 11)]
    later = world.sequence(0)
    backward = {i: later.frame(i) for i in (11, 2)}
    for frame in forward:
        other = backward[frame.index]
        assert np.array_equal(frame.rgb, other.rgb) and np.array_equal(frame.instances, other.instances)
        assert np.array_equal(frame.echo, other.echo) and np.array_equal(frame.objects.pose, other.objects.pose)


def test_room_pixels_and_default_world_unchanged(seq):
    """Where no object is, the dynamic frame is the plain world's frame of the same seed, and dynamic=False is plain."""
    plain_world = SimWorld("bv1", seed=4, height=H, width=W)
    plain = plain_world.sequence(1)
    assert type(plain) is SimSequence and plain.frame(0).instances is None and plain.frame(0).objects is None
    frame, ref = seq.frame(3), plain.frame(3)
    room = (frame.instances == 0) & np.isfinite(frame.depth)
    assert room.mean() > 0.3 and (frame.instances > 0).any()
    assert np.array_equal(frame.rgb[room], ref.rgb[room]) and np.array_equal(frame.depth[room], ref.depth[room])
    assert not np.array_equal(frame.echo, ref.echo)  # the objects are heard


def _object_paths(seq, i, object_id):
    """Path lengths (2 ears, faces) of the specular/nearest-point returns off object `object_id` at frame i."""
    ac = seq.acoustic_scene_at(i)
    paths = seq.simulator.paths(ac, seq.pose(i))
    first = ROOM_FACES + 6 * (len(seq.scene.boxes) + [o.id for o in seq.objects].index(object_id))
    columns = (ac.box_faces >= first) & (ac.box_faces < first + 6)
    length, gain = paths["box"]
    return length[:, columns], gain[:, columns]


def _shortest_via_box(speaker, mic, box, step=0.01):
    """Brute force: min over points p of the box's faces (its floor side excepted) of |speaker - p| + |p - mic|."""
    best = np.inf
    for axis in range(3):
        a, b = [k for k in range(3) if k != axis]
        for sign in (-1.0, 1.0):
            if axis == 2 and sign < 0:
                continue
            ua = np.arange(-box.half[a], box.half[a] + 1e-9, step)
            ub = np.arange(-box.half[b], box.half[b] + 1e-9, step)
            local = np.zeros((len(ua), len(ub), 3))
            local[..., axis] = sign * box.half[axis]
            local[..., a], local[..., b] = ua[:, None], ub[None, :]
            p = box.center + local @ box.axes()
            best = min(best, float(np.min(np.linalg.norm(p - speaker, axis=-1) + np.linalg.norm(p - mic, axis=-1))))
    return best


def test_echo_path_length_follows_a_moving_object(seq):
    axial = next(o for o in seq.objects if o.motion == "axial")
    j = seq.objects.index(axial)
    frames = list(range(0, 60, 3))
    ranges = [float(np.linalg.norm(seq.object_states(i).pose[j][:3, 3])) for i in frames]
    near, far = frames[int(np.argmin(ranges))], frames[int(np.argmax(ranges))]
    assert max(ranges) - min(ranges) > 1.0
    shortest = []
    for i in (near, far):
        length, _ = _object_paths(seq, i, axial.id)
        speaker, mics, _, _ = seq.simulator.rig.positions(seq.pose(i))
        # the earliest return off the object is the shortest path via its surface where it is at the emission
        for ear in (0, 1):
            assert length[ear].min() == pytest.approx(_shortest_via_box(speaker, mics[ear], seq.boxes(i)[j]), abs=0.02)
        shortest.append(length[0].min())
    assert shortest[1] - shortest[0] > 1.0  # out and back: about twice the change in range
    # In the impulse response: what the objects add starts where the nearest object's shortest path says.
    sim = seq.simulator
    for i in (near, far):
        speaker, mics, _, _ = sim.rig.positions(seq.pose(i))
        nearest = min(_shortest_via_box(speaker, mics[0], box, step=0.02) for box in seq.boxes(i))
        added = np.abs(sim.impulse_response(seq.acoustic_scene_at(i), seq.pose(i), None, tail=False)[0]
                       - sim.impulse_response(seq.acoustic_scene, seq.pose(i), None, tail=False)[0])
        onset = int(np.argmax(added > 1e-3 * added.max()))
        assert onset == pytest.approx(sim.pre_roll + nearest * sim.fs / sim.c, abs=SINC_TAPS)


def test_bag_round_trip_of_instances_and_objects(tmp_path):
    out = tmp_path / "dyn"
    assert main(["simulate", "--preset", "bv1", "--dynamic", "--sequences", "2", "--frames", "3", "--seed", "2",
                 "--height", "24", "--width", "48", "--out", str(out)]) == 0
    with AnyReader([out]) as reader:  # rosbags' own reader, types from the bag
        conns = {c.topic: c.msgtype for c in reader.connections}
    assert conns[topics.INSTANCES] == topics.IMAGE_TYPE and conns[topics.OBJECTS] == topics.OBJECTS_TYPE
    assert has_instances(out)
    frames = read_instances(out)
    assert len(frames) == 6
    world = DynamicWorld("bv1", seed=2, height=24, width=48)
    records = bag_sequences(out)
    for record in records:
        seq = world.sequence(record["index"])
        assert record["objects"] == seq.describe_objects()
        stamps = sorted(s for s in frames if record["start_ns"] <= s < record["end_ns"])
        for i, stamp in enumerate(stamps):
            expected = seq.frame(i)
            got = frames[stamp]
            assert np.array_equal(got.instances, expected.instances)
            e, g = expected.objects, got.objects
            assert np.array_equal(g.ids, e.ids) and g.kinds == e.kinds and g.motions == e.motions
            assert np.array_equal(g.moving, e.moving)
            for field in ("half_extents", "pose", "velocity", "residual_motion", "camera_to_world"):
                assert np.allclose(getattr(g, field), getattr(e, field), atol=1e-12), field
            assert got.moving_ids() == {int(k) for k, m in zip(e.ids, e.moving, strict=True) if m}
    info = summarise_bag(out)["topics"][topics.OBJECTS]
    assert info["objects_min"] >= 4 and info["moving_by_motion"]["static"] == 0
    assert info["moving_by_motion"]["crossing"] == 1.0
    # Only the stamps asked for are read.
    one = sorted(frames)[1]
    assert list(read_instances(out, [one])) == [one]


def test_plain_bag_has_no_instance_data(sim_bag):
    assert not has_instances(sim_bag)
    assert read_instances(sim_bag) == {}


def test_datasets_with_the_oracle_instances(tmp_path):
    out = tmp_path / "dyn"
    assert main(["simulate", "--preset", "bv1", "--dynamic", "--sequences", "1", "--frames", "7", "--seed", "6",
                 "--height", "32", "--width", "64", "--splits", "1", "0", "0", "--out", str(out)]) == 0
    frames = read_instances(out)
    supervised = WithInstances(SupervisedBagDataset(out, "train", image_size=(16, 32), max_depth=12.0, echo_size=(16, 16),
                                                    cache_dir=tmp_path / "cache", progress=False, verbose=False))
    triples = WithInstances(TripletBagDataset(out, "train", image_size=(16, 32), interval=2, max_depth=12.0,
                                              cache_dir=tmp_path / "cache", progress=False, verbose=False))
    assert len(supervised) == 7 and len(triples) == 3
    for dataset in (supervised, triples):
        for i in range(len(dataset)):
            item = dataset[i]
            frame = frames[item["stamp_ns"]]
            assert item["has_instances"] and item["instances"].shape == (16, 32)
            assert torch.equal(item["instances"], frame_labels(frame.instances))
            moving = torch.zeros(16, 32, dtype=torch.bool)
            for k in frame.moving_ids():
                if (item["instances"] == k).sum() >= 0.005 * 16 * 32:
                    moving |= item["instances"] == k
            assert torch.equal(item["dynamic"][0], moving)
    assert any(supervised[i]["dynamic"].any() for i in range(len(supervised)))


def frame_labels(instances):
    """The cache's nearest-at-pixel-centres resize of a 32x64 map to 16x32: every second pixel from the second."""
    return torch.from_numpy(instances[1::2, 1::2].astype(np.int64))
