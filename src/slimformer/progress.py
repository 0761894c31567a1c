"""Rich progress bars and console output (stderr); `show` prints tables uncut when not on a terminal."""
from __future__ import annotations

import os
from typing import Any, Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")
console = Console(stderr=True)


def track(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on stderr (disabled with SLIMFORMER_QUIET=1)."""
    if os.environ.get("SLIMFORMER_QUIET"):
        yield from items
        return
    cols = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn())
    with Progress(*cols, console=console, transient=True) as prog:
        yield from prog.track(items, total=total, description=desc)


def show(renderable: Any, con: Console | None = None) -> None:
    """Print a table whole. Not on a terminal rich assumes 80 columns and cuts cells ("0.95…"), so the
    console is widened to the table's natural width for this print."""
    con = con or console
    if con.is_terminal:
        con.print(renderable)
        return
    width = con.measure(renderable, options=con.options.update_width(10_000)).maximum
    old = con.width
    con.width = max(old, width)
    try:
        con.print(renderable)
    finally:
        con.width = old
