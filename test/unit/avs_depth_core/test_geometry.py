import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from avs_depth_core.geometry import (
    BackprojectDepth,
    Project3D,
    as_homogeneous_intrinsics,
    get_translation_matrix,
    intrinsics_pyramid,
    rot_from_axisangle,
    scale_intrinsics,
    transformation_from_parameters,
    warp_image,
)

H, W = 12, 16
K3 = torch.tensor([[10.0, 0.0, 7.5], [0.0, 11.0, 5.5], [0.0, 0.0, 1.0]])


def _grid(batch: int = 2) -> torch.Tensor:
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    return torch.stack([u / (W - 1), v / (H - 1)], -1).sub(0.5).mul(2).expand(batch, H, W, 2)


def test_backproject_then_project_with_identity_pose_returns_the_pixel_grid():
    K = as_homogeneous_intrinsics(K3)
    depth = torch.rand(2, 1, H, W) * 10 + 0.5
    points = BackprojectDepth(H, W)(depth, torch.linalg.inv(K))
    assert points.shape == (2, 4, H * W)
    torch.testing.assert_close(points[:, 2].view(2, 1, H, W), depth)  # Z is the depth
    grid = Project3D(H, W)(points, K, torch.eye(4).expand(2, 4, 4))
    torch.testing.assert_close(grid, _grid(), atol=1e-5, rtol=0)
    image = torch.rand(2, 3, H, W)
    torch.testing.assert_close(warp_image(image, grid), image, atol=1e-5, rtol=0)


def test_known_translation_shifts_pixels_by_f_t_over_z():
    K = as_homogeneous_intrinsics(K3)
    depth = torch.full((1, 1, H, W), 5.0)
    T = get_translation_matrix(torch.tensor([[0.5, -0.25, 0.0]]))
    grid = Project3D(H, W)(BackprojectDepth(H, W)(depth, torch.linalg.inv(K)), K, T)
    pixels = (grid / 2 + 0.5) * torch.tensor([W - 1, H - 1])
    shift = pixels - (_grid(1) / 2 + 0.5) * torch.tensor([W - 1, H - 1])
    torch.testing.assert_close(shift[..., 0], torch.full((1, H, W), 10.0 * 0.5 / 5.0))
    torch.testing.assert_close(shift[..., 1], torch.full((1, H, W), 11.0 * -0.25 / 5.0))
    # Sampling an image with an integer shift of 2 columns moves its content by 2 columns.
    T2 = get_translation_matrix(torch.tensor([[1.0, 0.0, 0.0]]))
    grid2 = Project3D(H, W)(BackprojectDepth(H, W)(depth, torch.linalg.inv(K)), K, T2)
    image = torch.rand(1, 3, H, W)
    torch.testing.assert_close(warp_image(image, grid2)[..., : W - 2], image[..., 2:], atol=1e-5, rtol=0)


def test_rot_from_axisangle_matches_rodrigues_of_scipy():
    vecs = torch.tensor([[0.3, -0.2, 0.9], [0.0, 0.0, 1e-3], [-2.0, 1.0, 0.5], [0.0, 0.0, 0.0]])
    rot = rot_from_axisangle(vecs[:, None])
    assert rot.shape == (4, 4, 4)
    expected = Rotation.from_rotvec(vecs.double().numpy()).as_matrix()
    np.testing.assert_allclose(rot[:, :3, :3].numpy(), expected, atol=1e-5)
    assert torch.all(rot[:, 3] == torch.tensor([0.0, 0.0, 0.0, 1.0]))
    assert torch.all(rot[:, :3, 3] == 0)


def test_transformation_from_parameters_and_its_inverse():
    aa, t = torch.tensor([[[0.1, 0.2, -0.3]]]), torch.tensor([[[0.5, -1.0, 2.0]]])
    M = transformation_from_parameters(aa, t)
    expected = np.eye(4)
    expected[:3, :3] = Rotation.from_rotvec([0.1, 0.2, -0.3]).as_matrix()
    expected[:3, 3] = [0.5, -1.0, 2.0]
    np.testing.assert_allclose(M[0].numpy(), expected, atol=1e-6)
    inverse = transformation_from_parameters(aa, t, invert=True)
    torch.testing.assert_close(inverse @ M, torch.eye(4)[None], atol=1e-6, rtol=0)


def test_scale_intrinsics_and_pyramid():
    # 12x16 -> 6x32: x2 across, x0.5 down; pixel centres map as u' = (u + 0.5) * 2 - 0.5, v' = (v + 0.5) * 0.5 - 0.5.
    scaled = scale_intrinsics(K3, (12, 16), (6, 32))
    torch.testing.assert_close(scaled, torch.tensor([[20.0, 0.0, 15.5], [0.0, 5.5, 2.5], [0.0, 0.0, 1.0]]))
    # A point projecting to the centre of pixel (u, v) projects to the centre of the pixel it lands in after the resize.
    point = torch.tensor([0.3, -0.2, 2.0])
    u, v = (K3 @ point / point[2])[:2]
    u2, v2 = (scaled @ point / point[2])[:2]
    torch.testing.assert_close(torch.stack([u2, v2]), torch.stack([(u + 0.5) * 2 - 0.5, (v + 0.5) * 0.5 - 0.5]))
    as_numpy = scale_intrinsics(K3.numpy(), (12, 16), (6, 32))
    assert isinstance(as_numpy, np.ndarray)
    np.testing.assert_allclose(as_numpy, scaled.numpy())
    batched = scale_intrinsics(as_homogeneous_intrinsics(K3).expand(3, 4, 4), (12, 16), (24, 32))
    assert batched.shape == (3, 4, 4) and batched[0, 3, 3] == 1 and batched[1, 0, 0] == 20
    # Camera image 480x640 feeding a 192x640 network: scale s is (192 // 2^s, 640 // 2^s).
    Kcam = torch.tensor([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
    pyramid = intrinsics_pyramid(Kcam, (480, 640), (192, 640), [0, 1, 2, 3])
    for s, (K_s, inv_K_s) in pyramid.items():
        assert K_s.shape == (4, 4)
        torch.testing.assert_close(K_s[0, 0], torch.tensor(500.0 / 2**s))
        torch.testing.assert_close(K_s[1, 1], torch.tensor(500.0 * 192 / 480 / 2**s))
        torch.testing.assert_close(K_s @ inv_K_s, torch.eye(4), atol=1e-5, rtol=0)


def test_missing_or_bad_intrinsics_are_rejected():
    with pytest.raises(ValueError, match="intrinsics are missing.*CameraInfo"):
        intrinsics_pyramid(None, (480, 640), (192, 640), [0], source="bag.mcap camera/color/camera_info")
    with pytest.raises(ValueError, match="focal lengths must be positive"):
        intrinsics_pyramid(torch.zeros(3, 3), (480, 640), (192, 640), [0])
    with pytest.raises(ValueError, match="NaN"):
        intrinsics_pyramid(torch.full((3, 3), float("nan")), (480, 640), (192, 640), [0])
    with pytest.raises(ValueError, match="3x3 or 4x4"):
        intrinsics_pyramid(torch.eye(2), (480, 640), (192, 640), [0])
    with pytest.raises(ValueError, match="BackprojectDepth built for"):
        BackprojectDepth(H, W)(torch.ones(1, 1, H + 1, W), torch.eye(4))
