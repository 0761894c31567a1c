"""Helpers for the command-line tests: run the CLI (subprocess or in this process), hash a tree, check errors."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import slimformer

SRC = str(Path(slimformer.__file__).resolve().parents[1])  # subprocesses run this source, from any directory
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "SLIMFORMER_QUIET": "1",
       "PYTHONPATH": os.pathsep.join([SRC, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])}


def cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -m slimformer ARGS` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "slimformer", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=600)


def invoke(capsys, *args: object) -> tuple[int, str]:
    """Run the CLI in this process (so a test can monkeypatch it): (exit code, stderr)."""
    from slimformer.cli import app
    from slimformer.entry import run

    with pytest.raises(SystemExit) as e:
        run(app, [str(a) for a in args])
    return e.value.code, capsys.readouterr().err


def snapshot(root: Path) -> dict[str, str]:
    """Hash of every file (and target of every link) under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


def assert_refused(res: subprocess.CompletedProcess, pattern: str, code: int = 1) -> None:
    """stderr is exactly one line, `error: ...` containing pattern; the exit code is `code`."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and pattern in lines[0], res.stderr


def one_error(err: str, pattern: str) -> str:
    """The single `error:` line of stderr (progress output may precede it), containing pattern."""
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and pattern in errors[0] and "Traceback" not in err, err
    return errors[0]
