"""avs-depth train: one epoch on a tiny bag, resume, overrides and config errors, the NaN guard, DDP with 2 gloo processes
(the tiny bag and its arguments: test/unit/conftest.py TinyBag)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from avs_depth_core.checkpoint import load_checkpoint, load_checkpoint_extra
from avs_depth_core.cli import main
from avs_depth_core.config import apply_overrides, section_from_dict
from avs_depth_core.models.avsnet import AVSNet
from avs_depth_core.train.logs import read_csv

ROOT = Path(__file__).resolve().parents[4]


def test_one_epoch_writes_checkpoint_logs_and_curve(tmp_path, tiny_bag):
    run = tiny_bag.train(tmp_path)
    ckpt = run / "checkpoints"
    for name in ("last.safetensors", "last.json", "last.extra.safetensors", "best.safetensors", "best.json"):
        assert (ckpt / name).is_file(), name
    model = AVSNet.from_checkpoint(ckpt / "best.safetensors", "cpu")
    assert model.cfg.image_size == (32, 64) and model.cfg.use_echo
    with torch.inference_mode():
        out = model(torch.rand(1, 3, 32, 64), torch.rand(1, 2, 32, 32))["metric_depth"]
    assert out.shape == (1, 1, 32, 64) and torch.isfinite(out).all()
    _, _, kind, meta = load_checkpoint(ckpt / "last")
    assert kind == "avsnet" and meta["epoch"] == 1 and meta["step"] == 3  # 6 train frames, batch 2
    assert set(meta["val"]) >= {"abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3"}
    assert (run / "training_curve.png").stat().st_size > 1000
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert [r["step"] for r in read_csv(run / "train_log.csv")] == [1.0]  # log_every 10: the first step only
    assert len(read_csv(run / "val_log.csv")) == 1
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["model"]["image_size"] == [32, 64] and resolved["train"]["batch_size"] == 2


def test_resume_continues_from_last_checkpoint(tmp_path, tiny_bag):
    bag = tiny_bag.write(tmp_path / "bag")
    out = tmp_path / "run"
    # 2 epochs of 3 steps; this invocation ends after 4 steps (as a killed run's last checkpoint would).
    common = ("--epochs", "2", "--set", "train.checkpoint_every=2", "--set", "train.log_every=1")
    assert main(tiny_bag.train_args(bag, out, tmp_path / "cache", *common, "--set", "train.stop_after_steps=4")) == 0
    first = load_checkpoint_extra(out / "checkpoints" / "last")
    assert first["progress"]["step"] == 4 and first["progress"]["epoch"] == 1 and first["progress"]["batch"] == 1
    assert first["scheduler"]["total_steps"] == 6
    # The same command with --resume continues at step 4.
    assert main(tiny_bag.train_args(bag, out, tmp_path / "cache", *common, "--resume")) == 0
    second = load_checkpoint_extra(out / "checkpoints" / "last")
    assert second["progress"]["step"] == 6 and second["progress"]["epoch"] == 2 and second["progress"]["batch"] == 0
    assert second["scheduler"]["last_epoch"] == 6
    # Adam's step counters carry on from the first run instead of restarting at 1.
    steps = {float(s["step"]) for s in second["optimizer"]["state"].values()}
    assert steps == {6.0}
    log = read_csv(out / "train_log.csv")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]


def test_training_survives_a_kill(tmp_path, tiny_bag):
    """SIGKILL a training process mid-run; the same command with --resume continues from its last checkpoint."""
    bag = tiny_bag.write(tmp_path / "bag")
    out = tmp_path / "run"
    args = tiny_bag.train_args(bag, out, tmp_path / "cache", "--epochs", "100", "--set", "train.checkpoint_every=1",
                      "--set", "train.validate=false", "--set", "train.log_every=1")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "avs_depth_core.cli", *args], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = out / "checkpoints" / "last.json"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if last.is_file() and json.loads(last.read_text())["meta"]["step"] >= 3:
                break
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    killed_at = load_checkpoint_extra(out / "checkpoints" / "last")["progress"]["step"]
    assert 3 <= killed_at < 300
    assert main([*args, "--resume", "--set", "train.stop_after_steps=2"]) == 0
    resumed = load_checkpoint_extra(out / "checkpoints" / "last")["progress"]
    assert resumed["step"] == killed_at + 2
    steps = [r["step"] for r in read_csv(out / "train_log.csv")]
    assert steps == list(range(1, killed_at + 3))  # nothing logged twice or lost


def test_resume_restores_optimizer_state_exactly(tmp_path, tiny_bag):
    """Training 4 steps straight and 2 + resume + 2 give the same weights."""
    bag = tiny_bag.write(tmp_path / "bag")
    common = ("--epochs", "2", "--max-steps", "4", "--set", "train.validate=false")
    assert main(tiny_bag.train_args(bag, tmp_path / "a", tmp_path / "cache", *common)) == 0
    # Run b stops after step 2, mid-epoch (schedule for 4 steps); the resumed invocation runs 2 more.
    assert main(tiny_bag.train_args(bag, tmp_path / "b", tmp_path / "cache", *common, "--set", "train.stop_after_steps=2")) == 0
    assert main(tiny_bag.train_args(bag, tmp_path / "b", tmp_path / "cache", *common, "--resume")) == 0
    a, _, _, _ = load_checkpoint(tmp_path / "a" / "checkpoints" / "last")
    b, _, _, _ = load_checkpoint(tmp_path / "b" / "checkpoints" / "last")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


def test_only_rgb_and_overrides(tmp_path, capsys, tiny_bag):
    run = tiny_bag.train(tmp_path, "--no-echo", "--set", "model.n_bins=8", "--max-steps", "1")
    model = AVSNet.from_checkpoint(run / "checkpoints" / "last", "cpu")
    assert not model.cfg.use_echo and model.cfg.n_bins == 8 and model.audio is None
    # The run directory is not overwritten by accident.
    assert main(tiny_bag.train_args(tmp_path / "bag", run, tmp_path / "cache", "--no-echo", "--max-steps", "1")) == 2
    assert "already holds a run; add --resume" in capsys.readouterr().err


@pytest.mark.parametrize(("override", "message"), [
    ("train.learning_rate=0.1", "train.learning_rate"),
    ("model.n_binz=3", "n_binz"),
    ("train.epochs=two", "train.epochs: expected int"),
    ("train.optimizer=sgd", "train.optimizer is fixed: AVS-Net trains with AdamW"),
    ("data.image_size=[64, 128]", "data.image_size"),
])
def test_config_errors_name_the_key(tmp_path, capsys, override, message, tiny_bag):
    bag = tiny_bag.write(tmp_path / "bag", {"train": 2, "val": 1})
    assert main(tiny_bag.train_args(bag, tmp_path / "run", tmp_path / "cache", "--set", override)) == 2
    assert message in capsys.readouterr().err


def test_apply_overrides_parses_yaml_values():
    cfg = apply_overrides({"model": {"n_bins": 64}}, ["model.n_bins=32", "train.lr=1e-3", "model.image_size=[32, 64]"])
    assert cfg == {"model": {"n_bins": 32, "image_size": [32, 64]}, "train": {"lr": "1e-3"}}  # YAML 1.1 reads 1e-3 as text
    from avs_depth_core.train.avsnet import TrainConfig

    assert section_from_dict(TrainConfig, cfg["train"], "train").lr == 1e-3
    with pytest.raises(ValueError, match="section.key=value"):
        apply_overrides({}, ["n_bins"])
    with pytest.raises(ValueError, match="must name its section"):
        apply_overrides({}, ["n_bins=3"])


def test_empty_valid_mask_is_a_clear_error(tmp_path, capsys, tiny_bag):
    # Every wall is 1-6 m away; with data.min_depth 7 no pixel of the batch is valid for the loss.
    bag = tiny_bag.write(tmp_path / "bag", {"train": 2, "val": 1})
    assert main(tiny_bag.train_args(bag, tmp_path / "run", tmp_path / "cache", "--set", "data.min_depth=7.0")) == 2
    err = capsys.readouterr().err
    assert "step 0: no valid depth pixels (7.0 < gt < 8.0)" in err and "stamp_ns" in err


def test_frame_without_valid_depth_is_reported(tmp_path, capsys, tiny_bag):
    bag = tiny_bag.write(tmp_path / "bag", {"train": 3, "val": 1}, nan_depth_at=(1,))
    assert main(tiny_bag.train_args(bag, tmp_path / "run", tmp_path / "cache")) == 2
    assert "no valid depth pixel" in capsys.readouterr().err


def test_nan_in_batch_names_step_and_stamps():
    from avs_depth_core.guards import check_batch_finite, check_loss_finite

    batch = {"rgb": torch.zeros(2, 3, 4, 4), "stamp_ns": torch.tensor([11, 22])}
    batch["rgb"][1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"step 7: batch\['rgb'\] holds NaN or inf for samples with stamp_ns \[22\]"):
        check_batch_finite(batch, 7, ("rgb", "echo"))
    with pytest.raises(ValueError, match="step 3: loss is nan"):
        check_loss_finite(torch.tensor(float("nan")), 3, batch)


def test_missing_bag_is_clear(tmp_path, capsys):
    assert main(["train", "--bag", str(tmp_path / "nope")]) == 2
    assert "bag not found" in capsys.readouterr().err


def test_ddp_two_gloo_processes(tmp_path, tiny_bag):
    """torchrun with 2 CPU processes (gloo): both ranks train on their shard, rank 0 writes the checkpoint."""
    bag = tiny_bag.write(tmp_path / "bag", {"train": 8, "val": 2})
    # Build the cache once so the two processes start together.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "avs_depth_core.cli",
           *tiny_bag.train_args(bag, tmp_path / "run", tmp_path / "cache", "--max-steps", "2", "--set", "train.log_every=1")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es)" in proc.stderr
    _, _, _, meta = load_checkpoint(tmp_path / "run" / "checkpoints" / "last")
    assert meta["world_size"] == 2 and meta["step"] == 2
    assert (tmp_path / "run" / "checkpoints" / "best.safetensors").is_file()


def test_configs_written_before_the_fixed_keys_were_dropped_still_resolve():
    from avs_depth_core.train.avsnet import TrainConfig, resolve_config

    _, train, _ = resolve_config({"train": {"optimizer": "adamw", "scheduler": "onecycle", "loss": "silog", "lr": 1e-3}})
    assert train.lr == 1e-3 and not hasattr(TrainConfig(), "optimizer")
    with pytest.raises(ValueError, match="train.scheduler is fixed"):
        resolve_config({"train": {"scheduler": "cosine"}})


def test_range_profile_and_augmentation_train_and_check_the_chirp(tmp_path, capsys, tiny_bag):
    """Time-of-flight features with flip, scale, gain and noise augmentation, the echo scale head and the per-image
    scale loss train end to end; a model whose matched
    filter expects another chirp than the bag's EchoStamped announces is refused, naming the frame."""
    ranged = ("--set", "model.echo_range_profile=true", "--set", "model.range_bins=64", "--max-steps", "2")
    aug = ("--set", "train.aug_flip=0.5", "--set", "train.aug_scale=1.5", "--set", "train.aug_echo_gain_db=6",
           "--set", "train.aug_echo_noise=0.1")
    scale = ("--set", "model.echo_scale_head=true", "--set", "train.scale_loss_weight=1")
    run = tiny_bag.train(tmp_path, *ranged, *aug, *scale)
    model = AVSNet.from_checkpoint(run / "checkpoints" / "last", "cpu")
    assert model.cfg.echo_range_profile and model.range_encoder is not None and model.scale_head is not None
    other = ("--set", "model.chirp_end_hz=18000")
    assert main(tiny_bag.train_args(tmp_path / "bag", tmp_path / "run2", tmp_path / "cache", *ranged, *other)) == 2
    assert "is not the one the range profile's matched filter expects" in capsys.readouterr().err
    assert main(tiny_bag.train_args(tmp_path / "bag", tmp_path / "run3", tmp_path / "cache", "--set",
                                    "train.aug_flip=2")) == 2
    assert "train.aug_flip" in capsys.readouterr().err


def test_per_image_scale_loss_scores_each_images_scale():
    """Two images off by x2 and /2: SILog's pooled scale term sees them cancel, the per-image term does not."""
    from avs_depth_core.train.avsnet import per_image_scale_loss

    depth = torch.rand(2, 1, 4, 8) + 1.0
    pred = depth * torch.tensor([2.0, 0.5]).view(2, 1, 1, 1)
    valid = torch.ones_like(depth, dtype=torch.bool)
    assert per_image_scale_loss(pred, depth, valid).item() == pytest.approx(math.log(2.0), rel=1e-5)
    valid[1] = False  # an image without valid pixels is left out, not counted as 0
    assert per_image_scale_loss(pred, depth, valid).item() == pytest.approx(math.log(2.0), rel=1e-5)
    assert per_image_scale_loss(depth, depth, valid).item() == pytest.approx(0.0, abs=1e-6)
