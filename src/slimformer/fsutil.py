"""Filesystem helpers: atomic output directories (guarded by `outputs`) and sizes on disk."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .outputs import WriteError, guard_replace, write_errors, write_failure, write_marker


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, kind: str | None = None, **meta: Any) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces `out` only if the block succeeds.

    An existing `out` is replaced only when `outputs.guard_replace` allows it (empty, an earlier slimformer
    output, or approved with --overwrite); a symbolic link is never written through. The new directory gets
    the slimformer marker (`kind`, default guessed from its files, plus `meta`). A failure to write (disk
    full, read-only) becomes one SlimformerError naming `out`; the temporary directory never stays behind."""
    given = Path(out)
    guard_replace(given)
    out = given.resolve()
    with write_errors(given):
        out.parent.mkdir(parents=True, exist_ok=True)
        recover_killed_writes(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        with write_errors(given):
            yield tmp
            write_marker(tmp, kind or _guess_kind(tmp), **meta)
            _default_modes(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    guard_replace(given)  # the block may have run for hours: check again just before replacing
    old = None
    try:
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException as e:
        if old is not None and not out.exists():
            os.replace(old, out)
        shutil.rmtree(tmp, ignore_errors=True)
        reason = write_failure(e, given) if isinstance(e, Exception) else None
        if reason:
            raise WriteError(f"cannot write {given}: {reason}", reason) from e
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def work_or_temp(work_dir: str | os.PathLike | None, prefix: str) -> Iterator[Path]:
    """`work_dir` as given, or a temporary folder that is removed on exit (training scratch of a Python API call
    made without a work folder: checkpoints there are not worth keeping and must not pile up in /tmp)."""
    if work_dir:
        yield Path(work_dir)
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        yield Path(d)


def recover_killed_writes(out: Path) -> None:
    """Tidy what an atomic_dir of `out` killed by SIGKILL left: its temporary folder is removed and, when it
    died between moving the previous `out` aside and renaming the new one in, the previous one is put back.
    Only folders named with the pid of a process that no longer runs are touched."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(?:(old)-(\d+)|tmp-(\d+)-\w{{8}})")
    try:
        found = [(m, out.parent / m.group(0)) for n in os.listdir(out.parent) if (m := pattern.fullmatch(n))]
    except OSError:
        return
    for m, path in sorted(found, key=lambda f: f[0].group(1) is None):  # put an old output back first
        kind = "old" if m.group(1) else "tmp"
        if _alive(int(m.group(2) or m.group(3))):
            continue
        if kind == "old" and not os.path.lexists(out):
            os.replace(path, out)
        elif path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _guess_kind(d: Path) -> str:
    if (d / "summary.json").is_file():
        return "compress"
    if (d / "model.onnx").is_file():
        return "onnx"
    return "model" if (d / "config.json").is_file() else "output"


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text to path via a temporary file and a rename (the temporary file never stays behind)."""
    path = Path(path)
    with write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _default_modes(root: Path) -> None:
    """Give a temporary output tree the modes a plain write would have (mkdtemp/mkstemp make them private)."""
    mask = _umask()
    os.chmod(root, 0o777 & ~mask)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o777 & ~mask)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o666 & ~mask)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def weights_size(path: str | os.PathLike) -> int:
    """Bytes of the weight files (safetensors/onnx/bin) under path: the model's size on disk."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    exts = {".safetensors", ".onnx", ".bin", ".data", ".pt"}
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and f.suffix in exts)


def sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
