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
