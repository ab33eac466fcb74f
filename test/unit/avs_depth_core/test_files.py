"""The write policy (avs_depth_core.files): atomic outputs, checks before work, sweeping killed runs' temporaries."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import numpy as np
import pytest

from avs_depth_core import files


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    target = files.write_text(tmp_path / "a.json", "old")
    with pytest.raises(KeyboardInterrupt), files.atomic_output(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]
    files.save_npy(tmp_path / "d.npy", np.arange(3.0))
    assert np.load(tmp_path / "d.npy").tolist() == [0.0, 1.0, 2.0]


def test_a_folder_is_never_replaced(tmp_path):
    (tmp_path / "bag").mkdir()
    with pytest.raises(ValueError, match="already exists"), files.atomic_output(tmp_path / "bag") as tmp:
        tmp.mkdir()
    assert [p.name for p in tmp_path.iterdir()] == ["bag"]


def test_sweep_removes_only_temporaries_of_dead_processes(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    mine = files.temporary_path(tmp_path / "x.json")
    theirs = mine.with_name(mine.name.replace(f".{os.getpid()}-", f".{dead_pid}-"))
    other_host = mine.with_name(mine.name.replace(f".{os.getpid()}-", f".{dead_pid}-x"))
    for path in (mine, theirs, other_host):
        path.write_text("")
    (tmp_path / "data.tmp").write_text("")  # not ours
    (theirs.with_name(theirs.name + "-dir")).mkdir()
    assert files.sweep_temporaries(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other_host.name, "data.tmp",
                                                                 theirs.name + "-dir"])


def test_check_output_says_what_where_and_how(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="is a folder"):
        files.check_output(tmp_path, kind="file")
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="--out .*already exists"):
        files.check_output(tmp_path / "f", kind="new")
    with pytest.raises(files.OutputError, match=r"free, --out .* needs about .*free space there or choose another --out"):
        files.check_output(tmp_path / "new", need_bytes=1 << 60, kind="new")
    files.check_output(tmp_path / "deep" / "er" / "out.npy", 10, kind="file")  # nearest existing folder is checked
    assert not (tmp_path / "deep").exists()


def test_describe_os_error():
    assert "no space left" in files.describe_os_error(OSError(errno.ENOSPC, "x"), "/d", "--out")
    assert "read-only" in files.describe_os_error(OSError(errno.EROFS, "x"), "/d", "--out")
    assert "permission denied" in files.describe_os_error(OSError(errno.EACCES, "x"), "/d", "--out")


def test_staged_outputs_all_or_nothing(tmp_path):
    out = tmp_path / "results"
    with pytest.raises(RuntimeError), files.staged_outputs(out) as staging:
        (staging / "results.json").write_text("{}")
        raise RuntimeError("evaluation failed")
    assert list(tmp_path.iterdir()) == []
    with files.staged_outputs(out) as staging:
        (staging / "figures").mkdir()
        (staging / "figures" / "a.png").write_bytes(b"png")
        (staging / "results.json").write_text("{}")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["figures", "figures/a.png", "results.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["results"]
