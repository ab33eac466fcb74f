"""A read-only output folder: every command that writes says so in one line (exit 1) before its work, changes nothing,
and succeeds once the folder is writable."""

from __future__ import annotations

import pytest
from fault_tools import TinyBag, expect_error, snapshot, temporaries


def outputs(inputs, folder, tmp_path):
    """command -> (arguments writing into `folder`, whether it is a ROS command)."""
    image, echo, ckpt = inputs["image"], inputs["echo"], inputs["checkpoint"]
    return {
        "simulate": (("simulate", "--sequences", "2", "--frames", "2", "--height", "32", "--width", "64",
                      "--out", folder / "bag"), False),
        "convert-batvision": (("convert-batvision", "--root", inputs["bv2_root"], "--version", "2", "--out",
                               folder / "bv2"), False),
        "train (run dir)": (TinyBag.train_args(inputs["bag"], folder / "run", tmp_path / "cache", "--max-steps", "1"),
                            False),
        "train (cache)": (TinyBag.train_args(inputs["bag"], tmp_path / "run", folder / "cache", "--max-steps", "1"),
                          False),
        "infer": (("infer", "--checkpoint", ckpt, "--image", image, "--echo", echo, "--out", folder / "d.png"), False),
        "evaluate": (("evaluate", "--bag", inputs["bag"], "--checkpoint", ckpt, "--out", folder / "results",
                      "--cache-dir", tmp_path / "cache"), False),
        "gradcam": (("gradcam", "--checkpoint", ckpt, "--image", image, "--echo", echo, "--out", folder / "g.png"),
                    False),
        "bringup --figures": (("bringup", "--sim", "--duration", "1", "--figures", folder / "figs"), True),
        "record": (("record", "--out", folder / "bag", "--duration", "1"), True),
    }


COMMANDS = ["simulate", "convert-batvision", "train (run dir)", "train (cache)", "infer", "evaluate", "gradcam",
            "bringup --figures", "record"]
RERUN = {"simulate", "train (cache)", "infer"}  # the others' reruns are covered by test_full_disk


@pytest.mark.parametrize("command", COMMANDS)
def test_read_only_output(cli, read_only_disk, inputs, tmp_path, command):
    args, ros = outputs(inputs, read_only_disk.path, tmp_path)[command]
    if ros:
        pytest.importorskip("rclpy")
    before = snapshot(read_only_disk.path)
    with read_only_disk.fault():
        result = cli(*args, ros=ros)
    expect_error(result, 1, str(read_only_disk.path))
    assert "read-only" in result.err or "permission" in result.err
    assert snapshot(read_only_disk.path) == before and not (tmp_path / "run").exists()
    if command in RERUN:
        read_only_disk.fix()
        assert cli(*args, ros=ros).code == 0
        assert temporaries(read_only_disk.path) == []
