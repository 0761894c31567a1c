"""make_student + distill as recipe steps: the runner's output reloads with identical outputs."""
from __future__ import annotations

import torch

from slimformer import models
from slimformer.recipe import EvalSettings, compress
from slimformer.tasks import Example, TaskData


def test_recipe_make_student_then_distill(tiny_bert, tokenizer, batch, tmp_path):
    rows = [Example(t, i % 2) for i, t in enumerate(["good film", "bad plot", "fine acting", "dull and long"] * 4)]
    task = TaskData("toy", ["0", "1"], {"train": rows, "dev": rows[:4]})
    teacher = tiny_bert(layers=4, seed=1)
    steps = [{"step": "make_student", "every": 2, "drop_pooler": True, "drop_token_type": True},
             {"step": "distill", "kd": 1.0, "ce": 0.5, "hidden": 1.0, "attention": 1.0, "max_steps": 2,
              "batch_size": 8}]
    ev = EvalSettings(max_len=16, seq_len=16, batches=[1], latency_budget_s=0.2)
    result = compress(teacher, tokenizer, steps, tmp_path / "out", task=task, eval_settings=ev, seed=1)
    info = result.rows[-1]["info"]["distill"]
    assert info["layer_map"] == [[0, 1], [1, 3]]
    assert result.rows[-2]["info"]["student"]["from_teacher_layers"] == [0, 2]
    reloaded, _ = models.load(str(tmp_path / "out"))
    assert len(reloaded.bert.encoder.layer) == 2
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, result.model.eval()(**batch).logits, atol=0, rtol=0)


def test_shipped_distill_recipes_validate():
    from pathlib import Path

    from slimformer.recipe import read_recipe

    root = Path(__file__).resolve().parents[1] / "recipes"
    for name in ("distill_sst2.yaml", "distill_general_wikitext2.yaml"):
        steps = read_recipe(root / name).parsed_steps()
        assert [s.step for s in steps][:1] == ["make_student"]
        assert steps[-1].step == "distill"
