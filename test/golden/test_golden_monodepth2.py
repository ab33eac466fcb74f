"""The package against outputs of Monodepth2's own code (fixtures/monodepth2.*): decoders, geometry, the loss, the metrics."""

from __future__ import annotations

import pytest
import torch

from avs_depth_core.geometry import BackprojectDepth, Project3D, transformation_from_parameters
from avs_depth_core.losses.photometric import Monodepth2Loss
from avs_depth_core.metrics import per_image_depth_metrics
from avs_depth_core.models.monodepth2 import DepthDecoder, PoseDecoder, disp_to_depth


def test_depth_decoder_matches_monodepth2(monodepth2_golden):
    g = monodepth2_golden
    decoder = DepthDecoder(g.case("depth_decoder")["num_ch_enc"], scales=(0, 1, 2, 3))  # released names and widths
    decoder.load_state_dict(g.weights("depth_decoder"), strict=True)
    with torch.no_grad():
        disps = decoder.eval()([g[f"depth_decoder/in/feature{i}"] for i in range(5)])
    for s in range(4):
        torch.testing.assert_close(disps[("disp", s)], g[f"depth_decoder/disp{s}"], rtol=0, atol=1e-6)


def test_pose_decoder_matches_monodepth2(monodepth2_golden):
    g = monodepth2_golden
    decoder = PoseDecoder(g.case("pose_decoder")["num_ch_enc"], frames_to_predict=2)
    decoder.load_state_dict(g.weights("pose_decoder"), strict=True)
    with torch.no_grad():
        axisangle, translation = decoder.eval()(g["pose_decoder/in/feature"])
    torch.testing.assert_close(axisangle, g["pose_decoder/axisangle"], rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(translation, g["pose_decoder/translation"], rtol=1e-5, atol=1e-8)


def test_geometry_matches_monodepth2(monodepth2_golden):
    g = monodepth2_golden
    scaled, depth = disp_to_depth(g["geometry/in/disp"], 0.1, 100.0)
    torch.testing.assert_close(scaled, g["geometry/disp_to_depth/scaled"], rtol=1e-6, atol=0)
    torch.testing.assert_close(depth, g["geometry/disp_to_depth/depth"], rtol=1e-6, atol=0)
    axisangle, translation = g["geometry/in/axisangle"], g["geometry/in/translation"]
    torch.testing.assert_close(transformation_from_parameters(axisangle, translation), g["geometry/transformation"],
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(transformation_from_parameters(axisangle, translation, invert=True),
                               g["geometry/transformation_inverted"], rtol=0, atol=1e-6)
    h, w = g["geometry/in/depth"].shape[-2:]
    points = BackprojectDepth(h, w)(g["geometry/in/depth"], g["geometry/in/inv_K"])
    torch.testing.assert_close(points, g["geometry/backproject"], rtol=1e-6, atol=1e-6)
    T = transformation_from_parameters(axisangle[:2], translation[:2])
    torch.testing.assert_close(Project3D(h, w)(points, g["geometry/in/K"], T), g["geometry/project"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("align_corners", [True, False])
def test_loss_matches_monodepth2(monodepth2_golden, align_corners):
    # True (the package's default, warp_align_corners): grid_sample as on torch 0.4.1, which Monodepth2 was written for and
    # which its u / (W - 1) normalisation assumes; False: the released code as it runs on torch >= 1.3 (half a pixel off at
    # the borders). Decision: keep True; the option reproduces today's upstream behaviour.
    g, opt = monodepth2_golden, monodepth2_golden.case("loss")["opt"]
    frames = {f: g[f"loss/in/frame{f:+d}"].float() / 255 for f in (0, -1, 1)}
    disps = {("disp", s): g[f"loss/in/disp{s}"] for s in range(4)}
    poses = {f: g[f"loss/in/T{f:+d}"] for f in (-1, 1)}
    criterion = Monodepth2Loss(opt["height"], opt["width"], opt["scales"], 0.85, opt["disparity_smoothness"], opt["min_depth"],
                               opt["max_depth"], automask=True, min_reprojection=True, align_corners=align_corners)
    torch.manual_seed(17)  # the same tie-breaking noise draws as upstream's run
    with torch.no_grad():
        result = criterion(frames[0], {-1: frames[-1], 1: frames[1]}, disps, poses, g["loss/in/K"], g["loss/in/inv_K"])
    name = f"align_corners_{str(align_corners).lower()}"
    torch.testing.assert_close(result.loss.reshape(1), g[f"loss/{name}/total"], rtol=1e-5, atol=0)
    torch.testing.assert_close(torch.stack([result.per_scale[s] for s in range(4)]), g[f"loss/{name}/per_scale"],
                               rtol=1e-5, atol=0)
    torch.testing.assert_close(result.warped[(-1, 0)], g[f"loss/{name}/warped-1_scale0"], rtol=0, atol=1e-5)
    selected = g[f"loss/{name}/warp_selected"].float().mean()
    assert 0.05 < selected < 0.95  # the automask has both kinds of pixel to choose between
    assert abs(float(result.warp_selected_fraction) - float(selected)) < 1e-3


def test_warp_align_corners_is_a_real_difference(monodepth2_golden):
    g = monodepth2_golden
    shift = (g["loss/align_corners_true/warped-1_scale0"] - g["loss/align_corners_false/warped-1_scale0"]).abs()
    assert shift.max() > 1e-2  # so the loss test above can tell the two apart


def test_metrics_match_monodepth2(monodepth2_golden):
    g, case = monodepth2_golden, monodepth2_golden.case("metrics")
    ours, has_valid = per_image_depth_metrics(g["metrics/in/pred"], g["metrics/in/gt"], case["min_depth"], case["max_depth"])
    assert has_valid.all()
    torch.testing.assert_close(ours[:, :7], g["metrics/per_image"], rtol=1e-5, atol=1e-7)
