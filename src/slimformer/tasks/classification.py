"""Classification tasks: SST-2, CoLA, MRPC from their benchmark files; any CSV/TSV/JSONL; `datasets`."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable

from ..errors import SlimformerError, check
from .base import TaskData, build_task
from .files import Row, read_cola_tsv, read_label_text_lines, read_table

SPLIT_ALIASES = {"validation": "dev", "val": "dev", "valid": "dev", "dev": "dev", "train": "train", "test": "test"}
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


def _dir(data: str | Path, task: str) -> Path:
    p = Path(data).expanduser()
    check(p.exists(), f"{task}: data path not found: {p}")
    return p


def load_sst2(data: str | Path, **_: Any) -> TaskData:
    d = _dir(data, "sst2")
    raw = {s: read_label_text_lines(d / f"stsa.binary.{s}") for s in ("train", "dev", "test")}
    return build_task("sst2", raw, ["accuracy"], labels=["0", "1"])


def load_cola(data: str | Path, **_: Any) -> TaskData:
    d = _dir(data, "cola")
    ind, ood = read_cola_tsv(d / "in_domain_dev.tsv"), read_cola_tsv(d / "out_of_domain_dev.tsv")
    raw = {"train": read_cola_tsv(d / "in_domain_train.tsv"), "dev": ind + ood, "in_domain_dev": ind,
           "out_of_domain_dev": ood}
    return build_task("cola", raw, ["mcc", "accuracy"], labels=["0", "1"])


def load_mrpc(data: str | Path, **_: Any) -> TaskData:
    d = _dir(data, "mrpc")
    raw = {
        "train": read_table(d / "glue_train.tsv"),
        "dev": read_table(d / "glue_dev.tsv"),
        "test": read_table(d / "msr_paraphrase_test.txt"),
    }
    return build_task("mrpc", raw, ["accuracy", "f1"], labels=["0", "1"])


def load_table_task(
    data: str | Path,
    text_col: str | None = None,
    pair_col: str | None = None,
    label_col: str | None = None,
    metrics: list[str] | None = None,
    name: str = "classification",
    **_: Any,
) -> TaskData:
    """A directory of train/dev/test tables (csv, tsv, jsonl), a `datasets` directory, a single table, or hf:ID."""
    s = str(data)
    if s.startswith("hf:"):
        raw = _from_datasets(s[3:], text_col, pair_col, label_col)
    else:
        p = _dir(data, name)
        if p.is_dir() and ((p / "dataset_dict.json").exists() or (p / "dataset_info.json").exists()):
            raw = _from_datasets(str(p), text_col, pair_col, label_col)
        elif p.is_dir():
            raw = {}
            for f in sorted(p.iterdir()):
                split = SPLIT_ALIASES.get(f.stem.lower())
                if split and f.suffix.lower() in TABLE_SUFFIXES:
                    check(split not in raw, f"{p}: more than one file for split '{split}'")
                    raw[split] = read_table(f, text_col, pair_col, label_col)
            check(bool(raw), f"{p}: no train/dev/test .csv/.tsv/.jsonl files")
        else:
            check(p.suffix.lower() in TABLE_SUFFIXES, f"{p}: expected a .csv, .tsv or .jsonl file")
            raw = {"train": read_table(p, text_col, pair_col, label_col)}
    check("train" in raw, f"{name}: no train split in {data}")
    if not any(k in raw for k in ("dev", "test")):
        raw = _carve_dev(raw["train"])
    return build_task(name, raw, metrics or ["accuracy", "macro_f1"])


def _carve_dev(rows: list[Row], share: float = 0.1, seed: int = 0) -> dict[str, list[Row]]:
    """A deterministic dev split carved from train when the data has none."""
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    n_dev = max(1, int(len(rows) * share))
    check(len(rows) - n_dev > 0, "need at least 2 training rows to carve a dev split")
    dev = set(idx[:n_dev])
    return {"train": [r for i, r in enumerate(rows) if i not in dev], "dev": [rows[i] for i in sorted(dev)]}


def _from_datasets(ref: str, text_col: str | None, pair_col: str | None, label_col: str | None) -> dict[str, list[Row]]:
    import datasets

    from .files import LABEL_COLUMNS, PAIR_COLUMNS, TEXT_COLUMNS, _label_str, _pick

    try:
        if Path(ref).exists():
            ds = datasets.load_from_disk(ref)
        else:
            name, _, config = ref.partition("/") if ref.count("/") == 1 and ref.split("/")[0] == "glue" else (ref, "", "")
            ds = datasets.load_dataset(name, config or None)
    except Exception as e:  # datasets raises many types; the user needs one line
        raise SlimformerError(f"cannot load dataset {ref}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    if isinstance(ds, datasets.Dataset):
        ds = datasets.DatasetDict({"train": ds})
    raw: dict[str, list[Row]] = {}
    for split, table in ds.items():
        cols = table.column_names
        tc, lc = text_col or _pick(cols, TEXT_COLUMNS), label_col or _pick(cols, LABEL_COLUMNS)
        pc = pair_col or next((c for c in PAIR_COLUMNS if c in cols), None)
        if tc not in cols or lc not in cols:
            raise SlimformerError(f"dataset {ref} split {split}: cannot find text/label columns in {cols}")
        rows = [(str(r[tc]), None if pc is None else str(r[pc]), _label_str(r[lc])) for r in table]
        rows = [r for r in rows if r[2] != "-1"]  # GLUE marks unlabeled test rows with -1
        if rows:
            raw[SPLIT_ALIASES.get(split, split)] = rows
    return raw


LOADERS: dict[str, Callable[..., TaskData]] = {
    "sst2": load_sst2,
    "cola": load_cola,
    "mrpc": load_mrpc,
    "classification": load_table_task,
}


def load(task: str, data: str | Path, **options: Any) -> TaskData:
    """Load a task by name: sst2, cola, mrpc (benchmark files) or classification (generic tables/datasets)."""
    key = task.lower().replace("-", "")
    if key not in LOADERS:
        raise SlimformerError(f"unknown task '{task}' (known: {', '.join(LOADERS)})")
    return LOADERS[key](data, **options)
