"""Classification tasks: SST-2, CoLA, MRPC from their benchmark files; any CSV/TSV/JSONL; `datasets`."""
from __future__ import annotations

import random
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

from ..errors import SlimformerError, check
from .base import Example, Task
from .files import Row, read_cola_tsv, read_label_text_lines, read_table
from .metrics import compute, per_class_recall

@dataclass
class TaskData(Task):
    """A classification task: named splits of labelled examples, the label names and the metrics to report."""

    name: str
    labels: list[str]
    splits: dict[str, list[Example]]
    metrics: list[str] = field(default_factory=lambda: ["accuracy"])
    kind: ClassVar[str] = "classification"
    head: ClassVar[str] = "AutoModelForSequenceClassification"

    @property
    def is_pair(self) -> bool:
        return any(ex.text_pair is not None for exs in self.splits.values() for ex in exs[:1])

    def model_kwargs(self) -> dict[str, Any]:
        return {"num_labels": len(self.labels), "id2label": dict(enumerate(self.labels)),
                "label2id": {lab: i for i, lab in enumerate(self.labels)}}

    def check_model(self, model: Any, fresh_head: bool = False) -> None:
        n = getattr(getattr(model, "config", None), "num_labels", None)
        check(n == len(self.labels), f"the model has {n} output labels but task {self.name} has {len(self.labels)} "
              f"({', '.join(self.labels[:6])}{', ...' if len(self.labels) > 6 else ''}); fine-tune a model for "
              f"this task first")

    def encode(self, tokenizer: Any, examples: Sequence[Example], max_len: int = 128, with_labels: bool = True) -> Any:
        from ..data import encode_texts

        return encode_texts(tokenizer, examples, max_len, [ex.label for ex in examples] if with_labels else None)

    def predictions(self, model: Any, tokenizer: Any, split: str, max_len: int, max_examples: int | None
                    ) -> tuple[list[int], list[int]]:
        from ..evaluate import predict

        examples = self.split(split)[:max_examples] if max_examples else self.split(split)
        logits = predict(model, tokenizer, examples, max_len, desc=f"eval {self.name}/{split}", task=self)
        return [ex.label for ex in examples], logits.argmax(-1).tolist()

    def evaluate(self, model: Any, tokenizer: Any, split: str = "dev", max_len: int = 128,
                 max_examples: int | None = None) -> dict[str, float]:
        gold, pred = self.predictions(model, tokenizer, split, max_len, max_examples)
        return compute(self.metrics, gold, pred)

    def details(self, model: Any, tokenizer: Any, split: str = "dev", max_len: int = 128,
                max_examples: int | None = None) -> dict[str, Any]:
        gold, pred = self.predictions(model, tokenizer, split, max_len, max_examples)
        return {"per_class_recall": per_class_recall(gold, pred, self.labels)}


ClassificationTask = TaskData


def build_task(
    name: str,
    raw: dict[str, list[tuple[str, str | None, str]]],
    metrics: Sequence[str],
    labels: Sequence[str] | None = None,
) -> TaskData:
    """Turn {split: [(text, text_pair, label_string)]} into TaskData, checking labels and emptiness."""
    check(bool(raw), f"{name}: no data found")
    for split, rows in raw.items():
        check(len(rows) > 0, f"{name}: split '{split}' is empty")
    if labels is None:
        source = raw.get("train") or next(iter(raw.values()))
        found = sorted({r[2] for r in source})
        labels = sorted(found, key=lambda s: (0, float(s)) if _is_number(s) else (1, s))  # type: ignore[arg-type]
    index = {lab: i for i, lab in enumerate(labels)}
    check(len(index) >= 2, f"{name}: need at least 2 labels, found {list(index)}")
    splits: dict[str, list[Example]] = {}
    for split, rows in raw.items():
        exs = []
        for i, (text, pair, lab) in enumerate(rows):
            if lab not in index:
                raise SlimformerError(
                    f"{name}: split '{split}' row {i + 1} has label '{lab}' outside the label set {list(index)}"
                )
            check(isinstance(text, str) and text != "", f"{name}: split '{split}' row {i + 1} has no text")
            exs.append(Example(text=text, label=index[lab], text_pair=pair))
        splits[split] = exs
    return TaskData(name=name, labels=list(labels), splits=splits, metrics=list(metrics))


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


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
