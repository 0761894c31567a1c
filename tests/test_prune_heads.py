"""Head pruning: gate 0 equals physical removal, exact parameter counts, reload, ONNX, clear errors, recipes."""
from __future__ import annotations

import pytest
import torch

import slimformer as sf
from slimformer import SlimformerError, models
from slimformer.models import get_adapter
from slimformer.models.io import num_params
from slimformer.prune.gates import gated, mask_gates
from slimformer.prune.heads import keep_heads
from slimformer.tasks import Example, TaskData

from helpers import fresh_process_logits, logits

KEEP = {0: [1, 3], 1: [0, 1, 2], 2: [2]}  # non-uniform: 2, 3, 1 of 4 heads


def toy_task() -> TaskData:
    rows = [Example(t, i % 2) for i, t in enumerate(["good film", "bad plot", "fine acting", "dull and long"] * 6)]
    return TaskData("toy", ["0", "1"], {"train": rows, "dev": rows[:8]})


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_gate_zero_equals_physical_removal(tiny_bert, batch, impl):
    model = tiny_bert(layers=3)
    model.set_attn_implementation(impl)
    with torch.no_grad(), gated(model, heads=mask_gates(model, "heads", KEEP)):
        ref = model(**batch).logits
    with torch.no_grad():
        full = model(**batch).logits
    keep_heads(model, KEEP)
    with torch.no_grad():
        got = model(**batch).logits
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
    assert (full - got).abs().max() > 1e-4  # the pruning did change the function
    ad = get_adapter(model)
    assert [a.heads for a in ad.attention(model)] == [2, 3, 1]


def test_parameter_count_matches_formula(tiny_bert):
    model = tiny_bert(layers=3, heads=4, hidden=32)
    before = num_params(model)
    keep_heads(model, KEEP)
    removed_heads, d, h = 6, 8, 32
    assert before - num_params(model) == removed_heads * d * (3 * (h + 1) + h)  # q/k/v rows+bias, output cols


def test_reload_fresh_process_and_onnx(tiny_bert, tokenizer, tmp_path):
    from slimformer.export import OnnxModel, to_onnx
    from slimformer.data import dummy_inputs

    model = tiny_bert(layers=3)
    keep_heads(model, KEEP)
    keep_heads(model, {1: [0, 2]})  # a second op on already pruned indices replays in order
    models.save(model, tokenizer, tmp_path / "m")
    assert (fresh_process_logits(tmp_path / "m") - logits(model, tokenizer)).abs().max() < 1e-5
    res = to_onnx(model, tokenizer, tmp_path / "m.onnx")
    assert res["max_abs_diff"] < 1e-4
    probe = dummy_inputs(tokenizer, 2, 24, seed=3)
    with torch.no_grad():
        ref = model(**probe).logits
    torch.testing.assert_close(OnnxModel(tmp_path / "m.onnx")(probe), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(keep=0), "keep must be a ratio in"),
    (dict(keep=1.5), "keep must be a ratio in"),
    (dict(keep_count=0), "keep_count must be >= 1"),
    (dict(), "exactly one of keep"),
    (dict(keep=0.5, keep_count=3), "exactly one of keep"),
])
def test_bad_targets_are_clear_errors(kwargs, pattern):
    with pytest.raises(SlimformerError, match=pattern):
        sf.PruneHeads(criterion="magnitude", **kwargs)


def test_bad_keep_heads_calls(tiny_bert):
    model = tiny_bert(layers=2)
    with pytest.raises(SlimformerError, match="every head of encoder.0.self"):
        keep_heads(model, {0: [], 1: []})
    with pytest.raises(SlimformerError, match="every head of encoder.1.self"):
        keep_heads(model, {0: [0], 1: []})
    with pytest.raises(SlimformerError, match="unknown layer index 5"):
        keep_heads(model, {5: [0]})
    with pytest.raises(SlimformerError, match="no unit 4"):
        keep_heads(model, {0: [4]})
    with pytest.raises(SlimformerError, match="exceeds the 8 heads"):
        sf.prune_heads(model, sf.PruneHeads(keep_count=9, criterion="magnitude"))
    with pytest.raises(SlimformerError, match="min_per_layer"):
        sf.prune_heads(model, sf.PruneHeads(keep_count=1, criterion="magnitude"))
    with pytest.raises(SlimformerError, match="needs a tokenizer and task data"):
        sf.prune_heads(model, sf.PruneHeads(keep=0.5))
    assert num_params(model) == num_params(tiny_bert(layers=2))  # failed calls changed nothing


def test_magnitude_global_and_per_layer_targets(tiny_bert):
    model = tiny_bert(layers=3)
    model, info = sf.prune_heads(model, sf.PruneHeads(keep=0.5, criterion="magnitude"))
    assert info["kept_total"] == 6 and min(info["kept_per_layer"]) >= 1
    model = tiny_bert(layers=3)
    model, info = sf.prune_heads(model, sf.PruneHeads(keep_count=3, scope="per_layer", criterion="magnitude"))
    assert info["kept_per_layer"] == [3, 3, 3]
    assert model.config.slimformer["ops"][0]["op"] == "keep_heads"


def test_gradient_iterative_rounds_with_recovery(tiny_bert, tokenizer, tmp_path):
    model = tiny_bert(layers=2)
    cfg = sf.PruneHeads(keep=0.25, rounds=2, recovery_epochs=1, recovery_examples=8, importance_examples=16,
                        batch_size=8)
    model, info = sf.prune_heads(model, cfg, tokenizer, toy_task(), tmp_path, max_len=16)
    assert [r["kept_per_layer"] for r in info["rounds"]][-1] == info["kept_per_layer"]
    assert sum(info["rounds"][0]["kept_per_layer"]) == 4  # geometric: 8 -> 4 -> 2
    assert info["kept_total"] == 2
    assert "recovery_train_loss" in info["rounds"][0] and "recovery_train_loss" not in info["rounds"][1]
    kept = info["kept"]  # original indices, per layer
    assert all(0 <= h < 4 for hs in kept.values() for h in hs)


def test_recipe_prune_heads_ffn_finetune_via_cli(tiny_bert, tokenizer, tmp_path):
    import json
    import os
    import subprocess
    import sys

    models.save(tiny_bert(layers=2), tokenizer, tmp_path / "tiny")
    lines = "\n".join(f"{i % 2} {'good' if i % 2 else 'bad'} movie {i}" for i in range(24))
    (tmp_path / "sst2").mkdir()
    for s in ("train", "dev", "test"):
        (tmp_path / "sst2" / f"stsa.binary.{s}").write_text(lines + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "eval: {seq_len: 16, max_len: 16, batches: [1], latency_budget_s: 0.05}\n"
        "steps:\n"
        "  - {step: prune_heads, keep: 0.5, importance_examples: 16, batch_size: 8}\n"
        "  - {step: prune_ffn, keep: 0.25, scope: per_layer, criterion: magnitude}\n"
        "  - {step: finetune, epochs: 1, max_train_examples: 8, batch_size: 8}\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SLIMFORMER_QUIET": "1"}
    res = subprocess.run([sys.executable, "-m", "slimformer.cli", "compress", str(tmp_path / "tiny"), "--recipe",
                          str(recipe), "--out", str(tmp_path / "out"), "--task", "sst2", "--data",
                          str(tmp_path / "sst2")], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads((tmp_path / "out" / "summary.json").read_text())["rows"]
    assert rows[1]["info"]["heads"] == "4/8" and len(rows[1]["info"]["kept_heads"]) == 2
    assert rows[2]["info"]["ffn_per_layer"] == [16, 16]
    reloaded, _ = models.load(str(tmp_path / "out"))
    ad = get_adapter(reloaded)
    assert sum(a.heads for a in ad.attention(reloaded)) == 4


def test_profile_on_pruned_model(tiny_bert, tokenizer):
    from slimformer.profile import profile_model

    model = tiny_bert(layers=3)
    full = profile_model(model, tokenizer, seq_len=16, runs=2)
    keep_heads(model, KEEP)
    prof = profile_model(model, tokenizer, seq_len=16, runs=2)
    assert prof["total"]["params"] == num_params(model)
    att = lambda p: sum(r["params"] for r in p["rows"] if r["component"].endswith("attention"))  # noqa: E731
    assert att(full) - att(prof) == 6 * 8 * (3 * 33 + 32)
