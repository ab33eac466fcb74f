"""apply_attractor_alpha: ZoeDepth's behaviour by default, the configured alpha as an option, old checkpoints unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from avs_depth_core.models.avsnet import AVSNet, AVSNetConfig

CONFIG_DIR = Path(__file__).resolve().parents[4] / "config"


def tiny_config(**overrides) -> AVSNetConfig:
    return AVSNetConfig.from_yaml(CONFIG_DIR / "avsnet_tiny.yaml", {"use_echo": False, **overrides})


def depth(model: AVSNet, rgb: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(rgb)["metric_depth"]


def test_new_configs_use_zoedepths_attractors():
    assert AVSNetConfig().apply_attractor_alpha is False
    for name in ("bv1", "bv2", "tiny", "bundled"):
        cfg = AVSNetConfig.from_yaml(CONFIG_DIR / f"avsnet_{name}.yaml")
        assert cfg.apply_attractor_alpha is False and cfg.attractor_alpha == 1000.0
    model = AVSNet(tiny_config())
    assert all(layer.apply_alpha is False for layer in model.head.attractors)
    assert all(layer.apply_alpha is True for layer in AVSNet(tiny_config(apply_attractor_alpha=True)).head.attractors)


def test_gamma_other_than_two_needs_the_option():
    with pytest.raises(ValueError, match="attractor_gamma: 3 has no effect unless apply_attractor_alpha"):
        tiny_config(attractor_gamma=3)
    assert tiny_config(attractor_gamma=3, apply_attractor_alpha=True).attractor_gamma == 3


def test_checkpoint_without_the_key_keeps_the_configured_alpha(tmp_path):
    torch.manual_seed(0)
    old = AVSNet(tiny_config(apply_attractor_alpha=True))  # what every checkpoint saved before the key was
    rgb = torch.rand(2, 3, *old.cfg.image_size)
    expected = depth(old, rgb)
    old.save(tmp_path / "old")
    stored = json.loads((tmp_path / "old.json").read_text())
    del stored["config"]["apply_attractor_alpha"]
    (tmp_path / "old.json").write_text(json.dumps(stored))
    loaded = AVSNet.from_checkpoint(tmp_path / "old")
    assert loaded.cfg.apply_attractor_alpha is True
    assert torch.equal(depth(loaded, rgb), expected)
    # the same weights under ZoeDepth's behaviour give another depth: the key is what keeps old outputs
    zoedepth = AVSNet(tiny_config())
    zoedepth.load_state_dict(old.state_dict())
    assert (depth(zoedepth, rgb) - expected).abs().max() > 1e-3


def test_new_checkpoints_record_the_key(tmp_path):
    torch.manual_seed(0)
    model = AVSNet(tiny_config())
    rgb = torch.rand(1, 3, *model.cfg.image_size)
    model.save(tmp_path / "new")
    assert json.loads((tmp_path / "new.json").read_text())["config"]["apply_attractor_alpha"] is False
    loaded = AVSNet.from_checkpoint(tmp_path / "new")
    assert loaded.cfg.apply_attractor_alpha is False and torch.equal(depth(loaded, rgb), depth(model, rgb))


@pytest.mark.parametrize("kind", ["avsnet", "avsnet_rgb"])
def test_bundled_checkpoints_load_as_they_were_trained(kind):
    path = Path(__file__).resolve().parents[4] / "avs_depth_core" / "checkpoints" / kind / "default"
    stored = json.loads(path.with_suffix(".json").read_text())["config"]
    model = AVSNet.from_checkpoint(path)
    assert model.cfg.apply_attractor_alpha is stored.get("apply_attractor_alpha", True)
    assert all(layer.apply_alpha is model.cfg.apply_attractor_alpha for layer in model.head.attractors)
