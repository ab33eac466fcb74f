"""Fixtures of the fault-injection suite; the tools themselves are in fault_tools.py (importable by the tests)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_tools import Disk, Result, TinyBag, tiny_avsnet_checkpoint

from avs_depth_core.cli import main


@pytest.fixture
def make_disk(tmp_path: Path) -> Iterator:
    """make_disk(kind, size_bytes) -> Disk: "full" (a disk of that size) or "read-only"; unmounted after the test."""
    disks: list[Disk] = []

    def make(kind: str, size_bytes: int = 256 << 10) -> Disk:
        disks.append(Disk(tmp_path / f"{kind}-{len(disks)}", kind, size_bytes))
        return disks[-1]

    try:
        yield make
    finally:
        for disk in disks:
            disk.close()




@pytest.fixture
def full_disk(make_disk) -> Disk:
    """A 256 KB disk: room for the small files a command checks or writes first, not for its output."""
    return make_disk("full")




@pytest.fixture
def read_only_disk(make_disk) -> Disk:
    return make_disk("read-only", 1 << 20)




@pytest.fixture
def no_precheck(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch off the free-space/writability checks made before work, to fault the writes themselves."""
    from avs_depth_core import files

    monkeypatch.setattr(files, "check_output", lambda *args, **kwargs: None)




@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory, bv2_sample: Path) -> dict[str, Path]:
    """Good inputs on a good disk: a tiny bag, a tiny checkpoint, the BatVision V2 sample as a converter root (two rows,
    symlinked, read in place) and its image and echo."""
    folder = tmp_path_factory.mktemp("inputs")
    root = folder / "bv2"
    for sub, name in (("camera", "camera_47.jpeg"), ("depth", "depth_47.npy"), ("audio", "audio_47.wav")):
        (root / "Hall" / sub).mkdir(parents=True)
        (root / "Hall" / sub / name).symlink_to(bv2_sample / name)
    row = "Hall/depth,depth_47.npy,Hall/audio,audio_47.wav,Hall/camera,camera_47.jpeg"
    (root / "Hall" / "train.csv").write_text(
        "depth path,depth file name,audio path,audio file name,camera path,camera file name\n" + f"{row}\n{row}\n")
    return {"bag": TinyBag.write(folder / "bag"), "checkpoint": tiny_avsnet_checkpoint(folder / "ckpt" / "avsnet"),
            "bv2_root": root, "image": bv2_sample / "camera_47.jpeg", "echo": bv2_sample / "audio_47.wav"}




@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run `avs-depth ARGS` (or `avs-depth-ros ARGS` with ros=True) in this process; returns a Result."""
    def run(*args: object, ros: bool = False) -> Result:
        if ros:
            from avs_depth_ros.cli import main as ros_main

            code = ros_main([str(a) for a in args])
        else:
            code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run
