"""Monodepth2's model.pose_prior imu: the IMU's rotation replaces PoseNet's, in predict_poses' pair order, mirrored with
the flip augmentation; a bag without the IMU topic is a clear error; one training epoch on a bag with it."""

from __future__ import annotations

import pytest
import torch

from avs_depth_core.cli import main
from avs_depth_core.data import topics
from avs_depth_core.geometry import rot_from_axisangle, transformation_from_parameters
from avs_depth_core.models.monodepth2 import Monodepth2Config, predict_poses, transformation_from_rotation
from avs_depth_core.train.monodepth2 import imu_pair_rotations


def random_rotations(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return rot_from_axisangle(0.3 * torch.randn(n, 1, 3, generator=g))[:, :3, :3]


@pytest.mark.parametrize("invert", [False, True])
def test_transformation_from_rotation_matches_posenet_parameters(invert):
    axisangle, translation = 0.2 * torch.randn(4, 1, 3), torch.randn(4, 1, 3)
    R = rot_from_axisangle(axisangle)[:, :3, :3]
    torch.testing.assert_close(transformation_from_rotation(R, translation, invert),
                               transformation_from_parameters(axisangle, translation, invert))


def test_imu_pair_rotations_order_and_flip():
    R = torch.stack([random_rotations(2, s) for s in range(3)], 1)  # (B, 3 frames, 3, 3) camera-to-world
    rots = imu_pair_rotations({"imu_rotation": R}, torch.tensor([False, True]), [-1, 1], torch.device("cpu"))
    S = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    # +1: target -> source = R_source^T R_target; -1: PoseNet's pair is (source, target): R_target^T R_source
    expected = {1: R[:, 2].transpose(1, 2) @ R[:, 1], -1: R[:, 1].transpose(1, 2) @ R[:, 0]}
    for o, rot in rots.items():
        torch.testing.assert_close(rot[0], expected[o][0])
        torch.testing.assert_close(rot[1], S @ expected[o][1] @ S)
    with pytest.raises(ValueError, match="imu_rotation"):
        imu_pair_rotations({}, None, [1], torch.device("cpu"))


def test_predict_poses_takes_the_prior_rotation_and_posenet_translation():
    translation = torch.tensor([[[0.1, -0.2, 0.3]]])

    def pose_net(a, b):
        return torch.full((1, 1, 3), 0.4), translation

    R = random_rotations(1, 7)
    poses = predict_poses(pose_net, torch.zeros(1, 3, 8, 8), {-1: torch.zeros(1, 3, 8, 8), 1: torch.zeros(1, 3, 8, 8)},
                          {-1: R, 1: R})
    torch.testing.assert_close(poses[1][:, :3, :3], R)
    torch.testing.assert_close(poses[1][:, :3, 3], translation[:, 0])
    torch.testing.assert_close(poses[-1] @ transformation_from_rotation(R, translation), torch.eye(4)[None])


def test_pose_prior_config():
    assert Monodepth2Config().pose_prior == "none"  # Monodepth2: PoseNet's own rotation
    with pytest.raises(ValueError, match="pose_prior must be one of"):
        Monodepth2Config(pose_prior="gyro")


def test_training_with_the_imu_prior(sim_bag, tmp_path, capsys, sim):
    config = sim.write_config(tmp_path / "md2.yaml", pose_prior="imu")
    assert main(sim.train_args(sim_bag, tmp_path / "run0", tmp_path / "cache", config)) != 0  # that bag has no IMU
    assert f"no {topics.IMU} topic" in capsys.readouterr().err
    bag = tmp_path / "imu_bag"
    assert main(["simulate", "--preset", "bv1", "--sequences", "3", "--frames", "8", "--seed", "1", "--out", str(bag),
                 "--height", str(sim.H), "--width", str(sim.W), "--scale-ambiguous", "--imu", "--supersample", "2",
                 "--splits", "0.34", "0.33", "0.33"]) == 0
    assert main(sim.train_args(bag, tmp_path / "run", tmp_path / "cache", config)) == 0
    assert "trained 1 steps" in capsys.readouterr().out  # 4 train triples (8 frames, interval 2), batch 4
