"""safetensors + JSON checkpoints: round trips, AVS-Net loading, and the errors for files that do not fit."""

import json
import os
from pathlib import Path

import pytest
import torch

from avs_depth_core.checkpoint import (
    checkpoint_paths,
    load_checkpoint,
    load_checkpoint_extra,
    read_checkpoint_json,
    save_checkpoint,
)
from avs_depth_core.models.avsnet import AVSNet, AVSNetConfig

TINY = dict(backbone="tiny", image_size=(64, 128), echo_size=(64, 64), n_bins=16, bin_embedding_dim=32,
            n_attractors=[4, 2, 2, 1], fusion_heads=4, audio_width=16, max_depth=12.0)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return AVSNet(AVSNetConfig(**TINY)).eval()


def test_paths_with_or_without_suffix(tmp_path):
    for given in ("run/model", "run/model.safetensors", "run/model.json", "run/model.extra.safetensors"):
        weights, js, extra = checkpoint_paths(tmp_path / given)
        assert (weights.name, js.name, extra.name) == ("model.safetensors", "model.json", "model.extra.safetensors")
    assert checkpoint_paths("a/model.v2")[1].name == "model.v2.json"


def test_generic_round_trip(tmp_path):
    state = {"w": torch.randn(3, 4), "step": torch.tensor(7)}
    path = save_checkpoint(tmp_path / "x" / "net", state, {"a": [1, 2]}, "thing", {"epoch": 3, "data_sha256": "ab"})
    assert path == tmp_path / "x" / "net.safetensors" and path.is_file()
    loaded, config, kind, meta = load_checkpoint(tmp_path / "x" / "net")
    assert kind == "thing" and config == {"a": [1, 2]} and meta == {"epoch": 3, "data_sha256": "ab"}
    torch.testing.assert_close(loaded["w"], state["w"])
    assert loaded["step"].item() == 7
    assert load_checkpoint_extra(path) is None
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_checkpoint(tmp_path / "bad", state, {"f": object()}, "thing")


def test_avsnet_round_trip(tmp_path, tiny_model):
    tiny_model.save(tmp_path / "avs", meta={"epoch": 2, "metrics": {"abs_rel": 0.1}})
    loaded = AVSNet.from_checkpoint(tmp_path / "avs.safetensors", device="cpu")
    assert loaded.cfg == tiny_model.cfg and not loaded.training
    assert loaded.checkpoint_meta == {"epoch": 2, "metrics": {"abs_rel": 0.1}}
    rgb, echo = torch.rand(1, 3, 64, 128), torch.rand(1, 2, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(rgb, echo)["metric_depth"], tiny_model(rgb, echo)["metric_depth"])
    assert read_checkpoint_json(tmp_path / "avs")["config"]["backbone"] == "tiny"


def rewrite_config(tmp_path, name, **changes):
    js = tmp_path / f"{name}.json"
    data = json.loads(js.read_text())
    data.update({k: v for k, v in changes.items() if k == "kind"})
    data["config"].update({k: v for k, v in changes.items() if k != "kind"})
    js.write_text(json.dumps(data))


@pytest.mark.parametrize("changes, match", [
    (dict(kind="monodepth2"), "checkpoint kind is 'monodepth2', expected 'avsnet'"),
    (dict(use_echo=False), r"unexpected \['audio\."),
    (dict(n_bins=8), r"shapes \['head\."),
    (dict(colour="red"), r"unknown key\(s\) \['colour'\]"),
    (dict(n_bins="8"), "n_bins: expected int"),
])
def test_config_that_does_not_fit_the_weights(tmp_path, tiny_model, changes, match):
    tiny_model.save(tmp_path / "avs")
    rewrite_config(tmp_path, "avs", **changes)
    with pytest.raises(ValueError, match=match):
        AVSNet.from_checkpoint(tmp_path / "avs")


def test_missing_key_is_named(tmp_path, tiny_model):
    state = dict(tiny_model.state_dict())
    del state["head.conv2.weight"]
    save_checkpoint(tmp_path / "avs", state, tiny_model.cfg.to_dict(), "avsnet")
    with pytest.raises(ValueError, match=r"missing \['head.conv2.weight'\]"):
        AVSNet.from_checkpoint(tmp_path / "avs")


def test_replaced_or_absent_files(tmp_path, tiny_model):
    tiny_model.save(tmp_path / "avs")
    other = AVSNet(tiny_model.cfg)
    save_checkpoint(tmp_path / "other", other.state_dict(), {}, "avsnet")
    (tmp_path / "avs.safetensors").write_bytes((tmp_path / "other.safetensors").read_bytes())
    with pytest.raises(ValueError, match="sha256"):
        AVSNet.from_checkpoint(tmp_path / "avs")
    with pytest.raises(FileNotFoundError, match="absent.json"):
        AVSNet.from_checkpoint(tmp_path / "absent")
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(ValueError, match="format"):
        load_checkpoint(tmp_path / "junk")


def test_training_state_round_trip(tmp_path, tiny_model):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1.61e-4, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.61e-4, total_steps=10, pct_start=0.7, div_factor=1,
                                                final_div_factor=1e4, base_momentum=0.85, max_momentum=0.95)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    extra = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": {"torch": torch.get_rng_state()},
             "pair": (1, "a"), "ints": {0: 1.5, 2: None}, "a/b": torch.ones(1), "a": {"b": torch.zeros(1)}}
    save_checkpoint(tmp_path / "last", model.state_dict(), {}, "linear", extra=extra)
    back = load_checkpoint_extra(tmp_path / "last")
    assert back["pair"] == (1, "a") and back["ints"] == {0: 1.5, 2: None}
    assert back["a/b"].item() == 1 and back["a"]["b"].item() == 0  # same tensor path, kept apart
    torch.testing.assert_close(back["rng"]["torch"], torch.get_rng_state())
    fresh_opt = torch.optim.AdamW(model.parameters(), lr=1.0)
    fresh_opt.load_state_dict(back["optimizer"])
    for key in ("exp_avg", "exp_avg_sq", "step"):
        torch.testing.assert_close(fresh_opt.state_dict()["state"][0][key], opt.state_dict()["state"][0][key])
    assert fresh_opt.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    fresh_sched = torch.optim.lr_scheduler.OneCycleLR(fresh_opt, max_lr=1.0, total_steps=10)
    fresh_sched.load_state_dict(back["scheduler"])
    assert fresh_sched.state_dict() == sched.state_dict()
    # saving again without extra removes the stale training state
    save_checkpoint(tmp_path / "last", model.state_dict(), {}, "linear")
    assert load_checkpoint_extra(tmp_path / "last") is None and not (tmp_path / "last.extra.safetensors").exists()
    with pytest.raises(ValueError, match="cannot be stored without pickling"):
        save_checkpoint(tmp_path / "bad", model.state_dict(), {}, "linear", extra={"fn": print})


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import avs_depth_core.checkpoint as checkpoint_module

    old = {"w": torch.zeros(64, 64)}
    save_checkpoint(tmp_path / "last", old, {"v": 1}, "thing", extra={"step": torch.tensor(1)})
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["last.extra.safetensors", "last.json", "last.safetensors"]
    real_save = checkpoint_module.save_file
    written = []

    def killed_while_writing_extra(tensors, filename):
        written.append(filename)
        if len(written) == 2:  # the extra tensors: half a file, then the process is interrupted
            with open(filename, "wb") as f:
                f.write(b"\x00" * 100)
            raise KeyboardInterrupt
        real_save(tensors, filename)

    monkeypatch.setattr(checkpoint_module, "save_file", killed_while_writing_extra)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "last", {"w": torch.ones(64, 64)}, {"v": 2}, "thing", extra={"step": torch.tensor(2)})
    # The tensors went to hidden temporaries beside the target, which are gone again; the final names were not touched.
    assert len(written) == 2 and all(Path(f).parent == tmp_path for f in written)
    assert all(Path(f).name.startswith(".last.") and Path(f).name.endswith(".tmp") for f in written)
    assert sorted(p.name for p in tmp_path.iterdir()) == files
    state, config, _, _ = load_checkpoint(tmp_path / "last")
    assert config == {"v": 1} and state["w"].sum() == 0
    assert load_checkpoint_extra(tmp_path / "last")["step"].item() == 1


def test_kill_between_renames_is_detected(tmp_path, monkeypatch):
    """A kill (no clean-up) after the weights were renamed but before the JSON: the old JSON's sha256 rejects them."""
    import avs_depth_core.checkpoint as checkpoint_module

    save_checkpoint(tmp_path / "m", {"w": torch.zeros(3)}, {}, "thing")
    real_replace = os.replace
    calls = []

    def replace_then_die(src, dst):
        calls.append(Path(dst).name)
        if len(calls) == 2:
            raise SystemExit("killed")
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "replace", replace_then_die)
    with pytest.raises(SystemExit):
        save_checkpoint(tmp_path / "m", {"w": torch.ones(3)}, {}, "thing")
    monkeypatch.undo()
    assert calls == ["m.safetensors", "m.json"]  # weights first, the JSON last
    with pytest.raises(ValueError, match="sha256"):
        load_checkpoint(tmp_path / "m")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # cleaned up on the way out


def test_older_metadata_keys_read_in_todays_vocabulary(tmp_path):
    """Monodepth2 runs wrote bag_sha256 and train_triples, AVS-Net runs train_frames: they load as bag_fingerprint and
    train_samples; a key already in today's spelling wins."""
    save_checkpoint(tmp_path / "md2", {"w": torch.zeros(1)}, {}, "monodepth2",
                    {"bag_sha256": "abc", "train_triples": 8, "epoch": 1})
    _, _, _, meta = load_checkpoint(tmp_path / "md2")
    assert meta == {"bag_fingerprint": "abc", "train_samples": 8, "epoch": 1}
    save_checkpoint(tmp_path / "avs", {"w": torch.zeros(1)}, {}, "avsnet",
                    {"bag_fingerprint": "new", "bag_sha256": "old", "train_frames": 6})
    _, _, _, meta = load_checkpoint(tmp_path / "avs")
    assert meta == {"bag_fingerprint": "new", "train_samples": 6}
