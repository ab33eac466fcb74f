import pytest
import torch
import torch.nn.functional as F

from avs_depth_core.geometry import get_translation_matrix, intrinsics_pyramid
from avs_depth_core.losses.photometric import (
    SSIM,
    Monodepth2Loss,
    get_smooth_loss,
    mean_normalised,
    min_reprojection_with_automask,
    reprojection_loss,
    warp_sources,
)
from avs_depth_core.models.monodepth2 import DepthNet, Monodepth2Config, PoseNet, predict_poses

H = W = 64
# Monodepth2's KITTI intrinsics (normalised) at 64x64.
K = torch.tensor([[0.58 * W, 0.0, 0.5 * W], [0.0, 1.92 * H, 0.5 * H], [0.0, 0.0, 1.0]])


def _scene(shift: int, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """A textured fronto-parallel plane seen by a camera moving sideways: sources are the target shifted by -/+ shift columns."""
    g = torch.Generator().manual_seed(seed)
    texture = torch.rand(1, 3, H // 4, (W + 32) // 4, generator=g)
    base = F.interpolate(texture, size=(H, W + 32), mode="bilinear", align_corners=False)

    def crop(k: int) -> torch.Tensor:
        return base[:, :, :, 16 + k:16 + k + W].expand(batch, 3, H, W).contiguous()

    return crop(0), {-1: crop(-shift), 1: crop(shift)}


def _disp_for_depth(depth: float, min_depth: float = 0.1, max_depth: float = 100.0) -> float:
    return (1 / depth - 1 / max_depth) / (1 / min_depth - 1 / max_depth)


def test_ssim_of_identical_images_is_zero_loss():
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    ssim = SSIM()
    assert ssim(x, x).abs().max() < 1e-6
    assert ssim(x, y).mean() > 0.2 and 0 <= ssim(x, y).min() and ssim(x, y).max() <= 1
    assert reprojection_loss(x, x, ssim).abs().max() < 1e-6
    torch.testing.assert_close(reprojection_loss(x, y, ssim, ssim_weight=0), (x - y).abs().mean(1, keepdim=True))
    expected = 0.85 * ssim(x, y).mean(1, keepdim=True) + 0.15 * (x - y).abs().mean(1, keepdim=True)
    torch.testing.assert_close(reprojection_loss(x, y, ssim), expected)


def test_min_reprojection_and_automask_choose_per_pixel():
    reprojection = torch.tensor([[[[0.5, 0.1]], [[0.2, 0.3]]]])  # (1, 2 sources, 1, 2)
    identity = torch.tensor([[[[0.1, 0.9]], [[0.9, 0.9]]]])
    loss, selected = min_reprojection_with_automask(reprojection, identity)
    torch.testing.assert_close(loss, torch.tensor([[[[0.1, 0.1]]]]), atol=1e-4, rtol=0)
    assert selected.tolist() == [[[[False, True]]]]
    loss, selected = min_reprojection_with_automask(reprojection, None)
    torch.testing.assert_close(loss, torch.tensor([[[[0.2, 0.1]]]]))
    assert selected.all()
    loss, _ = min_reprojection_with_automask(reprojection, None, average=True)
    torch.testing.assert_close(loss, torch.tensor([[[[0.35, 0.2]]]]))


def test_smoothness_of_constant_disparity_is_zero_and_edges_are_cheaper():
    image = torch.rand(1, 3, 8, 8)
    assert get_smooth_loss(mean_normalised(torch.full((1, 1, 8, 8), 0.3)), image) == 0
    step = torch.zeros(1, 1, 8, 8)
    step[..., 4:] = 1.0
    flat_image, edge_image = torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    edge_image[..., 4:] = 1.0  # the image has an edge where the disparity does
    assert get_smooth_loss(step, edge_image) < get_smooth_loss(step, flat_image)
    # Mean normalisation: scaling the disparity does not change the term.
    disp = torch.rand(1, 1, 8, 8) + 0.1
    torch.testing.assert_close(get_smooth_loss(mean_normalised(disp), image), get_smooth_loss(mean_normalised(5 * disp), image))



def test_second_order_smoothness_leaves_planes_free_and_charges_kinks():
    image = torch.zeros(1, 3, 8, 8)
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    plane = (0.2 + 0.05 * xs + 0.03 * ys)[None, None]  # a tilted wall: disparity affine in the pixel coordinates
    assert get_smooth_loss(plane, image, order=1) > 0
    torch.testing.assert_close(get_smooth_loss(plane, image, order=2), torch.tensor(0.0))
    kink = (0.2 + 0.05 * (xs - 4).abs())[None, None]  # two planes meeting along a column
    assert get_smooth_loss(kink, image, order=2) > 0
    edge_image = torch.zeros(1, 3, 8, 8)
    edge_image[..., 4:] = 1.0  # an image edge beside the kink frees it
    assert get_smooth_loss(kink, edge_image, order=2) < get_smooth_loss(kink, image, order=2)
    with pytest.raises(ValueError, match="order"):
        get_smooth_loss(plane, image, order=3)
    with pytest.raises(ValueError, match="smoothness_order"):
        Monodepth2Config(height=64, width=64, smoothness_order=3)

def test_warp_with_true_depth_and_pose_reproduces_the_target():
    shift = 4
    target, sources = _scene(shift)
    pyramid = intrinsics_pyramid(K, (H, W), (H, W), [0])
    depth = float(K[0, 0]) * 1.0 / shift  # a sideways step of 1 unit moves the plane by fx * 1 / depth = shift pixels
    disps = {("disp", s): torch.full((2, 1, H // 2**s, W // 2**s), _disp_for_depth(depth)) for s in range(4)}
    # Source +1 sees the plane shifted left: target(u) = source(u - shift), i.e. X_source = X_target - (1, 0, 0).
    poses = {o: get_translation_matrix(torch.tensor([[-float(o), 0.0, 0.0]])).expand(2, 4, 4) for o in (-1, 1)}
    warped = warp_sources(disps, sources, poses, *pyramid[0])
    assert sorted(warped) == [(o, s) for o in (-1, 1) for s in range(4)]
    for (offset, _), image in warped.items():
        torch.testing.assert_close(image[..., shift:W - shift], target[..., shift:W - shift], atol=1e-3, rtol=0)
        assert (image - target).abs().mean() < 0.25 * (sources[offset] - target).abs().mean()


def test_automask_lets_identity_win_in_a_static_scene():
    target = _scene(0)[0]
    sources = {-1: target.clone(), 1: target.clone()}  # camera did not move
    c = Monodepth2Config.tiny()
    loss = Monodepth2Loss.from_config(c)
    disps = {("disp", s): torch.full((2, 1, H // 2**s, W // 2**s), 0.2) for s in range(4)}
    moving = {o: get_translation_matrix(torch.tensor([[0.3 * o, 0.0, 0.0]])).expand(2, 4, 4) for o in (-1, 1)}
    result = loss(target, sources, disps, moving, *intrinsics_pyramid(K, (H, W), (H, W), [0])[0])
    assert result.warp_selected_fraction < 0.05
    assert result.loss < 1e-3  # identity error ~ 0 plus noise and a tiny smoothness term
    moving_sources = _scene(4)[1]
    result = loss(target, moving_sources, disps, moving, *intrinsics_pyramid(K, (H, W), (H, W), [0])[0])
    assert result.warp_selected_fraction > 0.1


def test_full_loss_decreases_on_a_toy_sequence():
    torch.manual_seed(0)
    c = Monodepth2Config.tiny()
    target, sources = _scene(2)
    K_full, inv_K = intrinsics_pyramid(K, (H, W), (H, W), [0])[0]
    depth_net, pose_net, criterion = DepthNet.from_config(c), PoseNet.from_config(c), Monodepth2Loss.from_config(c)
    optimiser = torch.optim.Adam([*depth_net.parameters(), *pose_net.parameters()], lr=c.learning_rate)
    losses = []
    for _ in range(8):
        result = criterion(target, sources, depth_net(target), predict_poses(pose_net, target, sources), K_full, inv_K)
        optimiser.zero_grad()
        result.loss.backward()
        optimiser.step()
        losses.append(result.loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.6 * losses[0], losses
    assert set(result.per_scale) == {0, 1, 2, 3} and set(result.smoothness) == {0, 1, 2, 3}


def test_loss_rejects_missing_frames_intrinsics_and_bad_shapes():
    c = Monodepth2Config.tiny()
    loss = Monodepth2Loss.from_config(c)
    target, sources = _scene(2)
    disps = {("disp", s): torch.full((2, 1, H // 2**s, W // 2**s), 0.2) for s in range(4)}
    poses = {o: torch.eye(4).expand(2, 4, 4) for o in (-1, 1)}
    K_full, inv_K = intrinsics_pyramid(K, (H, W), (H, W), [0])[0]
    with pytest.raises(ValueError, match=r"source frame \+1 is missing"):
        loss(target, {-1: sources[-1], 1: None}, disps, poses, K_full, inv_K)
    with pytest.raises(ValueError, match="at least one source"):
        loss(target, {}, disps, {}, K_full, inv_K)
    with pytest.raises(ValueError, match="K and inv_K"):
        loss(target, sources, disps, poses, None, None)
    with pytest.raises(ValueError, match="disparity at scale 2"):
        loss(target, sources, {k: v for k, v in disps.items() if k != ("disp", 2)}, poses, K_full, inv_K)
    with pytest.raises(ValueError, match="target frame must be"):
        loss(target[..., :32], sources, disps, poses, K_full, inv_K)
    with pytest.raises(ValueError, match="poses for offsets"):
        loss(target, sources, disps, {-1: poses[-1]}, K_full, inv_K)


def test_ssim_box_mean_equals_avgpool():
    x = torch.rand(2, 3, 17, 23)
    torch.testing.assert_close(SSIM.pool(x), torch.nn.AvgPool2d(3, 1)(x), rtol=0, atol=1e-6)


def test_v1_multiscale_warps_each_scale_at_its_own_resolution():
    """With the true depth and pose every scale reproduces its own-resolution target; at scale 0 it is the default loss."""
    shift = 4
    target, sources = _scene(shift)
    depth = float(K[0, 0]) * 1.0 / shift
    disps = {("disp", s): torch.full((2, 1, H // 2**s, W // 2**s), _disp_for_depth(depth)) for s in range(4)}
    poses = {o: get_translation_matrix(torch.tensor([[-float(o), 0.0, 0.0]])).expand(2, 4, 4) for o in (-1, 1)}
    K4, inv_K4 = intrinsics_pyramid(K, (H, W), (H, W), [0])[0]
    v1 = Monodepth2Loss(H, W, automask=False, v1_multiscale=True)
    v2 = Monodepth2Loss(H, W, automask=False)
    r1, r2 = v1(target, sources, disps, poses, K4, inv_K4), v2(target, sources, disps, poses, K4, inv_K4)
    for s in range(4):
        image = r1.warped[(1, s)]
        assert image.shape[-2:] == (H // 2**s, W // 2**s)
        if s == 3:  # 8x8: finer than the texture's own detail, area averages of shifted pixels no longer match
            continue
        small = F.interpolate(target, image.shape[-2:], mode="area")
        m = max(1, shift // 2**s + 1)
        assert (image - small)[..., m:-m].abs().mean() < 0.25 * (F.interpolate(sources[1], image.shape[-2:], mode="area")
                                                                  - small)[..., m:-m].abs().mean()
    torch.testing.assert_close(r1.per_scale[0], r2.per_scale[0])
    # A wrong pose (no motion) costs more at every scale than the true one.
    still = {o: torch.eye(4).expand(2, 4, 4) for o in (-1, 1)}
    r0 = v1(target, sources, disps, still, K4, inv_K4)
    assert all(r0.per_scale[s] > r1.per_scale[s] for s in range(4))


def test_excluded_pixels_get_no_photometric_gradient():
    """exclude (moving objects a label supervises) takes pixels out of the photometric mean; none excluded = the default."""
    target, sources = _scene(2)
    K4, inv_K4 = intrinsics_pyramid(K, (H, W), (H, W), [0])[0]
    poses = {o: get_translation_matrix(torch.tensor([[-float(o), 0.0, 0.0]])).expand(2, 4, 4) for o in (-1, 1)}
    loss = Monodepth2Loss(H, W, scales=[0], automask=False, disparity_smoothness=0.0)
    disp = torch.full((2, 1, H, W), 0.05, requires_grad=True)
    none = torch.zeros(2, 1, H, W, dtype=torch.bool)
    plain = loss(target, sources, {("disp", 0): disp}, poses, K4, inv_K4).loss
    torch.testing.assert_close(loss(target, sources, {("disp", 0): disp}, poses, K4, inv_K4, none).loss, plain)
    left = none.clone()
    left[..., : W // 2] = True
    loss(target, sources, {("disp", 0): disp}, poses, K4, inv_K4, left).loss.backward()
    grad = disp.grad.abs()
    assert grad[..., : W // 2 - 2].max() == 0 and grad[..., W // 2 + 2:].sum() > 0  # (SSIM's 3x3 window at the edge)
    with pytest.raises(ValueError, match="exclude must be"):
        loss(target, sources, {("disp", 0): disp}, poses, K4, inv_K4, left[:, :, :8])
