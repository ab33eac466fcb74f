"""The simulator's anti-aliased camera (--supersample) and IMU topic (--imu), and the cache/dataset reading the IMU."""

from __future__ import annotations

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from avs_depth_core.data import topics
from avs_depth_core.data.cache import imu_rotation
from avs_depth_core.data.datasets import TripletBagDataset
from avs_depth_core.sim.record import ImuErrors, record_bag, rotation_to_quaternion, rotation_vector
from avs_depth_core.sim.world import SimWorld


def test_supersample_keeps_depth_and_noise_and_antialiases():
    worlds = {n: SimWorld("bv1", seed=4, height=32, width=64, supersample=n) for n in (1, 2, 8)}
    errors = {1: [], 2: []}
    for i in (0, 3):
        rgb, depth = {}, {}
        for n, w in worlds.items():
            rgb[n], depth[n] = w.sequence(1).render(i)
            assert rgb[n].shape == (32, 64, 3) and rgb[n].dtype == np.uint8
        np.testing.assert_array_equal(depth[1], depth[2])  # depth is the pixel centre's ray at any supersampling
        np.testing.assert_array_equal(depth[1], depth[8])
        for n in (1, 2):  # 8 x 8 samples stand in for the pixel's area average
            errors[n].append(np.abs(rgb[n].astype(float) - rgb[8]).mean())
    assert np.mean(errors[2]) < 0.75 * np.mean(errors[1]), errors
    with pytest.raises(ValueError, match="supersample"):
        SimWorld("bv1", height=32, width=64, supersample=0)


def test_quaternion_round_trip():
    rng = np.random.default_rng(0)
    for angle in (0.0, 0.3, 2.0, np.pi - 1e-3):
        for _ in range(5):
            axis = rng.normal(size=3)
            axis /= np.linalg.norm(axis)
            K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
            R = np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K
            x, y, z, w = rotation_to_quaternion(R)

            class Msg:
                orientation = type("Q", (), {"x": x, "y": y, "z": z, "w": w})
                orientation_covariance = np.zeros(9)

            np.testing.assert_allclose(imu_rotation(Msg, "test"), R, atol=1e-6)
            if angle < 3:
                np.testing.assert_allclose(rotation_vector(R), axis * angle, atol=1e-6)


def test_imu_topic_is_the_camera_attitude_and_the_dataset_reads_it(tmp_path):
    bag, frames = tmp_path / "bag", 4
    record_bag(bag, preset="bv2", sequences=1, frames=frames, seed=3, height=16, width=32, rate_hz=2.0,
               splits=(1.0, 0.0, 0.0), imu=True)
    seq = SimWorld("bv2", seed=3, height=16, width=32, rate_hz=2.0).sequence(0)
    poses = [seq.pose(i) for i in range(frames)]
    got = []
    with AnyReader([bag]) as reader:
        for conn, _, raw in reader.messages(connections=[c for c in reader.connections if c.topic == topics.IMU]):
            msg = reader.deserialize(raw, conn.msgtype)
            assert msg.header.frame_id == "camera_color_optical_frame" and msg.linear_acceleration_covariance[0] == -1
            w = msg.angular_velocity
            got.append((imu_rotation(msg, "test"), np.array([w.x, w.y, w.z])))
    assert len(got) == frames
    for i, (R, omega) in enumerate(got):
        np.testing.assert_allclose(R, poses[i][:3, :3], atol=1e-5)
        a = min(i, frames - 2)
        np.testing.assert_allclose(omega / 2.0, rotation_vector(poses[a][:3, :3].T @ poses[a + 1][:3, :3]), atol=1e-6)
    ds = TripletBagDataset(bag, split="train", image_size=(16, 32), interval=1, max_depth=30.0,
                           cache_dir=tmp_path / "cache", need_imu=True, progress=False, verbose=False)
    item = ds[0]
    np.testing.assert_allclose(item["imu_rotation"].numpy(), np.stack([p[:3, :3] for p in poses[:3]]), atol=1e-5)


def test_need_imu_without_the_topic_is_a_clear_error(sim_bag, tmp_path, sim):
    with pytest.raises(ValueError, match=f"no {topics.IMU} topic.*--imu"):
        TripletBagDataset(sim_bag, split="train", image_size=(sim.H, sim.W), interval=1, max_depth=sim.MAX_DEPTH,
                          cache_dir=tmp_path / "cache", need_imu=True, progress=False, verbose=False)


def test_imu_errors_bias_and_noise(tmp_path):
    seq = SimWorld("bv1", seed=2, height=16, width=32, rate_hz=2.0).sequence(0)
    bias, errors = ImuErrors(noise_deg=0.0, drift_dps=1.0).draw(seq, 6)
    angles = [np.degrees(np.linalg.norm(rotation_vector(e))) for e in errors]
    assert angles[0] == 0 and np.allclose(np.diff(angles), np.degrees(np.linalg.norm(bias)) * 0.5)  # grows with time
    _, errors = ImuErrors(noise_deg=1.0).draw(seq, 200)
    rms = np.sqrt(np.mean([np.sum(np.degrees(rotation_vector(e)) ** 2) / 3 for e in errors]))
    assert 0.8 < rms < 1.2
    assert np.allclose(ImuErrors().draw(seq, 3)[1], np.eye(3))
    with pytest.raises(ValueError, match="non-negative"):
        ImuErrors(noise_deg=-1)
