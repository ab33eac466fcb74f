"""A full output disk: every command stops with one line (exit 1) saying where and how to fix it, before its long work
where it can tell (free-space check) and at the failing write otherwise; it leaves no partial output and no temporary;
once space is freed the same command succeeds."""

from __future__ import annotations

import pytest
from fault_tools import TinyBag, expect_error, snapshot, temporaries

from avs_depth_core.checkpoint import load_checkpoint

SIMULATE = ("simulate", "--preset", "bv2", "--sequences", "2", "--frames", "3", "--height", "32", "--width", "64")


def rerun_succeeds(cli, disk, *args, ros: bool = False) -> None:
    disk.fix()
    result = cli(*args, ros=ros)
    assert result.code == 0, result.err[-2000:]
    assert temporaries(disk.path) == []


@pytest.mark.parametrize("when", ["before work", "while writing"])
def test_simulate(cli, full_disk, when, request):
    if when == "while writing":
        request.getfixturevalue("no_precheck")
    out = full_disk.path / "bag"
    with full_disk.fault():
        result = cli(*SIMULATE, "--out", out)
    expect_error(result, 1, str(full_disk.path), "space")
    assert not out.exists() and temporaries(full_disk.path) == []
    rerun_succeeds(cli, full_disk, *SIMULATE, "--out", out)
    assert (out / "metadata.yaml").is_file()


@pytest.mark.parametrize("when", ["before work", "while writing"])
def test_convert_batvision(cli, full_disk, inputs, when, request):
    if when == "while writing":
        request.getfixturevalue("no_precheck")
    out = full_disk.path / "bv2"
    args = ("convert-batvision", "--root", inputs["bv2_root"], "--version", "2", "--out", out)
    with full_disk.fault():
        result = cli(*args)
    expect_error(result, 1, str(full_disk.path), "space")
    assert not out.exists() and temporaries(full_disk.path) == []
    full_disk.fix(64 << 20)
    rerun_succeeds(cli, full_disk, *args)


def test_train_cache_on_a_full_disk_is_an_error_not_a_bus_error(cli, make_disk, inputs, tmp_path):
    """The issue's case: the dataset cache's memory maps on a full disk killed training with SIGBUS and left a
    <key>.tmp-* folder. Their blocks are now reserved before anything is decoded into them."""
    disk = make_disk("full", 64 << 10)
    args = TinyBag.train_args(inputs["bag"], tmp_path / "run", disk.path / "cache", "--max-steps", "1")
    with disk.fault():
        result = cli(*args)
    expect_error(result, 1, str(disk.path / "cache"), "space")
    assert temporaries(disk.path) == [] and not (tmp_path / "run").exists()
    rerun_succeeds(cli, disk, *args)


def test_train_checkpoints_need_room_before_the_first_step(cli, make_disk, inputs, tmp_path):
    disk = make_disk("full")
    run = disk.path / "run"
    args = TinyBag.train_args(inputs["bag"], run, tmp_path / "cache", "--max-steps", "1")
    with disk.fault():
        result = cli(*args)
    expect_error(result, 1, "space")
    assert snapshot(run) == {} and temporaries(disk.path) == []
    disk.fix(256 << 20)
    rerun_succeeds(cli, disk, *args)


def test_resume_on_a_disk_that_filled_up_keeps_the_last_checkpoint(cli, make_disk, inputs, tmp_path, monkeypatch):
    """A run whose disk fills between two checkpoints: the save fails with one line, the previous checkpoint stays
    loadable, and --resume succeeds once space is freed."""
    disk = make_disk("full", 256 << 20)
    run = disk.path / "run"
    first = TinyBag.train_args(inputs["bag"], run, tmp_path / "cache", "--max-steps", "3",
                               "--set", "train.stop_after_steps=1")
    assert cli(*first).code == 0
    before = snapshot(run / "checkpoints")
    from avs_depth_core import files

    free = files.free_bytes(disk.path)
    ballast = disk.path / "ballast"
    if disk.mounted:
        ballast.write_bytes(b"\0" * (free - (64 << 10)))  # leave 64 KB
    monkeypatch.setattr(files, "check_output", lambda *a, **k: None)  # let it reach the save itself
    more = [*first, "--resume"]
    with disk.fault():
        result = cli(*more)
    expect_error(result, 1, "checkpoint not saved", "space")
    assert snapshot(run / "checkpoints") == before and temporaries(disk.path) == []
    load_checkpoint(run / "checkpoints" / "last")  # the weights' sha256 still matches its JSON
    monkeypatch.undo()
    ballast.unlink(missing_ok=True)
    rerun_succeeds(cli, disk, *more)


@pytest.mark.parametrize("when", ["before work", "while writing"])
def test_infer(cli, full_disk, inputs, when, request):
    if when == "while writing":
        request.getfixturevalue("no_precheck")
    out = full_disk.path / "depth.npy"  # 1280x720 float32: 3.7 MB
    args = ("infer", "--checkpoint", inputs["checkpoint"], "--image", inputs["image"], "--echo", inputs["echo"],
            "--out", out)
    with full_disk.fault():
        result = cli(*args)
    expect_error(result, 1, str(out) if when == "while writing" else str(full_disk.path), "space")
    assert not out.exists() and temporaries(full_disk.path) == []
    rerun_succeeds(cli, full_disk, *args)


def test_evaluate_fails_before_evaluating(cli, full_disk, inputs, monkeypatch, tmp_path):
    import avs_depth_core.evaluation.depth as depth

    def must_not_run(*args, **kwargs):
        raise AssertionError("evaluation started on a disk that cannot take its results")

    monkeypatch.setattr(depth, "evaluate_row", must_not_run)
    out = full_disk.path / "results"
    args = ("evaluate", "--bag", inputs["bag"], "--checkpoint", inputs["checkpoint"], "--out", out, "--figures", "2",
            "--device", "cpu", "--cache-dir", tmp_path / "cache")
    with full_disk.fault():
        result = cli(*args)
    expect_error(result, 1, "space", "--out")
    assert snapshot(full_disk.path) == {}
    monkeypatch.undo()
    rerun_succeeds(cli, full_disk, *args)
    assert (out / "results.json").is_file()


def test_gradcam(cli, full_disk, inputs):
    out = full_disk.path / "gradcam.png"
    args = ("gradcam", "--checkpoint", inputs["checkpoint"], "--image", inputs["image"], "--echo", inputs["echo"],
            "--out", out)
    with full_disk.fault():
        result = cli(*args)
    expect_error(result, 1, "space")
    assert not out.exists()
    rerun_succeeds(cli, full_disk, *args)


def test_bringup_figures_checked_before_the_nodes_start(cli, full_disk):
    pytest.importorskip("rclpy")
    with full_disk.fault():
        result = cli("bringup", "--sim", "--duration", "1", "--figures", full_disk.path / "figs", ros=True)
    expect_error(result, 1, "--figures", "space")
    assert snapshot(full_disk.path) == {}


def test_record_checked_before_recording(cli, full_disk):
    pytest.importorskip("rclpy")
    with full_disk.fault():
        result = cli("record", "--out", full_disk.path / "bag", "--duration", "1", ros=True)
    expect_error(result, 1, "space")
    assert snapshot(full_disk.path) == {}
