"""EchoRescaleHead (TR2M-style pixel-wise rescale maps): shapes, positivity, the start at the global scale, the fitted
anchor, the loss terms (pseudo-label acceptance, contrast, smoothness) and checkpoint round trips."""

from __future__ import annotations

import pytest
import torch

from avs_depth_core.losses.rescale import (
    depth_classes,
    edge_smoothness,
    image_contrast,
    pixel_contrast,
    pseudo_labels,
)
from avs_depth_core.models.rescale_head import EchoRescaleHead, RescaleHeadConfig, normalised_disparity
from avs_depth_core.rescale import global_disparity_scale


def small_cfg(**overrides) -> RescaleHeadConfig:
    values = dict(image_channels=12, echo_channels=20, echo_tokens=5, dim=16, heads=2, trunk_channels=(12, 8),
                  mid_channels=8)
    return RescaleHeadConfig(**{**values, **overrides})


def inputs(b: int = 2, h: int = 32, w: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    relative = torch.rand(b, 1, h, w, generator=g) * 5 + 1
    return {"image_features": torch.randn(b, 12, h // 8, w // 8, generator=g),
            "echo_tokens": torch.randn(b, 5, 20, generator=g),
            "rel_disparity": normalised_disparity(relative, "depth"), "global_scale": torch.tensor([0.3, 0.1])[:b]}


@pytest.mark.parametrize("b", [1, 2])
@pytest.mark.parametrize("form", ["disparity", "depth"])
def test_shapes_positive_maps_and_finite_depth(b, form):
    torch.manual_seed(0)
    head = EchoRescaleHead(small_cfg(form=form, guidance=["relative", "pseudo_metric"]))
    x = inputs(b)
    out = head(**x, pseudo_metric_log=torch.zeros(b, 1, 32, 64))
    for key in ("metric_depth", "scale_map", "shift_map"):
        assert out[key].shape == (b, 1, 32, 64)
    assert (out["scale_map"] > 0).all() and (out["shift_map"] > 0).all()
    assert torch.isfinite(out["metric_depth"]).all() and (out["metric_depth"] > 0).all()
    assert out["embedding"].shape == (b, 16)


@pytest.mark.parametrize("form", ["disparity", "depth"])
def test_starts_at_the_global_median_scaling(form):
    """Zero-initialised last layers: at step 0 the head reproduces R * median(Mp) / median(R) (up to coef_shift)."""
    torch.manual_seed(0)
    head = EchoRescaleHead(small_cfg(form=form, coef_shift=1e-6))
    relative = torch.rand(2, 1, 32, 64) * 5 + 1
    mp = relative * torch.tensor([2.0, 0.5]).view(2, 1, 1, 1) * (1 + 0.1 * torch.randn(2, 1, 32, 64)).clamp(0.5, 1.5)
    r = normalised_disparity(relative, "depth")
    k = global_disparity_scale(r, mp, 1e-3, 100.0)
    x = inputs(2)
    out = head(x["image_features"], x["echo_tokens"], r, k)
    expected = relative * torch.stack([mp[i].median() / relative[i].median() for i in range(2)]).view(2, 1, 1, 1)
    assert torch.allclose(out["metric_depth"], expected, rtol=2e-3)


def test_fitted_anchor_and_echo_free_head():
    head = EchoRescaleHead(small_cfg(use_echo=False, anchor="fitted", coef_scale=0.25, coef_shift=1e-6))
    x = inputs(1)
    out = head(x["image_features"], None, x["rel_disparity"])
    assert torch.allclose(out["metric_depth"], 1 / (0.25 * x["rel_disparity"]), rtol=1e-3)
    with pytest.raises(ValueError, match="without echoes"):
        head(x["image_features"], x["echo_tokens"], x["rel_disparity"])


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="model.form"):
        small_cfg(form="log")
    with pytest.raises(ValueError, match="pseudo_metric"):
        small_cfg(use_echo=False, guidance=["pseudo_metric"])
    with pytest.raises(ValueError, match="echo tokens"):
        EchoRescaleHead(small_cfg())(inputs(1)["image_features"], torch.zeros(1, 3, 20), inputs(1)["rel_disparity"],
                                     torch.ones(1))


def test_pseudo_labels_accept_by_delta1():
    """An R that is exactly affine in 1/gt gives delta1 1 (accepted at rho 0.9); a shuffled one does not."""
    gt = torch.linspace(1.0, 8.0, 32 * 64).view(1, 1, 32, 64)
    good = 3.0 / gt - 0.05
    bad = good.flatten()[torch.randperm(good.numel(), generator=torch.Generator().manual_seed(0))].view_as(good)
    r = normalised_disparity(torch.cat([1 / good, 1 / bad]), "depth")
    gts = torch.cat([gt, gt])
    pseudo, alpha, _, delta1 = pseudo_labels(r, gts, gts > 0, 1e-3, 12.0)
    assert delta1[0] > 0.99 and delta1[1] < 0.9
    assert torch.allclose(pseudo[0], gt[0], rtol=1e-3)
    assert alpha[0] > 0


def test_pseudo_labels_have_no_fit_on_a_flat_wall():
    """One depth per image leaves the slope at rounding noise (its sign varies by machine): no fit, not a 1e-16 one."""
    r = 1.0 + 0.01 * torch.randn(4, 1, 32, 64, generator=torch.Generator().manual_seed(0))
    gt = torch.tensor([1.5, 2.0, 3.0, 4.0]).view(4, 1, 1, 1).expand(4, 1, 32, 64).clone()
    _, alpha, beta, delta1 = pseudo_labels(r, gt, gt > 0, 1e-3, 12.0)
    assert alpha.isnan().all() and beta.isnan().all() and (delta1 == 0).all()


def test_image_contrast_prefers_embeddings_ordered_by_scale():
    scale = torch.tensor([1.0, 1.1, 5.0, 5.2, 9.0, 9.5, 20.0, 21.0])
    ordered = torch.stack([torch.cos(scale / 7), torch.sin(scale / 7)], 1)
    shuffled = ordered[torch.tensor([6, 2, 0, 7, 3, 5, 1, 4])]
    assert image_contrast(ordered, scale, 0.1, 2) < image_contrast(shuffled, scale, 0.1, 2)


def test_pixel_contrast_prefers_features_grouped_by_depth_class():
    depth = torch.linspace(0.5, 9.5, 16).repeat(8, 1).view(1, 1, 8, 16)
    classes = depth_classes(depth, 4, 0.0, 10.0).float()
    grouped = torch.cat([torch.cos(classes), torch.sin(classes)], 1)
    noise = torch.randn(1, 2, 8, 16, generator=torch.Generator().manual_seed(0))
    good = pixel_contrast(grouped, grouped, depth, 4, 0.0, 10.0, 64, 0.1, torch.Generator().manual_seed(0))
    bad = pixel_contrast(noise, noise, depth, 4, 0.0, 10.0, 64, 0.1, torch.Generator().manual_seed(0))
    assert good < bad


def test_edge_smoothness_is_zero_for_constant_maps_and_weighted_by_edges():
    image = torch.zeros(1, 3, 8, 8)
    assert edge_smoothness(torch.ones(1, 1, 8, 8), image) == 0
    ramp = torch.arange(8.0).expand(1, 1, 8, 8)
    edged = image.clone()
    edged[..., 4:] = 1.0
    assert edge_smoothness(ramp, edged) < edge_smoothness(ramp, image)


def test_checkpoint_round_trip_and_wrong_kind(tmp_path):
    torch.manual_seed(0)
    head = EchoRescaleHead(small_cfg())
    path = head.save(tmp_path / "head", {"relative": "avsnet_rgb", "relative_checkpoint": "r"})
    loaded, frontend = EchoRescaleHead.from_checkpoint(path)
    assert frontend["relative_checkpoint"] == "r"
    x = inputs(2)
    assert torch.equal(loaded(**x)["metric_depth"], head.eval()(**x)["metric_depth"])
    from avs_depth_core.checkpoint import save_checkpoint

    other = save_checkpoint(tmp_path / "other", {"w": torch.zeros(1)}, {}, "avsnet")
    with pytest.raises(ValueError, match="expected 'echo_rescale_head'"):
        EchoRescaleHead.from_checkpoint(other)
