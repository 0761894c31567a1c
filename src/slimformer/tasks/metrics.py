"""Task metrics through scikit-learn."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from ..errors import SlimformerError


def _f1(labels: np.ndarray, preds: np.ndarray) -> float:
    if len(set(labels.tolist()) | set(preds.tolist())) <= 2:
        return float(f1_score(labels, preds, average="binary", pos_label=1, zero_division=0))
    return float(f1_score(labels, preds, average="macro", zero_division=0))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda y, p: float(accuracy_score(y, p)),
    "f1": _f1,
    "macro_f1": lambda y, p: float(f1_score(y, p, average="macro", zero_division=0)),
    "mcc": lambda y, p: float(matthews_corrcoef(y, p)),
}


def compute(metrics: Sequence[str], labels: Sequence[int], preds: Sequence[int]) -> dict[str, float]:
    """{metric: value} for the given label ids and predicted ids."""
    y, p = np.asarray(labels), np.asarray(preds)
    out = {}
    for m in metrics:
        if m not in METRICS:
            raise SlimformerError(f"unknown metric '{m}' (known: {', '.join(METRICS)})")
        out[m] = METRICS[m](y, p)
    return out
