"""The metric-bins head's fast final stage (ConditionalLogBinomial.expected_depth) against ZoeDepth's literal one
(reference_final_stage): depth, probabilities, centres and gradients on the same weights, and old checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file

from avs_depth_core.inference import load_echo, load_rgb
from avs_depth_core.models.avsnet import AVSNet
from avs_depth_core.models.metric_bins import MetricBinsHead
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
    reference.reference_final_stage = True
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


def test_bundled_checkpoint_loads_unchanged_and_gives_the_same_depth_on_the_batvision_sample(bv2_sample):
    path = bundled_checkpoint("avsnet")
    model = AVSNet.from_checkpoint(path)  # strict: the fast stage adds no stored tensors
    assert set(model.state_dict()) == set(load_file(str(path)))
    reference = copy.deepcopy(model)
    reference.head.reference_final_stage = True
    rgb = model.image_input(load_rgb(bv2_sample / "camera_47.jpeg"))[0]
    echo = model.echo_input(load_echo(bv2_sample / "audio_47.wav", model.cfg.sample_rate), model.cfg.sample_rate)
    with torch.inference_mode():
        fast, ref = model(rgb, echo)["metric_depth"], reference(rgb, echo)["metric_depth"]
    assert (fast - ref).abs().max() < 1e-4
