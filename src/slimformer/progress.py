"""Rich progress bars and console output; quiet when not attached to a terminal and SLIMFORMER_QUIET is set."""
from __future__ import annotations

import os
from typing import Iterable, Iterator, TypeVar

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
