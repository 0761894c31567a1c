"""Unlabelled sentences for embedding distillation, importance scoring and vocabulary pruning.

A source is a plain text file (one sentence per line: `.txt`, Multi30k's `train.en`, ...), a folder of
`.txt` files, STS-B's `sts-*.csv` (both sentences of every pair), or a CSV / TSV / JSONL table whose
text column(s) are named by `column` or recognised by name (text, sentence1, sentence2, ...).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from ..errors import check
from .files import PAIR_COLUMNS, TEXT_COLUMNS, _records

TABLES = (".csv", ".tsv", ".jsonl", ".json")


def read_sentences(paths: Sequence[str | Path], column: str | None = None, max_sentences: int | None = None,
                   seed: int = 42) -> list[str]:
    """Distinct non-empty sentences of every source in order (a seeded sample of max_sentences if more)."""
    check(len(paths) > 0, "sentences: no text source given")
    seen: dict[str, None] = {}
    for p in paths:
        for s in _one(Path(p).expanduser(), column):
            s = s.strip()
            if s:
                seen.setdefault(s, None)
    out = list(seen)
    check(bool(out), f"sentences: no text in {', '.join(str(p) for p in paths)}")
    if max_sentences and max_sentences < len(out):
        out = random.Random(seed).sample(out, max_sentences)
    return out


def _one(path: Path, column: str | None) -> list[str]:
    from .text import read_text

    check(path.exists(), f"sentences: text source not found: {path}")
    if path.is_dir() or path.suffix.lower() not in TABLES:
        return read_text(path)
    first = path.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
    if path.suffix.lower() in (".csv", ".tsv") and first.count("\t") >= 6 and column is None:  # STS-B
        from .similarity import read_stsb

        return [t for ex in read_stsb(path) for t in (ex.text, ex.text_pair)]
    records = list(_records(path))
    check(bool(records), f"{path}: no rows")
    cols = list(records[0])
    if column is not None:
        check(column in cols, f"{path}: no text column '{column}' (columns: {', '.join(cols)})")
        names = [column]
    else:
        lower = {c.lower(): c for c in cols}
        names = [lower[c.lower()] for c in (*TEXT_COLUMNS, *PAIR_COLUMNS) if c.lower() in lower]
        check(bool(names), f"{path}: no text column among {', '.join(cols)}; name it with text_column")
    return [r[c] for r in records for c in names if isinstance(r.get(c), str)]
