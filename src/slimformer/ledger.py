"""The run ledger: one JSON row per finished stage in `ledger.jsonl`, written so an interruption loses at most
the row being written.

Rows are appended with flush + fsync. Reading stops at the first line that is not a whole row: a torn last
line (an interrupted append) is ignored with a warning; garbage before other rows ends the ledger there (the
rows after it cannot be trusted to follow from it). `rewrite` then puts the file back to exactly the rows
kept, so the next append starts on a line of its own.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .fsutil import atomic_write_text


def _line(row: dict[str, Any]) -> str:
    return json.dumps(row, default=str) + "\n"


def append(path: Path, row: dict[str, Any]) -> None:
    """Add row as one line, on disk when this returns."""
    with path.open("a") as f:
        f.write(_line(row))
        f.flush()
        os.fsync(f.fileno())


def rewrite(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace the ledger with rows (atomically)."""
    atomic_write_text(path, "".join(_line(r) for r in rows))


def read(path: Path) -> list[dict[str, Any]]:
    """The whole rows at the start of the ledger (none when it does not exist); says what it ignored."""
    from .progress import console

    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    rows: list[dict[str, Any]] = []
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            row = None
        if isinstance(row, dict):
            rows.append(row)
            continue
        if not any(rest.strip() for rest in lines[n:]):
            console.print(f"[yellow]warning: ignoring the torn last line of {path} (line {n}, an interrupted "
                          f"write); resuming from the last whole row[/]", soft_wrap=True)
        else:
            console.print(f"[yellow]warning: {path} line {n} is not a ledger row; ignoring it and the "
                          f"{sum(1 for rest in lines[n:] if rest.strip())} line(s) after it[/]", soft_wrap=True)
        break
    return rows
