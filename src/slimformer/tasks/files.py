"""Readers for the benchmark file formats and for generic CSV / TSV / JSONL with named columns."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterable

from ..errors import SlimformerError, check

Row = tuple[str, "str | None", str]
TEXT_COLUMNS = ("text", "sentence", "sentence1", "question", "premise", "text_a", "#1 String")
PAIR_COLUMNS = ("text_pair", "sentence2", "text_b", "hypothesis", "passage", "#2 String")
LABEL_COLUMNS = ("label", "labels", "Quality", "class", "target")


def require_file(path: Path) -> Path:
    check(path.is_file(), f"data file not found: {path}")
    return path


def read_label_text_lines(path: Path) -> list[Row]:
    """SST-2 style: '<label> <text>' per line."""
    rows = []
    for i, line in enumerate(require_file(path).read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        parts = line.split(" ", 1)
        check(len(parts) == 2 and parts[1].strip() != "", f"{path}:{i + 1}: expected '<label> <text>'")
        rows.append((parts[1].strip(), None, parts[0]))
    return rows


def read_cola_tsv(path: Path) -> list[Row]:
    """CoLA: source, label, original mark, sentence; no header."""
    rows = []
    with require_file(path).open(encoding="utf-8", newline="") as f:
        for i, rec in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)):
            check(len(rec) == 4, f"{path}:{i + 1}: expected 4 tab-separated columns, got {len(rec)}")
            rows.append((rec[3], None, rec[1]))
    return rows


def read_table(
    path: Path,
    text_col: str | None = None,
    pair_col: str | None = None,
    label_col: str | None = None,
) -> list[Row]:
    """CSV, TSV (BOM and unescaped quotes tolerated) or JSONL with named columns."""
    records = list(_records(require_file(path)))
    check(len(records) > 0, f"{path}: no rows")
    cols = list(records[0].keys())
    text_col = text_col or _pick(cols, TEXT_COLUMNS)
    label_col = label_col or _pick(cols, LABEL_COLUMNS)
    if pair_col is None:
        pair_col = next((c for c in PAIR_COLUMNS if c in cols), None)
    for role, col in (("text", text_col), ("label", label_col), ("text pair", pair_col)):
        if col is not None and col not in cols:
            raise SlimformerError(f"{path}: no {role} column '{col}' (columns: {', '.join(cols)})")
    if text_col is None or label_col is None:
        raise SlimformerError(
            f"{path}: cannot tell the text and label columns among {', '.join(cols)}; "
            "name them with --text-col/--label-col"
        )
    rows = []
    for i, r in enumerate(records):
        lab = r.get(label_col)
        check(lab not in (None, ""), f"{path}: row {i + 1} has no label")
        pair = None if pair_col is None else str(r.get(pair_col) or "")
        rows.append((str(r.get(text_col) or ""), pair, _label_str(lab)))
    return rows


def _label_str(v: object) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def _pick(cols: list[str], candidates: Iterable[str]) -> str | None:
    lower = {c.lower(): c for c in cols}
    return next((lower[c.lower()] for c in candidates if c.lower() in lower), None)


def _records(path: Path) -> Iterable[dict]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        for i, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines()):
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SlimformerError(f"{path}:{i + 1}: not a JSON object per line ({e.msg})") from e
                check(isinstance(rec, dict), f"{path}:{i + 1}: expected a JSON object")
                yield rec
        return
    csv.field_size_limit(1 << 26)  # a long text field (64 MB) is truncated by the tokenizer, not refused here
    delim = "," if suffix == ".csv" else "\t"
    with path.open(encoding="utf-8-sig", newline="") as f:
        quoting = csv.QUOTE_MINIMAL if delim == "," else csv.QUOTE_NONE
        reader = csv.DictReader(f, delimiter=delim, quoting=quoting)
        check(reader.fieldnames is not None and len(reader.fieldnames) >= 2, f"{path}: expected a header row")
        for i, rec in enumerate(reader):
            check(None not in rec, f"{path}: row {i + 2} has more fields than the header")
            yield rec
