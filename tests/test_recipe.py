"""Recipe validation errors, the runner's ledger, parameter claims, and resume after an interruption."""
from __future__ import annotations

import json
from typing import ClassVar

import pytest
import torch

import slimformer as sf
from slimformer.errors import SlimformerError
from slimformer.recipe import EvalSettings, compress, read_recipe
from slimformer.steps import REGISTRY, Context, StepConfig, implements, parse_step

from conftest import write_tiny_sst2
from helpers import fresh_process_logits, logits

FAST = EvalSettings(max_examples=16, latency_budget_s=0.05, seq_len=16, batches=[1, 4])


@pytest.fixture
def tiny_task(tmp_path):
    return write_tiny_sst2(tmp_path)


@pytest.mark.parametrize("text,pattern", [
    ("steps:\n  - step: prune_hedas\n", "step 1: unknown step 'prune_hedas'"),
    ("steps:\n  - step: drop_layers\n    kep: 3\n", r"step 1 \(drop_layers\): kep: unknown field"),
    ("steps:\n  - step: finetune\n    epochs: -1\n", r"step 1 \(finetune\): epochs: Input should be greater than 0"),
    ("steps:\n  - step: finetune\n  - {step: drop_layers, keep: 0}\n", r"step 2 \(drop_layers\): keep"),
    ("steps: []\n", "no steps"),
    ("steps:\n  - [1, 2\n", "not valid YAML"),
    ("stepz:\n  - step: finetune\n", "stepz: unknown field"),
    ("steps:\n  - 42\n", "expected a mapping with a 'step' key"),
])
def test_recipe_validation_errors(tmp_path, text, pattern):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    with pytest.raises(SlimformerError, match=pattern) as e:
        read_recipe(p)
    assert "\n" not in str(e.value)


def test_drop_layers_errors_on_bad_targets(tiny_bert, tokenizer, tmp_path):
    m = tiny_bert(layers=3)
    ctx = Context(tokenizer=tokenizer, task=None, work_dir=tmp_path)
    with pytest.raises(SlimformerError, match="unknown layer index 7"):
        REGISTRY["drop_layers"][1](m, sf.DropLayers(drop=[7]), ctx)
    with pytest.raises(SlimformerError, match="cannot drop every layer"):
        REGISTRY["drop_layers"][1](m, sf.DropLayers(drop=[0, 1, 2]), ctx)
    with pytest.raises(SlimformerError, match="only 3 layers"):
        REGISTRY["drop_layers"][1](m, sf.DropLayers(keep=5), ctx)


def test_step_needing_data_without_task(tiny_bert, tokenizer, tmp_path):
    with pytest.raises(SlimformerError, match="needs task data"):
        compress(tiny_bert(), tokenizer, [sf.Finetune()], tmp_path / "out", None, FAST)


def test_compress_records_every_step_and_claims_hold(tiny_bert, tokenizer, tiny_task, tmp_path):
    m = tiny_bert(layers=4)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    steps = [sf.DropLayers(keep=2, strategy="bottom"), {"step": "finetune", "epochs": 1, "batch_size": 8}]
    res = compress(m, tokenizer, steps, tmp_path / "out", tiny_task, FAST)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items()), "the input model was modified"
    rows = [json.loads(line) for line in (tmp_path / "out" / "ledger.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == ["input", "drop_layers", "finetune"]
    layer_params = sum(p.numel() for p in m.bert.encoder.layer[0].parameters())
    assert rows[0]["params"] - rows[1]["params"] == 2 * layer_params
    assert rows[1]["info"]["kept_layers"] == [2, 3]
    assert "accuracy" in rows[2]["metrics"] and rows[2]["latency_b4_ms"] > 0
    spread = {"min_ms", "p25_ms", "median_ms", "p75_ms", "max_ms", "runs", "reliable", "warning"}
    assert spread <= set(rows[2]["latency_b4"])
    assert {"speedup", "speedup_lo", "speedup_hi", "reliable", "warning"} <= set(res.comparison["b4"])
    assert not (tmp_path / ".out.work").exists()
    assert (fresh_process_logits(tmp_path / "out") - logits(res.model, tokenizer)).abs().max() < 1e-5
    assert "drop_layers" in res.table()


class _Boom(StepConfig):
    step: ClassVar[str] = "test_boom"
    armed: bool = True


_calls: list[str] = []


@implements(_Boom)
def _boom(model: torch.nn.Module, cfg: _Boom, ctx: Context) -> torch.nn.Module:
    _calls.append("boom")
    if cfg.armed and len(_calls) == 1:
        raise KeyboardInterrupt
    return model


def test_interrupted_recipe_resumes_after_last_finished_step(tiny_bert, tokenizer, tiny_task, tmp_path):
    _calls.clear()
    steps = [sf.DropLayers(keep=2), _Boom()]
    with pytest.raises(KeyboardInterrupt):
        compress(tiny_bert(layers=3), tokenizer, steps, tmp_path / "out", tiny_task, FAST)
    assert (tmp_path / ".out.work" / "after-01" / "model.safetensors").exists()
    res = compress(tiny_bert(layers=3), tokenizer, steps, tmp_path / "out", tiny_task, FAST)
    assert [r["step"] for r in res.rows] == ["input", "drop_layers", "test_boom"]
    assert res.model.config.num_hidden_layers == 2 and _calls == ["boom", "boom"]


def test_parse_step_accepts_config_objects_and_names():
    assert parse_step(sf.DropLayers(keep=2), 0).keep == 2
    assert parse_step("finetune", 0).epochs == 1.0


@pytest.mark.parametrize("path", sorted((__import__("pathlib").Path(__file__).parents[1] / "recipes").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_recipes_validate(path):
    recipe = read_recipe(path)
    assert recipe.parsed_steps()
    assert recipe.data is None or "shared/data" in recipe.data  # relative to the recipe file, resolved
