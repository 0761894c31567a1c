"""Output safety: which paths slimformer may create or replace, so that it never loses a user's file.

Every directory slimformer writes holds a marker, `.slimformer-output` (JSON: tool, version, kind and the
names it wrote). An existing output path may be replaced only when it is an empty directory or an earlier
slimformer output holding nothing but slimformer's files, or when the user passed `--overwrite`. Never,
not even with `--overwrite`: a path that is, contains or lies inside an input; a symbolic link; a file
where a directory is expected (or the reverse); a path below a regular file; a directory holding the
current or home directory. `check_output` applies this before any expensive work; `fsutil.atomic_dir`
applies it again at the moment of writing, so the Python API is protected too.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

from .errors import SlimformerError

MARKER = ".slimformer-output"
# files slimformer adds to an output after writing it (finetune stats, `slimformer report`)
ADDED_LATER = frozenset({"train_stats.json", "report.md", "report.png", "comparison.md", "comparison.png"})
WAY_OUT = "pass --overwrite to replace it, or choose a new or empty directory"
_APPROVED: set[str] = set()  # real paths the user allowed to be replaced (--overwrite)

Kind = Literal["dir", "file", "container"]


class WriteError(SlimformerError):
    """A failure to write an output (disk full, read-only, no permission); `reason` is the OS's words."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def read_marker(path: str | os.PathLike) -> dict[str, Any] | None:
    """The marker of a slimformer output directory, or None."""
    p = Path(path) / MARKER
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("tool") == "slimformer" else None


def write_marker(path: str | os.PathLike, kind: str, **meta: Any) -> None:
    """Mark directory `path` as slimformer's, listing the names it holds now."""
    from . import __version__

    names = sorted(n for n in os.listdir(path) if n != MARKER)
    data = {"tool": "slimformer", "version": __version__, "kind": kind, "files": names, **meta}
    Path(path, MARKER).write_text(json.dumps(data, indent=1) + "\n")


def mark_folder(path: str | os.PathLike, kind: str) -> None:
    """Create the folder slimformer fills with several outputs (the demo's) and mark it when it is new or
    empty; its marker lists no files, so the folder as a whole is never replaced without --overwrite."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    if not os.listdir(p):
        write_marker(p, kind)


def replace_refusal(path: str | os.PathLike) -> str | None:
    """Why the existing directory `path` must not be replaced without --overwrite (None: it may be)."""
    p = Path(path)
    if os.path.islink(p):
        return "is a symbolic link"
    if not p.exists():
        return None
    if not p.is_dir():
        return "is not a directory"
    names = set(os.listdir(p))
    if not names:
        return None
    marker = read_marker(p)
    if marker is None:
        return "is a non-empty directory that is not a slimformer output"
    foreign = sorted(names - {MARKER} - set(marker.get("files") or []) - ADDED_LATER)
    if foreign:
        return f"holds files slimformer did not write ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''})"
    return None


def approved(path: str | os.PathLike) -> bool:
    """True when the user allowed `path` to be replaced (check_output with overwrite=True)."""
    return os.path.realpath(path) in _APPROVED


def guard_replace(path: str | os.PathLike) -> None:
    """Raise SlimformerError unless the directory `path` may be replaced (used by fsutil.atomic_dir)."""
    if os.path.islink(path):
        raise SlimformerError(f"{path} is a symbolic link: refusing to write through it; name a real path")
    reason = replace_refusal(path)
    if reason and not approved(path):
        raise SlimformerError(f"{path} {reason}: {WAY_OUT}")


def check_output(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (), overwrite: bool = False,
                 kind: Kind = "dir", flag: str = "--out", replaceable: bool = False) -> Path:
    """Refuse an output path that could lose a user's file; returns its real path.

    kind: "dir" (a directory replaced as a whole), "file" (a file replaced as a whole) or "container" (a
    directory slimformer adds its own named files to). `inputs` are the paths read by the command (model,
    data, recipe; names that are not existing paths are ignored). `replaceable`: the caller knows an
    existing file is slimformer's own. Call it before any expensive work."""
    given = str(out)
    p = Path(os.path.abspath(Path(out).expanduser()))
    _check_ancestors(p, given)
    if os.path.islink(p):
        raise SlimformerError(f"{flag} {given} is a symbolic link: refusing to write through it; name a real path")
    real = Path(os.path.realpath(p))
    for inp in inputs:
        _check_not_input(real, inp, given, flag)
    if kind != "container":
        for keep in (Path.cwd(), Path.home(), Path("/")):
            k = Path(os.path.realpath(keep))
            if real == k or real in k.parents:
                raise SlimformerError(f"{flag} {given} holds {keep}: refusing to replace it; choose another path")
    if p.exists():
        _check_existing(p, given, kind, flag, overwrite or replaceable)
    _probe_writable(p if kind == "container" and p.is_dir() else _existing_ancestor(p.parent), given)
    if overwrite:
        _APPROVED.add(str(real))
    return real


def check_work_dir(work: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> None:
    """A work directory (checkpoints of a resumable run) must not be, hold or lie inside an input."""
    real = Path(os.path.realpath(work))
    for inp in inputs:
        _check_not_input(real, inp, str(work), "work directory")


def _check_ancestors(p: Path, given: str) -> None:
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SlimformerError(f"cannot write {given}: {parent} is a file, not a directory")
            return


def _existing_ancestor(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_not_input(real: Path, inp: str | os.PathLike | None, given: str, flag: str) -> None:
    if inp is None or not os.path.exists(os.path.expanduser(str(inp))):
        return
    ir = Path(os.path.realpath(os.path.expanduser(str(inp))))
    if real == ir:
        raise SlimformerError(f"{flag} {given} is the input {inp} (the output must differ from the input)")
    if real in ir.parents:
        raise SlimformerError(f"{flag} {given} contains the input {inp}: refusing to replace it (even with "
                              f"--overwrite); choose another path")
    if ir.is_dir() and ir in real.parents:
        raise SlimformerError(f"{flag} {given} is inside the input {inp}: choose a path outside it")


def _check_existing(p: Path, given: str, kind: Kind, flag: str, may_replace: bool) -> None:
    if kind == "file":
        if p.is_dir():
            raise SlimformerError(f"{flag} {given} is a directory, not a file: name the file to write")
        if not p.is_file():
            raise SlimformerError(f"{flag} {given} is not a regular file: choose another path")
        if not may_replace:
            raise SlimformerError(f"{flag} {given} exists: pass --overwrite to replace it, or choose a new file name")
        return
    if not p.is_dir():
        raise SlimformerError(f"{flag} {given} is a file, not a directory: choose a directory path")
    if kind == "container":
        if os.listdir(p) and read_marker(p) is None and not may_replace:
            raise SlimformerError(f"{flag} {given} is a non-empty directory that is not a slimformer output: "
                                  f"pass --overwrite to write into it, or choose a new or empty directory")
        return
    reason = replace_refusal(p)
    if reason and not may_replace:
        raise SlimformerError(f"{flag} {given} {reason}: {WAY_OUT}")


def _probe_writable(directory: Path, given: str) -> None:
    """Create and delete a file in `directory` so an unwritable destination fails now, not after training."""
    try:
        fd, name = tempfile.mkstemp(prefix=".slimformer-probe-", dir=directory)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        reason = e.strerror or str(e)
        raise WriteError(f"cannot write {given}: {reason}", reason) from e


# --- failures while writing ---------------------------------------------------------------------------
DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG}  # only ever a failure to write
ACCESS_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOTDIR}  # a write failure when it names the output
_WRITE_TEXTS = ("No space left on device", "Read-only file system", "Disk quota exceeded", "file write failed")


def write_failure(exc: BaseException, out: str | os.PathLike | None = None) -> str | None:
    """The reason when exc is a failure to write (disk full, read-only, no permission on `out` or its
    temporary/work siblings), else None. Also recognises the messages of libraries that wrap the OSError
    (safetensors, torch.save)."""
    for e in (exc, exc.__cause__, exc.__context__):
        if isinstance(e, OSError) and e.errno is not None:
            if e.errno in DISK_ERRNOS or (e.errno in ACCESS_ERRNOS and out is not None
                                          and _names_output(e.filename, out)):
                return e.strerror or os.strerror(e.errno)
        elif e is not None:
            text = str(e)
            for t in _WRITE_TEXTS:
                if t in text:
                    return t
    return None


def _names_output(filename: Any, out: str | os.PathLike) -> bool:
    """True when filename is `out`, inside it, or inside one of its hidden siblings `.{name}.*`."""
    if not filename:
        return False
    f = Path(os.path.abspath(os.fsdecode(filename)))
    o = Path(os.path.abspath(out))
    return f == o or o in f.parents or any(
        p.parent == o.parent and p.name.startswith(f".{o.name}.") for p in (f, *f.parents))


@contextlib.contextmanager
def write_errors(out: str | os.PathLike, cleanup: Iterable[str | os.PathLike] = ()) -> Iterator[None]:
    """Turn a failure to write inside the block into one SlimformerError naming `out`; on such a failure,
    remove the `cleanup` directories (partial work that would keep the disk full)."""
    try:
        yield
    except Exception as e:
        if isinstance(e, WriteError):
            reason: str | None = e.reason
        else:
            reason = None if isinstance(e, SlimformerError) else write_failure(e, out)
        if reason is None:
            raise
        removed = [str(d) for d in cleanup if os.path.isdir(d)]
        for d in removed:
            shutil.rmtree(d, ignore_errors=True)
        extra = f" (removed the partial work in {', '.join(removed)})" if removed else ""
        raise WriteError(f"cannot write {out}: {reason}{extra}", reason) from e
