"""The fault-injection suite's tools: disks that are full or read-only, the command line run in-process (one-line errors
checked) or as a child process (for signals), snapshots to prove nothing changed, and small inputs to break.

Full disk: a tmpfs of a few hundred KB mounted inside the test where it runs as root (CI), so writes fail with ENOSPC
exactly as on a full disk; elsewhere an RLIMIT_FSIZE limit on this process (SIGXFSZ ignored), so a write past the
limit fails with EFBIG. Read-only: a tmpfs mounted read-only as root (root ignores permission bits), a chmod 0555
folder otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0


def _load_unit_helpers():  # TinyBag and the tiny checkpoint of test/unit/conftest.py, reused rather than copied
    spec = importlib.util.spec_from_file_location("unit_helpers", ROOT / "test" / "unit" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


UNIT = _load_unit_helpers()
TinyBag = UNIT.TinyBag
tiny_avsnet_checkpoint = UNIT.tiny_avsnet_checkpoint


# ------------------------------------------------------------------------------------------------------------ disks
def _mount(path: Path, options: str) -> bool:
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    return proc.returncode == 0


class Disk:
    """A folder on a faulty disk. `fault()` wraps the command under test; `fix()` frees space / makes it writable, as a
    user would before the rerun."""

    def __init__(self, path: Path, kind: str, size_bytes: int) -> None:
        self.path, self.kind, self.size_bytes = path, kind, size_bytes
        path.mkdir(parents=True)
        self.mounted = IS_ROOT and _mount(path, f"size={size_bytes}" + (",ro" if kind == "read-only" else ""))
        self.method = ("tmpfs" if self.mounted else
                       "RLIMIT_FSIZE" if kind == "full" else "chmod 0555")
        if not self.mounted and kind == "read-only":
            if IS_ROOT:
                pytest.skip("root ignores permission bits and could not mount a read-only tmpfs here")
            path.chmod(0o555)

    @contextmanager
    def fault(self) -> Iterator[None]:
        if self.mounted or self.kind != "full":
            yield
            return
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.size_bytes, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, previous)

    def fix(self, size_bytes: int = 512 << 20) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", f"remount,rw,size={size_bytes}", str(self.path)], check=True)
        elif self.kind == "read-only":
            self.path.chmod(0o755)

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False)
        elif self.kind == "read-only":
            self.path.chmod(0o755)


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def error_line(self) -> str:
        """The one error line; the test fails if there is a traceback or more than one error line."""
        assert "Traceback" not in self.err, self.err
        lines = [line for line in self.err.replace("\r", "\n").splitlines() if "error:" in line]
        assert len(lines) == 1, f"expected one error line, got {lines}\n{self.err[-2000:]}"
        return lines[0]


def expect_error(result: Result, code: int, *words: str) -> str:
    """The command failed with `code` and one error line holding every one of `words`."""
    line = result.error_line()
    assert result.code == code, f"exit code {result.code}, expected {code}: {line}"
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"
    print(f"error line: {line}")  # shown by pytest -rA: the messages users get, for review
    return line


def child_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


class Child:
    """`avs-depth ARGS` (or another module's CLI) as a child process, its output (stdout and stderr) collected."""

    def __init__(self, *args: object, module: str = "avs_depth_core.cli", env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", module, *map(str, args)], env=env or child_env(), cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.output = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:  # os.read returns what is there, so a short line shows at once
        for chunk in iter(lambda: os.read(self.proc.stdout.fileno(), 4096), b""):
            self.output += chunk.decode(errors="replace")

    def wait_for(self, marker: str, timeout_s: float) -> bool:
        """True once `marker` appeared in the output; False if the process ended (or time ran out) first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if marker in self.output:
                return True
            if self.proc.poll() is not None:
                return marker in self.output
            time.sleep(0.02)
        return False

    def finish(self, timeout_s: float = 120.0) -> int:
        code = self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout=5.0)
        return code


# --------------------------------------------------------------------------------------------------------- checks
def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time: equal snapshots mean nothing changed."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def temporaries(folder: Path) -> list[str]:
    """Temporaries of the write policy (avs_depth_core.files) anywhere under `folder`."""
    from avs_depth_core.files import is_temporary

    return sorted(str(p) for p in folder.rglob("*") if is_temporary(p)) if folder.exists() else []
