"""View synthesis on simulated frames: with the simulator's depth and camera poses, Monodepth2's warp (geometry + loss) must
explain the target far better than a constant depth, an inverted pose or no warp at all. Catches errors of pose direction,
camera-frame convention, intrinsics per resolution and frame order that a self-supervised run would only show as a
depth map without shape."""

import pytest
import torch

from avs_depth_core.data.cache import resize_depth, resize_rgb
from avs_depth_core.geometry import intrinsics_pyramid, scale_intrinsics
from avs_depth_core.losses.photometric import SSIM, reprojection_loss, warp_sources
from avs_depth_core.models.monodepth2 import disp_to_depth
from avs_depth_core.sim.world import SimWorld

MIN_DEPTH, MAX_DEPTH = 0.1, 100.0


def _disp(depth: torch.Tensor) -> torch.Tensor:
    """The sigmoid disparity that disp_to_depth turns back into `depth`."""
    return (1 / depth - 1 / MAX_DEPTH) / (1 / MIN_DEPTH - 1 / MAX_DEPTH)


def _frames(size: tuple[int, int], render: tuple[int, int]) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor, list]:
    """Three frames of one simulated sequence rendered at `render` and resized to `size` as the datasets do: images (3, 3,
    H, W) in [0, 1], depth of each (1, 1, H, W), K (3, 3) for `size`, camera-to-world poses."""
    world = SimWorld("bv1", seed=3, height=render[0], width=render[1], rate_hz=2.0)
    seq = world.sequence(0)
    rgbs, depths, poses = [], [], []
    for i in (4, 5, 6):
        rgb, depth = seq.render(i)
        rgbs.append(torch.from_numpy(resize_rgb(rgb, size)).float() / 255)
        d = resize_depth(depth, size, world.max_depth)
        d[d == 0] = world.max_depth  # beyond max_depth (invalid): far
        depths.append(torch.from_numpy(d).float().reshape(1, 1, *size))
        poses.append(torch.from_numpy(seq.pose(i)).float())
    K = torch.as_tensor(scale_intrinsics(world.K, render, size), dtype=torch.float32)
    return torch.stack(rgbs), depths, K, poses


def _error(frames: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, poses: dict[int, torch.Tensor]) -> float:
    """Mean photometric error (0.85 SSIM + 0.15 L1) of the centre frame synthesised from both neighbours."""
    h, w = frames.shape[-2:]
    K4, inv_K4 = intrinsics_pyramid(K, (h, w), (h, w), [0])[0]
    sources = {-1: frames[0:1], 1: frames[2:3]}
    disp = _disp(depth)
    assert torch.allclose(disp_to_depth(disp, MIN_DEPTH, MAX_DEPTH)[1], depth, rtol=1e-4)
    warped = warp_sources({("disp", 0): disp}, sources, poses, K4, inv_K4, MIN_DEPTH, MAX_DEPTH)
    ssim = SSIM()
    return float(torch.stack([reprojection_loss(warped[(o, 0)], frames[1:2], ssim).mean() for o in (-1, 1)]).mean())


# A constant depth gains little on frames rendered at the network size (the textures alias: see README, Scaling ablation),
# much more on frames rendered at twice the size and resized as the datasets do.
@pytest.mark.parametrize(("render", "shape_gain"), [((64, 128), 0.95), ((128, 256), 0.8)])
def test_ground_truth_depth_and_pose_explain_the_target(render, shape_gain):
    """Pose convention: target -> source is inv(pose_source) @ pose_target (camera-to-world poses, optical frame x right,
    y down, z forward), the transform Monodepth2's Project3D applies to the target's back-projected points."""
    frames, depths, K, P = _frames((64, 128), render)
    truth = {o: torch.linalg.inv(P[1 + o]) @ P[1] for o in (-1, 1)}
    gt = _error(frames, depths[1], K, {o: T[None] for o, T in truth.items()})
    constant = _error(frames, torch.full_like(depths[1], float(depths[1].median())), K, {o: T[None] for o, T in truth.items()})
    inverted = _error(frames, depths[1], K, {o: torch.linalg.inv(T)[None] for o, T in truth.items()})
    identity = _error(frames, depths[1], K, {o: torch.eye(4)[None] for o in (-1, 1)})
    swapped = _error(frames, depths[1], K, {o: truth[-o][None] for o in (-1, 1)})
    assert gt < shape_gain * constant, (gt, constant)
    for other in (inverted, identity, swapped):
        assert gt < 0.5 * other, (gt, inverted, identity, swapped)


def test_wrong_principal_point_or_focal_length_is_worse():
    """Intrinsics of another resolution (not rescaled) or off by a pixel convention must not warp as well."""
    frames, depths, K, P = _frames((64, 128), (128, 256))
    poses = {o: (torch.linalg.inv(P[1 + o]) @ P[1])[None] for o in (-1, 1)}
    right = _error(frames, depths[1], K, poses)
    unscaled = K.clone()
    unscaled[:2] *= 2  # the render size's K used at the network size
    assert right < 0.8 * _error(frames, depths[1], unscaled, poses)
    shifted = K.clone()
    shifted[0, 2] += 3.0
    assert right < _error(frames, depths[1], shifted, poses)
