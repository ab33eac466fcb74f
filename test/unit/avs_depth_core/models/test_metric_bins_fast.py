"""The metric-bins head's fast final stage (ConditionalLogBinomial.expected_depth) against ZoeDepth's literal one
(reference_forward): depth, probabilities, centres and gradients on the same weights, and old checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file

from avs_depth_core.inference import load_echo, load_rgb
from avs_depth_core.models.avsnet import AVSNet
from avs_depth_core.models.metric_bins import AttractorLayer, MetricBinsHead
from avs_depth_core.pipeline import bundled_checkpoint


def stressed_head(bin_centers_type: str) -> MetricBinsHead:
    """A head whose log-binomial sees temperatures down to min_temp and p from ~0 to ~1 (trained heads get there)."""
    torch.manual_seed(0)
    head = MetricBinsHead(64, [32, 16, 8, 8], n_bins=16, bin_centers_type=bin_centers_type, bin_embedding_dim=16,
                          max_depth=12.0, n_attractors=[4, 2, 2, 1])
    with torch.no_grad():
        final = head.conditional_log_binomial.mlp[2]
        final.weight.mul_(40.0)
        final.bias.copy_(torch.tensor([0.0, 0.0, -6.0, 6.0]))
    return head


def head_inputs(batch: int = 2) -> tuple:
    torch.manual_seed(1)
    return (torch.rand(batch, 32, 32, 64), torch.randn(batch, 64, 1, 2),
            [torch.randn(batch, 32, 2, 4), torch.randn(batch, 16, 4, 8), torch.randn(batch, 8, 8, 16),
             torch.randn(batch, 8, 16, 32)], torch.rand(batch, 1, 32, 64))


@pytest.mark.parametrize("bin_centers_type", ["normed", "softplus", "hybrid1", "hybrid2"])
def test_fast_final_stage_gives_the_reference_depth_and_gradients(bin_centers_type):
    head = stressed_head(bin_centers_type)
    reference = copy.deepcopy(head)
    reference.reference_forward = True
    inputs = head_inputs()
    clb = head.conditional_log_binomial
    last = torch.cat([inputs[0], inputs[3]], 1)
    p, t = clb.probability_and_temperature(clb.mlp(torch.cat([last, torch.randn(2, 16, 32, 64)], 1)))
    assert t.min() < 0.03 and p.min() < 1e-3 and p.max() > 1 - 1e-3  # the stress is real

    fast, ref = head(*inputs), reference(*inputs)
    assert (fast["metric_depth"] - ref["metric_depth"]).abs().max() < 1e-4  # metres
    torch.testing.assert_close(fast["probs"], ref["probs"], atol=1e-4, rtol=0)  # both ~2e-5 from a float64 reference
    torch.testing.assert_close(fast["bin_centers"], ref["bin_centers"])
    assert "probs" not in head(*inputs, return_probs=False)

    fast["metric_depth"].square().mean().backward()
    ref["metric_depth"].square().mean().backward()
    for (name, a), b in zip(head.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=2e-3, msg=f"gradient of {name}")


@pytest.mark.parametrize("attractor_type", ["inv", "exp"])
@pytest.mark.parametrize("alpha", [300.0, 1000.0, 1e5])
def test_order_preserving_attractors_keep_sorted_centers_sorted(attractor_type, alpha):
    # why the fast path may skip the sorts: sorted centers stay sorted under a mean of attractor shifts
    torch.manual_seed(0)
    layer = AttractorLayer(8, 32, n_attractors=8, kind="mean", attractor_type=attractor_type, alpha=alpha, gamma=2,
                           apply_alpha=True, max_depth=30.0)
    assert layer.preserves_order
    b_prev = torch.sort(torch.rand(4, 32, 6, 8), dim=1).values
    b_prev[:, 5:9] = b_prev[:, 5:6]  # ties
    for _ in range(5):
        attractors = torch.rand(4, 8, 6, 8)
        shifted = b_prev + layer.shift(attractors, b_prev)
        assert shifted.diff(dim=1).min() >= -1e-6
    unsorted, sorted_ = layer(torch.randn(4, 8, 6, 8), b_prev, sort=False), layer(torch.randn(4, 8, 6, 8), b_prev)
    assert unsorted[1].shape == sorted_[1].shape
    # a sum over several attractors can reorder: the head then keeps its sorts
    assert not AttractorLayer(8, 32, n_attractors=4, kind="sum").preserves_order
    assert AttractorLayer(8, 32, n_attractors=1, kind="sum").preserves_order
    assert not AttractorLayer(8, 32, kind="mean", attractor_type="inv", gamma=3, apply_alpha=True).preserves_order
    sum_head = MetricBinsHead(64, [32, 16, 8, 8], bin_centers_type="normed", attractor_kind="sum", n_attractors=[4, 2, 2, 1])
    assert not sum_head.sorts_are_no_ops and stressed_head("normed").sorts_are_no_ops
    assert not stressed_head("hybrid2").sorts_are_no_ops  # unnormed seed bins are not sorted


def test_bundled_checkpoint_loads_unchanged_and_gives_the_same_depth_on_the_batvision_sample(bv2_sample):
    path = bundled_checkpoint("avsnet")
    model = AVSNet.from_checkpoint(path)  # strict: the fast stage adds no stored tensors
    assert set(model.state_dict()) == set(load_file(str(path)))
    reference = copy.deepcopy(model)
    reference.head.reference_forward = True
    rgb = model.image_input(load_rgb(bv2_sample / "camera_47.jpeg"))[0]
    echo = model.echo_input(load_echo(bv2_sample / "audio_47.wav", model.cfg.sample_rate), model.cfg.sample_rate)
    with torch.inference_mode():
        fast, ref = model(rgb, echo)["metric_depth"], reference(rgb, echo)["metric_depth"]
    assert (fast - ref).abs().max() < 1e-4
