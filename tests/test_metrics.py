"""Metrics against hand-computed values."""
import math

import pytest

from slimformer.errors import SlimformerError
from slimformer.tasks.metrics import compute


def test_accuracy_f1_mcc_by_hand():
    y = [1, 1, 0, 0, 1, 0]
    p = [1, 0, 0, 1, 1, 0]
    tp, fp, fn, tn = 2, 1, 1, 2
    m = compute(["accuracy", "f1", "mcc"], y, p)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert m["mcc"] == pytest.approx(mcc)


def test_multiclass_f1_is_macro():
    m = compute(["f1"], [0, 1, 2, 2], [0, 1, 1, 2])
    assert m["f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


def test_unknown_metric():
    with pytest.raises(SlimformerError, match="unknown metric"):
        compute(["bleu4"], [0], [0])


def test_run_table_shows_each_metric_change_in_its_own_units():
    from slimformer.report import delta_text

    assert delta_text("accuracy", 0.875, 0.8739) == "-0.11 pt"  # fractions: x100
    assert delta_text("bleu", 36.78, 29.96) == "-6.82 pt"  # already in points
    assert delta_text("perplexity", 16.0, 17.6) == "+10.00 %"  # relative
    assert delta_text("accuracy", None, 0.5) == "-"


def test_plan_drop_is_points_lost_in_the_metric_units():
    from types import SimpleNamespace

    from slimformer.plan.search import _drop

    acc = SimpleNamespace(main_metric="accuracy")
    assert _drop(acc, {"accuracy": 0.875}, {"accuracy": 0.865}) == 1.0
    assert _drop(SimpleNamespace(main_metric="bleu"), {"bleu": 36.0}, {"bleu": 35.5}) == 0.5
    assert _drop(SimpleNamespace(main_metric="perplexity"), {"perplexity": 10.0}, {"perplexity": 11.0}) == 10.0
