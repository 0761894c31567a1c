"""Task data: examples, label sets, splits, and the task's metrics."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from ..errors import SlimformerError, check


@dataclass(frozen=True)
class Example:
    text: str
    label: int
    text_pair: str | None = None


@dataclass
class TaskData:
    """A classification task: named splits of examples, the label names and the metrics to report."""

    name: str
    labels: list[str]
    splits: dict[str, list[Example]]
    metrics: list[str] = field(default_factory=lambda: ["accuracy"])
    kind: str = "classification"

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    @property
    def is_pair(self) -> bool:
        return any(ex.text_pair is not None for exs in self.splits.values() for ex in exs[:1])

    def split(self, name: str) -> list[Example]:
        if name not in self.splits:
            raise SlimformerError(f"task {self.name} has no split '{name}' (has: {', '.join(self.splits)})")
        return self.splits[name]

    def eval_split(self, preferred: str = "dev") -> str:
        for name in (preferred, "dev", "validation", "test"):
            if name in self.splits:
                return name
        raise SlimformerError(f"task {self.name} has no dev/validation/test split")


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
