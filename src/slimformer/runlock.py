"""One run per output: an exclusive `flock` on `lock` in the run's work directory (`.OUT.work/`, `.OUT.train/`).

A second run on the same output fails at once with one line naming the holder's pid. The lock is the
kernel's: it goes with the process (even killed with SIGKILL), so a lock file left behind by a dead run
never blocks anyone. Taking it again in the same process nests (the CLI and `recipe.compress` both take
it). Under torchrun only rank 0 takes it, for the whole group.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from .errors import SlimformerError

LOCK = "lock"
_held: dict[str, int] = {}  # lock file path -> how many nested holders in this process


@contextlib.contextmanager
def run_lock(work: str | os.PathLike, out: str | os.PathLike) -> Iterator[None]:
    """Hold the lock of the work directory `work` (created if missing) while the block runs."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    path = os.path.join(os.path.realpath(work), LOCK)
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    fd = _acquire(Path(path), out)
    _held[path] = 1
    try:
        yield
    finally:
        del _held[path]
        _tidy(Path(path))
        os.close(fd)  # releases the lock; the file itself may already be gone with the work directory


def _acquire(path: Path, out: str | os.PathLike) -> int:
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:  # the work directory was removed between mkdir and open: again
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _pid(fd)
            os.close(fd)
            raise SlimformerError(f"another slimformer run is using {out}{f' (pid {pid})' if pid else ''}: wait "
                                  f"for it to finish, or choose another output") from None
        if _same_file(fd, path):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # we locked a file its holder removed (with its work directory) as it finished: again


def _tidy(path: Path) -> None:
    """Remove a work directory that holds nothing but the lock (a run that failed before any work)."""
    try:
        if os.listdir(path.parent) == [LOCK]:
            path.unlink()
            path.parent.rmdir()
    except OSError:
        pass


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return text if text.isdigit() else ""


def clear_work_dir(work: str | os.PathLike) -> None:
    """Empty a work directory (`--restart`) but keep its lock file, which the running process holds."""
    import shutil

    w = Path(work)
    if not w.is_dir():
        return
    for p in w.iterdir():
        if p.name == LOCK:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
