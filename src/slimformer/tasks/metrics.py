"""Task metrics (scikit-learn, scipy, sacrebleu) and what each one means: direction and display scale."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, recall_score

from ..errors import SlimformerError


@dataclass(frozen=True)
class MetricInfo:
    name: str
    higher_is_better: bool = True
    points: float = 100.0     # a change of 1.0 in the metric is this many "points" (0-1 metrics: 100)
    relative: bool = False    # report changes in percent of the value (perplexity), not in points


INFO: dict[str, MetricInfo] = {
    "accuracy": MetricInfo("accuracy"), "f1": MetricInfo("f1"), "macro_f1": MetricInfo("macro_f1"),
    "mcc": MetricInfo("mcc"), "pearson": MetricInfo("pearson"), "spearman": MetricInfo("spearman"),
    "bleu": MetricInfo("bleu", points=1.0), "chrf": MetricInfo("chrf", points=1.0),
    "perplexity": MetricInfo("perplexity", higher_is_better=False, points=1.0, relative=True),
}


def info(metric: str) -> MetricInfo:
    if metric not in INFO:
        raise SlimformerError(f"unknown metric '{metric}' (known: {', '.join(INFO)})")
    return INFO[metric]


def change(metric: str, before: float, after: float) -> tuple[float, str]:
    """(signed change where positive is better, its text): '+0.42 pt' or '-3.1 %' (relative metrics)."""
    mi = info(metric)
    sign = 1.0 if mi.higher_is_better else -1.0
    if mi.relative:
        pct = 100.0 * (after - before) / before if before else float("nan")
        return sign * pct, f"{pct:+.2f} %"
    pts = (after - before) * mi.points
    return sign * pts, f"{pts:+.2f} pt"


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
    """{metric: value} for the given label ids and predicted ids (classification metrics)."""
    y, p = np.asarray(labels), np.asarray(preds)
    out = {}
    for m in metrics:
        if m not in METRICS:
            raise SlimformerError(f"unknown metric '{m}' for classification (known: {', '.join(METRICS)})")
        out[m] = METRICS[m](y, p)
    return out


def per_class_recall(labels: Sequence[int], preds: Sequence[int], names: Sequence[str]) -> dict[str, float]:
    r = recall_score(labels, preds, labels=list(range(len(names))), average=None, zero_division=0)
    return {str(n): float(v) for n, v in zip(names, r)}


def correlations(gold: Sequence[float], pred: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman correlation (0 when a side is constant)."""
    from scipy.stats import pearsonr, spearmanr

    g, p = np.asarray(gold, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if len(g) < 2 or np.ptp(g) == 0 or np.ptp(p) == 0:
        return {"pearson": 0.0, "spearman": 0.0}
    return {"pearson": float(pearsonr(g, p)[0]), "spearman": float(spearmanr(g, p)[0])}
