"""The accuracy guard watches every metric of the task and per-class recall, not only the first metric."""
from __future__ import annotations

import torch

from slimformer.quantize.guard import check_accuracy, compare_metrics
from slimformer.recipe import step_guard
from slimformer.tasks import Example, TaskData
from slimformer.tasks.language_modeling import LanguageModelingTask, Text

CLASSES = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]


def _task() -> TaskData:
    """Six classes; the last is rare (1 example in 100), as in a question-type set."""
    rows = [Example(f"{CLASSES[i % 5]} question {i}", i % 5) for i in range(99)] + [Example("zeta question", 5)]
    return TaskData("six", CLASSES, {"train": rows, "dev": rows}, metrics=["accuracy", "macro_f1"])


def _fake(tokenizer, collapse: str | None = None):
    """A 'model' (a callable) that reads the class word from the input; `collapse` is predicted as class 0."""
    ids = {tokenizer.convert_tokens_to_ids(c): i for i, c in enumerate(CLASSES)}

    def fwd(batch):
        out = torch.zeros(batch["input_ids"].shape[0], len(CLASSES))
        for r, row in enumerate(batch["input_ids"].tolist()):
            label = next(ids[t] for t in row if t in ids)
            if collapse is not None and CLASSES[label] == collapse:
                label = 0
            out[r, label] = 1.0
        return out

    return fwd


def test_guard_fires_on_a_macro_f1_collapse_with_accuracy_intact(tokenizer):
    task = _task()
    report = check_accuracy(_fake(tokenizer), _fake(tokenizer, collapse="zeta"), tokenizer, task, tolerance=2.0)
    by = {r["metric"]: r for r in report["metrics"]}
    assert by["accuracy"]["loss"] <= 2.0 and not by["accuracy"]["over"]  # accuracy moved 1 point only
    assert by["macro_f1"]["over"] and by["macro_f1"]["loss"] > 10
    assert not report["ok"]
    assert [c["class"] for c in report["classes"]] == ["zeta"] and report["classes"][0]["recall_after"] == 0.0


def test_guard_is_quiet_when_nothing_moved(tokenizer):
    report = check_accuracy(_fake(tokenizer), _fake(tokenizer), tokenizer, _task(), tolerance=1.0)
    assert report["ok"] and not report["classes"] and all(r["loss"] == 0 for r in report["metrics"])


def test_perplexity_is_lower_is_better_and_relative():
    task = LanguageModelingTask("lm", {"train": [Text("a")], "test": [Text("b")]})
    rows = compare_metrics(task, {"perplexity": 20.0}, {"perplexity": 21.0}, tolerance=4.0)
    assert rows[0]["change"] == "+5.00 %" and rows[0]["over"]  # 5% worse than allowed 4%
    assert not compare_metrics(task, {"perplexity": 20.0}, {"perplexity": 19.0}, tolerance=0.0)[0]["over"]


def test_recipe_step_guard_names_every_metric():
    task = _task()
    g = step_guard(task, {"metrics": {"accuracy": 0.95, "macro_f1": 0.92}},
                   {"index": 3, "step": "distill", "metrics": {"accuracy": 0.94, "macro_f1": 0.79}}, 2.0)
    assert not g["ok"] and [r["metric"] for r in g["metrics"] if r["over"]] == ["macro_f1"]
