"""Truncated and corrupted inputs of every kind the command line reads, and values out of range: one line naming the
file or option (exit 2), no traceback, nothing written."""

from __future__ import annotations

import pickle
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from fault_tools import TinyBag, expect_error, snapshot
from scipy.io import wavfile

CSV_HEADER = "depth path,depth file name,audio path,audio file name,camera path,camera file name\n"
ROW = "Hall/depth,depth_47.npy,Hall/audio,audio_47.wav,Hall/camera,camera_47.jpeg\n"


def cut(src: Path, dst: Path, keep: int) -> Path:
    dst.write_bytes(src.read_bytes()[:keep])
    return dst


def flip(src: Path, dst: Path, at: float) -> Path:
    data = bytearray(src.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


# ----------------------------------------------------------------------------------------------- infer / gradcam
def wav_echo(tmp: Path, samples: np.ndarray) -> Path:
    path = tmp / "echo.wav"
    wavfile.write(path, 44_100, samples.T.astype(np.float32))
    return path


ECHOES = {  # name -> (make the --echo file from the real one, words of the error)
    "wav cut inside its header": (lambda e, t: cut(e, t / "a.wav", 30), ["a.wav", "not a readable wav"]),
    "wav cut inside its data": (lambda e, t: cut(e, t / "a.wav", 20_000), ["a.wav", "not a readable wav"]),
    "not a wav": (lambda e, t: cut(Path(__file__), t / "a.wav", 4000), ["a.wav", "not a readable wav"]),
    "silent echo": (lambda e, t: wav_echo(t, np.zeros((2, 20_000))), ["echo.wav", "silent"]),
    "clipped echo": (lambda e, t: wav_echo(t, np.sign(np.random.default_rng(0).normal(size=(2, 20_000)))),
                     ["echo.wav", "clipped"]),
    "NaN echo": (lambda e, t: wav_echo(t, np.full((2, 20_000), np.nan)), ["echo.wav", "NaN"]),
    "mono echo": (lambda e, t: wav_echo(t, np.random.default_rng(0).normal(0, 0.1, (1, 20_000))), ["channel"]),
    "echo shorter than the window": (lambda e, t: wav_echo(t, np.random.default_rng(0).normal(0, 0.1, (2, 3000))),
                                     ["shorter than"]),
}
IMAGES = {
    "truncated jpeg": (lambda i, t: cut(i, t / "a.jpeg", 5000), ["a.jpeg", "truncated"]),
    "jpeg of garbage": (lambda i, t: cut(Path(__file__), t / "a.jpeg", 3000), ["a.jpeg", "not an image"]),
    "empty image": (lambda i, t: cut(i, t / "a.jpeg", 0), ["a.jpeg"]),
}


@pytest.mark.parametrize("command", ["infer", "gradcam"])
@pytest.mark.parametrize("case", sorted(ECHOES))
def test_bad_echo(cli, inputs, tmp_path, case, command):
    make, words = ECHOES[case]
    out = tmp_path / "out.png"
    result = cli(command, "--checkpoint", inputs["checkpoint"], "--image", inputs["image"], "--echo",
                 make(inputs["echo"], tmp_path), "--out", out)
    expect_error(result, 2, *words)
    assert not out.exists()


@pytest.mark.parametrize("case", sorted(IMAGES))
def test_bad_image(cli, inputs, tmp_path, case):
    make, words = IMAGES[case]
    out = tmp_path / "out.npy"
    result = cli("infer", "--checkpoint", inputs["checkpoint"], "--image", make(inputs["image"], tmp_path), "--echo",
                 inputs["echo"], "--out", out)
    expect_error(result, 2, *words)
    assert not out.exists()


# ------------------------------------------------------------------------------------------------------ checkpoints
def checkpoint_copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(src.with_suffix(suffix), dst / f"ckpt{suffix}")
    return dst / "ckpt.safetensors"


CHECKPOINTS = {  # name -> (damage the copied checkpoint, words)
    "weights truncated": (lambda c: cut(c, c, 1000), ["ckpt.safetensors", "sha256"]),
    "weights byte flipped": (lambda c: flip(c, c, 0.5), ["ckpt.safetensors", "sha256"]),
    "JSON truncated": (lambda c: cut(c.with_suffix(".json"), c.with_suffix(".json"), 100), ["ckpt.json", "JSON"]),
    "JSON of another format": (lambda c: c.with_suffix(".json").write_text('{"format": "x"}'), ["ckpt.json", "format"]),
    "JSON missing": (lambda c: c.with_suffix(".json").unlink(), ["ckpt.json", "not found"]),
    "weights missing": (lambda c: c.unlink(), ["ckpt.safetensors", "not found"]),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINTS))
def test_bad_checkpoint(cli, inputs, tmp_path, case):
    ckpt = checkpoint_copy(inputs["checkpoint"], tmp_path / "c")
    damage, words = CHECKPOINTS[case]
    damage(ckpt)
    out = tmp_path / "d.npy"
    result = cli("infer", "--checkpoint", ckpt, "--image", inputs["image"], "--echo", inputs["echo"], "--out", out)
    expect_error(result, 2, *words)
    assert not out.exists()


@pytest.mark.parametrize("case", ["pickled code", "truncated", "not torch"])
def test_weights_given_with_set_are_refused_without_torchs_retry_advice(cli, inputs, tmp_path, case):
    path = tmp_path / "weights.pt"
    if case == "pickled code":
        torch.save({"conv1.weight": torch.zeros(1), "x": Evil()}, path)
    elif case == "truncated":
        torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
        cut(path, path, 300)
    else:
        path.write_bytes(pickle.dumps([1, 2, 3])[:5])
    result = cli(*TinyBag.train_args(inputs["bag"], tmp_path / "run", tmp_path / "cache", "--max-steps", "1",
                                     "--set", f"model.audio_weights={path}"))
    line = expect_error(result, 2, "weights.pt")
    assert "weights_only=False" not in result.err and "Re-running" not in result.err, line
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------------------- bags
def copy_bag(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def sqlite_bag(cli, dst: Path) -> Path:
    assert cli("simulate", "--sequences", "2", "--frames", "2", "--height", "32", "--width", "64", "--storage", "sqlite3",
               "--out", dst).code == 0
    return dst


def corrupt_sqlite_page(bag: Path) -> Path:
    db = next(bag.glob("*.db3"))
    with sqlite3.connect(db) as con:
        page = con.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(db.read_bytes())
    data[page * 2: page * 2 + 64] = b"\xff" * 64  # a b-tree page header
    db.write_bytes(bytes(data))
    return bag


BAGS = {  # name -> (make the bad bag (cli, good mcap bag, folder), words)
    "mcap truncated": (lambda c, b, t: cut(next(b.glob("*.mcap")), next(copy_bag(b, t / "x").glob("*.mcap")),
                                            50_000) and t / "x", ["x", "truncated"]),
    "mcap byte flipped": (lambda c, b, t: flip(next(b.glob("*.mcap")), next(copy_bag(b, t / "x").glob("*.mcap")),
                                               0.4) and t / "x", ["x", "CRC mismatch"]),
    "mcap empty": (lambda c, b, t: cut(next(b.glob("*.mcap")), next(copy_bag(b, t / "x").glob("*.mcap")), 0)
                   and t / "x", ["x"]),
    "metadata.yaml broken": (lambda c, b, t: (copy_bag(b, t / "x") / "metadata.yaml").write_text("a: [b\n") and t / "x",
                             ["metadata.yaml", "YAML"]),
    "no metadata.yaml": (lambda c, b, t: (copy_bag(b, t / "x") / "metadata.yaml").unlink() or t / "x",
                         ["metadata.yaml"]),
    "storage file missing": (lambda c, b, t: next(copy_bag(b, t / "x").glob("*.mcap")).unlink() or t / "x",
                             ["missing"]),
    "sqlite3 truncated": (lambda c, b, t: cut(next(sqlite_bag(c, t / "x").glob("*.db3")), next((t / "x").glob("*.db3")),
                                              3000) and t / "x", ["x.db3"]),
    "sqlite3 page overwritten": (lambda c, b, t: corrupt_sqlite_page(sqlite_bag(c, t / "x")), ["x.db3"]),
    "not a bag": (lambda c, b, t: cut(Path(__file__), t / "x.mcap", 5000), ["x.mcap"]),
}


@pytest.mark.parametrize("command", ["bag-info", "train"])
@pytest.mark.parametrize("case", sorted(BAGS))
def test_bad_bag(cli, inputs, tmp_path, case, command):
    make, words = BAGS[case]
    bag = make(cli, inputs["bag"], tmp_path)
    if command == "bag-info":
        result = cli("bag-info", bag)
    else:
        result = cli(*TinyBag.train_args(bag, tmp_path / "run", tmp_path / "cache", "--max-steps", "1"))
    expect_error(result, 2, *words)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------ BatVision download
def bv2_root(inputs, tmp: Path, csv: str | bytes = CSV_HEADER + ROW, files: dict[str, Path] | None = None) -> Path:
    root = tmp / "bv2"
    src = inputs["bv2_root"] / "Hall"
    for sub in ("camera", "depth", "audio"):
        (root / "Hall" / sub).mkdir(parents=True)
        for f in (src / sub).iterdir():
            target = (files or {}).get(f.name, f.resolve())
            shutil.copy(target, root / "Hall" / sub / f.name)
    (root / "Hall" / "train.csv").write_bytes(csv.encode() if isinstance(csv, str) else csv)
    return root


def npy_pickled(tmp: Path) -> Path:
    np.save(tmp / "p.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return tmp / "p.npy"


CONVERT = {  # name -> (root maker, words)
    "wav cut inside its header": (lambda i, t: bv2_root(i, t, files={"audio_47.wav": cut(i["echo"], t / "w.wav", 30)}),
                                  ["train.csv line 2", "audio_47.wav", "not a readable wav"]),
    "truncated jpeg": (lambda i, t: bv2_root(i, t, files={"camera_47.jpeg": cut(i["image"], t / "c.jpeg", 5000)}),
                       ["train.csv line 2", "camera_47.jpeg"]),
    "depth npy truncated": (lambda i, t: bv2_root(i, t, files={
        "depth_47.npy": cut(i["bv2_root"] / "Hall" / "depth" / "depth_47.npy", t / "d.npy", 200)}),
        ["train.csv line 2", "depth_47.npy"]),
    "depth npy pickled": (lambda i, t: bv2_root(i, t, files={"depth_47.npy": npy_pickled(t)}), ["depth_47.npy"]),
    "csv without a column": (lambda i, t: bv2_root(i, t, csv=CSV_HEADER.replace("audio path,", "")
                                                   + ROW.replace("Hall/audio,", "")),
                             ["train.csv", "audio path"]),
    "csv ragged row": (lambda i, t: bv2_root(i, t, csv=CSV_HEADER + ROW + "Hall/depth,depth_47.npy\n"),
                       ["train.csv line 3"]),
    "csv not text": (lambda i, t: bv2_root(i, t, csv=b"\xff\xfe\x00garbage\x00\xff" * 20), ["train.csv"]),
    "csv empty": (lambda i, t: bv2_root(i, t, csv=""), ["train.csv"]),
}


@pytest.mark.parametrize("case", sorted(CONVERT))
def test_bad_batvision_download(cli, inputs, tmp_path, case):
    make, words = CONVERT[case]
    root = make(inputs, tmp_path)
    result = cli("convert-batvision", "--root", root, "--version", "2", "--out", tmp_path / "out")
    expect_error(result, 2, *words)
    assert not (tmp_path / "out").exists()


def test_a_bad_row_is_skipped_and_counted_with_skip_bad(cli, inputs, tmp_path):
    """The issue's case: a wav cut inside its header aborted the conversion even with --skip-bad."""
    root = bv2_root(inputs, tmp_path, csv=CSV_HEADER + ROW + ROW.replace("audio_47.wav", "audio_48.wav"))
    cut(inputs["echo"], root / "Hall" / "audio" / "audio_48.wav", 30)
    result = cli("convert-batvision", "--root", root, "--version", "2", "--out", tmp_path / "out", "--skip-bad")
    assert result.code == 0, result.err[-2000:]
    assert "skipped" in result.err and "audio_48.wav" in result.err
    total = next(line.split() for line in result.out.splitlines() if line.startswith("total"))
    assert total == ["total", "2", "1", "1"]  # rows in = frames out + skipped


# ---------------------------------------------------------------------------------------------- options and configs
def broken_yaml(tmp: Path) -> Path:
    """A config that does not parse, beside (not in) the folder whose snapshot must not change."""
    path = tmp.parent / "broken.yaml"
    path.write_text("model:\n  n_bins: [16\n")
    return path


OPTIONS = {  # name -> (arguments (inputs, tmp), words); every one must fail before anything is written
    "infer --out names a folder": (lambda i, t: ("infer", "--checkpoint", i["checkpoint"], "--image", i["image"],
                                                 "--echo", i["echo"], "--out", t), ["--out", "folder"]),
    "infer --device tpu": (lambda i, t: ("infer", "--checkpoint", i["checkpoint"], "--image", i["image"], "--echo",
                                         i["echo"], "--out", t / "d.npy", "--device", "tpu"), ["tpu"]),
    "infer --emission-offset -1": (lambda i, t: ("infer", "--checkpoint", i["checkpoint"], "--image", i["image"],
                                                 "--echo", i["echo"], "--out", t / "d.npy", "--emission-offset", "-1"),
                                   ["--emission-offset"]),
    "train --device tpu": (lambda i, t: TinyBag.train_args(i["bag"], t / "run", t / "cache", "--device", "tpu"),
                           ["tpu"]),
    "train --config that does not parse": (lambda i, t: ("train", "--bag", i["bag"], "--config", broken_yaml(t),
                                                         "--out", t / "run"), ["broken.yaml", "YAML"]),
    "train --config missing": (lambda i, t: ("train", "--bag", i["bag"], "--config", t / "nope.yaml", "--out",
                                             t / "run"), ["nope.yaml", "not found"]),
    "train --lr nan": (lambda i, t: TinyBag.train_args(i["bag"], t / "run", t / "cache", "--lr", "nan"), ["lr"]),
    "train --epochs -1": (lambda i, t: TinyBag.train_args(i["bag"], t / "run", t / "cache", "--epochs", "-1"),
                          ["epochs"]),
    "train --bag missing": (lambda i, t: TinyBag.train_args(t / "nobag", t / "run", t / "cache"), ["nobag"]),
    "evaluate --device tpu": (lambda i, t: ("evaluate", "--bag", i["bag"], "--checkpoint", i["checkpoint"], "--out",
                                            t / "r", "--device", "tpu"), ["tpu"]),
    "evaluate --batch-size 0": (lambda i, t: ("evaluate", "--bag", i["bag"], "--checkpoint", i["checkpoint"], "--out",
                                              t / "r", "--batch-size", "0"), ["--batch-size"]),
    "evaluate --out names a file": (lambda i, t: ("evaluate", "--bag", i["bag"], "--checkpoint", i["checkpoint"],
                                                  "--out", i["echo"]), ["--out", "is a file"]),
    "simulate --out exists": (lambda i, t: ("simulate", "--out", i["bag"]), ["--out", "already exists"]),
    "simulate --rate 0": (lambda i, t: ("simulate", "--out", t / "b", "--rate", "0"), ["--rate"]),
    "simulate --rate nan": (lambda i, t: ("simulate", "--out", t / "b", "--rate", "nan"), ["--rate"]),
    "convert --hfov-deg 0": (lambda i, t: ("convert-batvision", "--root", i["bv2_root"], "--version", "2", "--out",
                                           t / "b", "--hfov-deg", "0"), ["--hfov-deg"]),
    "convert --hfov-deg nan": (lambda i, t: ("convert-batvision", "--root", i["bv2_root"], "--version", "2", "--out",
                                             t / "b", "--hfov-deg", "nan"), ["--hfov-deg"]),
    "convert --intrinsics nan": (lambda i, t: ("convert-batvision", "--root", i["bv2_root"], "--version", "2", "--out",
                                               t / "b", "--intrinsics", "nan,1,1,1"), ["--intrinsics"]),
    "convert --period-s -1": (lambda i, t: ("convert-batvision", "--root", i["bv2_root"], "--version", "2", "--out",
                                            t / "b", "--period-s", "-1"), ["--period-s"]),
    "bag-info --tolerance-s -1": (lambda i, t: ("bag-info", i["bag"], "--tolerance-s", "-1"), ["--tolerance-s"]),
    "gradcam --out not png": (lambda i, t: ("gradcam", "--checkpoint", i["checkpoint"], "--image", i["image"],
                                            "--echo", i["echo"], "--out", t / "g.txt"), ["--out"]),
}


@pytest.mark.parametrize("case", sorted(OPTIONS))
def test_bad_option(cli, inputs, tmp_path, case):
    make, words = OPTIONS[case]
    work = tmp_path / "work"
    work.mkdir()
    result = cli(*make(inputs, work))
    expect_error(result, 2, *words)
    assert snapshot(work) == {}


ROS_OPTIONS = {
    "params file that does not parse": (lambda t: ("bringup", "--sim", "--params-file", broken_yaml(t)),
                                        ["broken.yaml", "YAML"]),
    "params file without ros__parameters": (lambda t: ("bringup", "--params-file", write(t / "p.yaml", "a: 1\n")),
                                            ["p.yaml", "ros__parameters"]),
    "bringup --device tpu": (lambda t: ("bringup", "--sim", "--device", "tpu"), ["tpu"]),
    "bringup --duration 0": (lambda t: ("bringup", "--sim", "--duration", "0"), ["--duration"]),
    "record --duration -1": (lambda t: ("record", "--out", t / "b", "--duration", "-1"), ["--duration"]),
}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", sorted(ROS_OPTIONS))
def test_bad_ros_option(cli, tmp_path, case):
    pytest.importorskip("rclpy")
    make, words = ROS_OPTIONS[case]
    expect_error(cli(*make(tmp_path), ros=True), 2, *words)


def test_resume_with_another_config_changes_nothing_and_plain_resume_works(cli, inputs, tmp_path):
    """The issue's case: `--resume --config OTHER` failed only after overwriting RUN/config.yaml, so the plain --resume
    its own message recommended failed too."""
    args = TinyBag.train_args(inputs["bag"], tmp_path / "run", tmp_path / "cache", "--max-steps", "2",
                              "--set", "train.stop_after_steps=1")
    assert cli(*args).code == 0
    before = snapshot(tmp_path / "run")
    expect_error(cli(*args, "--set", "model.n_bins=8", "--resume"), 2, "do not fit", "own config")
    assert snapshot(tmp_path / "run") == before
    resumed = cli("train", "--bag", inputs["bag"], "--out", tmp_path / "run", "--resume")
    assert resumed.code == 0, resumed.err[-2000:]
