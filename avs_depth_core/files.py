"""One write policy for every file and folder the project writes (bags, caches, checkpoints, results, figures, depth).

- Atomic: an output is written under a temporary name beside its target (same folder, so the rename is atomic) and
  renamed into place only when complete. A failure, Ctrl-C or kill leaves the previous state, never a half-written file.
- Checked first: before long work starts, the output folder must be writable and hold the space the output will need
  (`check_output`), so a full or read-only disk fails in a second, not after an hour.
- Swept: temporaries carry the host and process id of their writer; `sweep_temporaries` removes those whose process is
  gone (a killed run), and every writer sweeps its folder before it starts.
- Said in one line: write failures are `OutputError`s naming what, where and how to fix it (the command line prints
  them and exits 1; bad input is a ValueError, exit 2).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# .<target name>.<pid>-<host>-<token>.tmp: hidden, so it matches no *.json / *.safetensors / *.npy glob.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-(?P<host>[A-Za-z0-9-]*)-(?P<token>[0-9a-f]{8})\.tmp$")
SPACE_MARGIN = 1.05  # free space wanted over an estimate (file system overhead, metadata, logs)
MIN_FREE_BYTES = 1 << 20
FIGURE_BYTES = 500_000  # a generous PNG figure, for free-space estimates


class OutputError(RuntimeError):
    """A file or folder could not be written (full disk, read-only or missing permission); the message says what, where
    and how to fix it."""


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32]


def temporary_path(target: str | Path) -> Path:
    """A new temporary name beside `target` (a file or a folder), recognisable by `sweep_temporaries`."""
    target = Path(target)
    return target.with_name(f".{target.name}.{os.getpid()}-{_host()}-{secrets.token_hex(4)}.tmp")


def is_temporary(path: Path) -> bool:
    return _TEMPORARY.match(path.name) is not None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_temporaries(folder: str | Path, log: Callable[[str], None] | None = None) -> int:
    """Remove the temporaries in `folder` left by processes of this host that no longer run (killed writers); returns
    how many were removed. Temporaries of live processes and of other hosts (a shared file system) are left alone."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    host, removed = _host(), 0
    try:
        entries = list(folder.iterdir())
    except OSError:
        return 0
    for path in entries:
        match = _TEMPORARY.match(path.name)
        if match is None or match["host"] != host or _process_alive(int(match["pid"])):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue  # another process swept it first
        except OSError:
            continue  # a read-only folder: nothing can be written there either, and check_output says so
        removed += 1
    if removed and log is not None:
        log(f"removed {removed} temporary file(s) left in {folder} by an interrupted run")
    return removed


def describe_os_error(err: OSError, path: str | Path | None = None, option: str = "") -> str:
    """One line: what failed, where, and how to fix it."""
    where = path if path is not None else (err.filename or "output")
    hint = f" or choose another {option}" if option else ""
    code = err.errno
    if code is None and path is not None and free_bytes(path) < MIN_FREE_BYTES:
        code = errno.ENOSPC  # a short write reported without errno (numpy's tofile, some writers): the disk is full
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"{where}: no space left on the device (or file size limit reached); free space there{hint}"
    if code == errno.EROFS:
        return f"{where}: the file system is read-only; remount it writable{hint}"
    if code in (errno.EACCES, errno.EPERM):
        return f"{where}: permission denied; make it writable for this user{hint}"
    return f"{where}: {err.strerror or err}{hint and '; check the disk' + hint}"


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: str | Path) -> int:
    return shutil.disk_usage(_existing_ancestor(Path(path))).free


def check_output(target: str | Path, need_bytes: int = 0, option: str = "--out", *, kind: str = "any") -> None:
    """Before long work: `target`'s folder (the nearest existing one) must take a new file, and hold `need_bytes` plus a
    margin. kind "file": the target must not be a folder; "new": it must not exist at all; "folder": not a file.
    Bad choices are ValueErrors (exit 2); a disk that cannot take the output is an OutputError (exit 1)."""
    target = Path(target)
    if kind == "file" and target.is_dir():
        raise ValueError(f"{option} {target}: is a folder; name a file inside it, e.g. {target / 'out'}")
    if kind == "folder" and target.exists() and not target.is_dir():
        raise ValueError(f"{option} {target}: is a file; name a folder")
    if kind == "new" and target.exists():
        raise ValueError(f"{option} {target}: already exists; remove it or choose another {option}")
    folder = target.parent if kind in ("file", "new") or not target.is_dir() else target
    base = _existing_ancestor(folder)
    if not base.is_dir():
        raise ValueError(f"{option} {target}: {base} is a file, not a folder")
    probe = temporary_path(base / "write-check")
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as err:
        raise OutputError(describe_os_error(err, base, option)) from None
    free = shutil.disk_usage(base).free
    need = int(need_bytes * SPACE_MARGIN) + MIN_FREE_BYTES
    if free < need:
        raise OutputError(f"{base}: {_size(free)} free, {option} {target} needs about {_size(need)}; free space there "
                          f"or choose another {option}")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                fsync_path(p)
    fsync_path(path)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_output(target: str | Path, option: str = "--out", *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `target` to write a file or a folder at; on success it is flushed and renamed to
    `target` (replacing an existing file when `replace`; a folder is never replaced). On any failure, Ctrl-C included,
    the temporary is removed and `target` is as it was. OSErrors become OutputErrors naming `target`. Temporaries that
    killed writers left in the folder are swept first."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(describe_os_error(err, target.parent, option)) from None
    sweep_temporaries(target.parent)
    tmp = temporary_path(target)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"{target}: nothing was written")
        _fsync_tree(tmp)
        if tmp.is_dir() or not replace:
            if target.exists():
                raise ValueError(f"{option} {target}: already exists; remove it or choose another {option}")
            os.rename(tmp, target)
        else:
            os.replace(tmp, target)
        fsync_path(target.parent)
    except OSError as err:
        remove(tmp)
        raise OutputError(describe_os_error(err, target, option)) from None
    except BaseException:
        remove(tmp)
        raise


def write_text(path: str | Path, text: str, option: str = "--out") -> Path:
    with atomic_output(path, option) as tmp:
        tmp.write_text(text)
    return Path(path)


def save_npy(path: str | Path, array: object, option: str = "--out") -> Path:
    import numpy as np

    with atomic_output(path, option) as tmp, tmp.open("wb") as f:
        np.save(f, array, allow_pickle=False)
    return Path(path)


def save_figure(fig: object, path: str | Path, option: str = "--out", **savefig_kwargs: object) -> Path:
    """matplotlib's fig.savefig, atomically; the format comes from `path`'s suffix (the temporary has none)."""
    path = Path(path)
    with atomic_output(path, option) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **savefig_kwargs)  # type: ignore[attr-defined]
    return path


@contextmanager
def staged_outputs(folder: str | Path, option: str = "--out") -> Iterator[Path]:
    """Yield a temporary folder beside `folder` to write a command's outputs in (results, figures/...). On success each
    file in it is moved into `folder` (created if needed; files of the same names replaced, each atomically); on failure
    the staging folder is removed and `folder` is untouched."""
    folder = Path(folder)
    sweep_temporaries(folder.parent)
    sweep_temporaries(folder)
    staging = temporary_path(folder)
    try:
        staging.mkdir(parents=True)
        yield staging
        for src in sorted(p for p in staging.rglob("*") if p.is_file()):
            dst = folder / src.relative_to(staging)
            dst.parent.mkdir(parents=True, exist_ok=True)
            fsync_path(src)
            os.replace(src, dst)
        fsync_path(folder)
    except OSError as err:
        raise OutputError(describe_os_error(err, folder, option)) from None
    finally:
        remove(staging)


def allocate_npy(path: str | Path, dtype: object, shape: tuple[int, ...], option: str = "--cache-dir") -> object:
    """A new .npy file opened as a writable memory map, its blocks reserved on the disk first (posix_fallocate). A memory
    map written past the free space of its disk kills the process with SIGBUS ("Bus error"); reserved up front, a full
    disk is an OutputError here instead, before anything is decoded into it."""
    import numpy as np

    path = Path(path)
    try:
        array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        with path.open("r+b") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, path.stat().st_size)
            except OSError as err:
                if err.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
                # this file system cannot reserve blocks: the free-space check made before the build has to do
    except OSError as err:
        raise OutputError(describe_os_error(err, path.parent, option)) from None
    return array
