"""Augmentation that keeps the geometry: flip with the ears swapped, scene scale with the echo delays, echo gain and noise."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from avs_depth_core.audio.features import pack_range_profile, unpack_range_profile
from avs_depth_core.models.avsnet import mirror_inputs
from avs_depth_core.train.echo_augment import EchoAugment, augment_batch, shift_log_range, stretch_time

CFG = SimpleNamespace(use_echo=True, echo_range_profile=True, range_bins=64, stft_log=False, range_log=True,
                      range_spacing="linear", range_min=0.15, max_depth=8.0)


def batch(b: int = 4) -> dict[str, torch.Tensor]:
    rgb = torch.rand(b, 3, 8, 16)
    depth = torch.linspace(1, 4, 16).expand(b, 1, 8, 16).clone()
    stft = torch.rand(b, 2, 8, 32)
    stft[:, 1] += 5.0  # the right ear is louder: a swap is visible
    profile = torch.zeros(b, 2, 64)
    profile[:, :, 16] = 1.0  # one arrival at bin 16
    planes = torch.stack([pack_range_profile(p, (8, 32)) for p in profile])
    return {"rgb": rgb, "depth": depth, "echo": torch.cat([stft, planes], dim=1)}


def test_flip_mirrors_image_and_depth_and_swaps_the_ears():
    torch.manual_seed(0)
    x = batch()
    y = augment_batch(x, EchoAugment(flip=1.0), CFG)
    assert torch.equal(y["rgb"], x["rgb"].flip(-1)) and torch.equal(y["depth"], x["depth"].flip(-1))
    assert torch.equal(y["echo"][:, 0], x["echo"][:, 1]) and torch.equal(y["echo"][:, 3], x["echo"][:, 2])
    assert augment_batch(x, EchoAugment(), CFG) is x  # nothing active: the batch as it was


def test_scale_multiplies_depth_and_delays_the_arrivals():
    torch.manual_seed(1)
    x = batch()
    y = augment_batch(x, EchoAugment(scale=2.0), CFG)
    s = y["depth"][:, 0, 0, 0] / x["depth"][:, 0, 0, 0]
    assert torch.all((s >= 0.5 - 1e-6) & (s <= 2.0 + 1e-6)) and s.std() > 0  # each sample its own factor
    profile = unpack_range_profile(y["echo"][:, 2:], 64)
    peak = profile[:, 0].argmax(dim=1).float()
    # the arrival at bin 16 (range 16.5 / 64 of max_depth, bin centres) moves to s times its range
    assert torch.allclose(peak, (16.5 * s - 0.5).round(), atol=1.0)
    assert torch.equal(y["rgb"], x["rgb"])  # the image of a scaled scene is the same


def test_stretch_time_is_identity_at_scale_one_and_delays_otherwise():
    x = torch.zeros(1, 1, 2, 40)
    x[..., 10] = 1.0
    assert torch.allclose(stretch_time(x, torch.tensor([1.0])), x, atol=1e-6)
    assert int(stretch_time(x, torch.tensor([2.0]))[0, 0, 0].argmax()) in (20, 21)


def test_scale_shifts_a_log_spaced_range_profile():
    """range_spacing log: the scene scaled by s moves an arrival by log(s) / (log span / bins) bins (a shift, no stretch)."""
    cfg = SimpleNamespace(**{**vars(CFG), "range_spacing": "log", "range_min": 0.25})
    torch.manual_seed(3)
    x = batch()
    y = augment_batch(x, EchoAugment(scale=2.0), cfg)
    s = y["depth"][:, 0, 0, 0] / x["depth"][:, 0, 0, 0]
    peak = unpack_range_profile(y["echo"][:, 2:], 64)[:, 0].argmax(dim=1).float()
    bins_per_neper = 64 / math.log(8.0 / 0.25)
    assert torch.allclose(peak, (16 + torch.log(s) * bins_per_neper).round(), atol=1.0)
    one = torch.zeros(1, 1, 1, 40)
    one[..., 10] = 1.0
    assert torch.allclose(shift_log_range(one, torch.tensor([1.0]), 2.0), one, atol=1e-6)
    assert int(shift_log_range(one, torch.tensor([math.e]), 2.0)[0, 0, 0].argmax()) == 30  # one neper = half the width


def test_gain_and_noise_change_only_the_stft():
    x = batch()
    torch.manual_seed(2)
    y = augment_batch(x, EchoAugment(gain_db=6.0), CFG)
    ratio = y["echo"][:, :2].flatten(1).mean(1) / x["echo"][:, :2].flatten(1).mean(1)
    assert torch.all((ratio > 10 ** (-6 / 20) - 1e-5) & (ratio < 10 ** (6 / 20) + 1e-5)) and ratio.std() > 0
    assert torch.equal(y["echo"][:, 2:], x["echo"][:, 2:])  # a log profile over its noise floor ignores the gain
    logged = SimpleNamespace(**{**vars(CFG), "stft_log": True})
    xl = dict(x, echo=torch.cat([torch.log1p(x["echo"][:, :2]), x["echo"][:, 2:]], dim=1))
    torch.manual_seed(2)
    yl = augment_batch(xl, EchoAugment(gain_db=6.0), logged)
    torch.testing.assert_close(torch.expm1(yl["echo"][:, :2]), y["echo"][:, :2], rtol=1e-4, atol=1e-5)  # gain before log1p
    z = augment_batch(x, EchoAugment(noise=0.5), CFG)
    assert not torch.equal(z["echo"][:, :2], x["echo"][:, :2]) and z["echo"][:, :2].min() >= 0


def test_bad_options_are_errors():
    for kwargs in ({"flip": 1.5}, {"scale": 0.5}, {"gain_db": -1.0}, {"noise": -0.1}):
        with pytest.raises(ValueError, match="train.aug_"):
            EchoAugment(**kwargs)
    assert not EchoAugment(scale=1.0).active and EchoAugment(scale=math.e).active


def test_mirror_inputs_flips_the_image_and_swaps_the_ears():
    x = batch()
    rgb, echo = mirror_inputs(x["rgb"], x["echo"])
    assert torch.equal(rgb, x["rgb"].flip(-1)) and torch.equal(echo[:, [1, 0, 3, 2]], x["echo"])
    assert torch.equal(mirror_inputs(x["rgb"], x["echo"][:, :2])[1], x["echo"][:, [1, 0]])
    assert mirror_inputs(x["rgb"], None)[1] is None
