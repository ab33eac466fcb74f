"""The metrics' resize is the inverse of the data path's: a perfect network-size depth comes back closest to the truth."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from avs_depth_core.data.batvision import load_depth_m
from avs_depth_core.metrics import compute_depth_metrics, resize_prediction


def test_resize_prediction_inverts_the_network_input_resize(bv2_sample):
    gt = torch.from_numpy(load_depth_m(bv2_sample / "depth_47.npy")).float()[None, None]  # 720x1280, metres
    filled = torch.where(gt > 0, gt, gt[gt > 0].median())
    # the ground truth at the network's size as the data path resizes images (cache.resize_rgb): a perfect prediction
    perfect = F.interpolate(filled, size=(64, 128), mode="bilinear", align_corners=False, antialias=True)
    ours, _ = compute_depth_metrics(perfect, gt, 1e-3, 30.0)  # resize_prediction: align_corners=False
    corners, _ = compute_depth_metrics(F.interpolate(perfect, size=gt.shape[-2:], mode="bilinear", align_corners=True),
                                       gt, 1e-3, 30.0)  # ZoeDepth's compute_metrics resize
    assert ours["rmse"] < 0.85 * corners["rmse"] and ours["abs_rel"] < corners["abs_rel"]
    assert resize_prediction(perfect, (64, 128)) is perfect
