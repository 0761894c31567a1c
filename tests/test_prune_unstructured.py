"""Unstructured pruning: exact zero counts, scopes, the cubic schedule, fixed masks in training, rewind,
fresh-process reload, the sparse encoding, clear errors and the recipe ledger."""
from __future__ import annotations

import json

import pytest
import torch

import slimformer as sf
from slimformer import SlimformerError, models
from slimformer.prune.unstructured import (cubic_schedule, mask_callback, prunable, sparse_decode, sparse_encode,
                                           sparse_size)
from slimformer.recipe import EvalSettings, compress
from slimformer.steps import parse_step

from conftest import write_tiny_sst2
from helpers import fresh_process_logits, logits

FAST = EvalSettings(max_examples=16, latency_budget_s=0.05, seq_len=16, batches=[1])
EXPECTED = {f"bert.encoder.layer.{i}.{m}" for i in range(2) for m in (
    "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
    "intermediate.dense", "output.dense")}


@pytest.fixture
def tiny_task(tmp_path):
    (tmp_path / "data").mkdir()
    return write_tiny_sst2(tmp_path / "data")


def untouched(model):
    """Every tensor that is not an included Linear weight (embeddings, LayerNorm, biases, pooler, classifier)."""
    skip = {f"{n}.weight" for n in EXPECTED}
    return {k: v.clone() for k, v in model.state_dict().items() if k not in skip}


def test_magnitude_global_zeroes_exactly_and_leaves_the_rest(tiny_bert):
    model = tiny_bert(layers=2)
    assert set(prunable(model)) == EXPECTED
    before = untouched(model)
    w0 = {n: m.weight.detach().clone() for n, m in prunable(model).items()}
    n = sum(w.numel() for w in w0.values())
    model, info = sf.prune_unstructured(model, sf.PruneUnstructured(sparsity=0.5))
    mods = prunable(model)
    assert sum(int((m.weight == 0).sum()) for m in mods.values()) == round(0.5 * n) == info["zeros"]
    assert info["sparsity"] == 0.5 and set(info["sparsity_per_layer"]) == {"0", "1"}
    kept = torch.cat([w0[k][mods[k].weight != 0].abs() for k in mods])
    gone = torch.cat([w0[k][mods[k].weight == 0].abs() for k in mods])
    assert gone.max() <= kept.min()  # the smallest magnitudes went, globally
    for k in mods:  # surviving weights unchanged
        assert torch.equal(mods[k].weight[mods[k].weight != 0], w0[k][mods[k].weight != 0])
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items()), "embeddings / head / biases were modified"


def test_per_layer_scope_gives_every_matrix_the_sparsity(tiny_bert):
    model, info = sf.prune_unstructured(tiny_bert(layers=2), sf.PruneUnstructured(sparsity=0.3, scope="per_layer"))
    for name, m in prunable(model).items():
        assert int((m.weight == 0).sum()) == round(0.3 * m.weight.numel()), name
    assert all(abs(s - 0.3) < 1e-3 for s in info["sparsity_per_layer"].values())
    model, info = sf.prune_unstructured(tiny_bert(layers=2), sf.PruneUnstructured(sparsity=0.0))
    assert info["zeros"] == 0


def test_cubic_schedule(tiny_bert):
    s = cubic_schedule(0.8, 4)
    assert len(s) == 4 and s[-1] == pytest.approx(0.8) and s[0] == pytest.approx(0.8 * (1 - 0.75 ** 3))
    assert all(a < b for a, b in zip(s, s[1:]))
    assert cubic_schedule(0.5, 1) == [0.5]
    _, info = sf.prune_unstructured(tiny_bert(layers=1), sf.PruneUnstructured(sparsity=0.6, steps=3))
    assert [h["sparsity"] for h in info["increments"]] == pytest.approx(cubic_schedule(0.6, 3), abs=1e-4)


def test_mask_stays_fixed_through_recovery_training(tiny_bert, tokenizer, tiny_task, tmp_path):
    model = tiny_bert(layers=2)
    cfg = sf.PruneUnstructured(sparsity=0.6, steps=2, recovery_steps=4, recovery_lr=1e-2, batch_size=8)
    w0 = {n: m.weight.detach().clone() for n, m in prunable(model).items()}
    model, info = sf.prune_unstructured(model, cfg, tokenizer, tiny_task, tmp_path / "w")
    mods = prunable(model)
    assert info["sparsity"] == 0.6 and all("recovery_train_loss" in h for h in info["increments"])
    changed = sum(int(((mods[k].weight != w0[k]) & (mods[k].weight != 0)).sum()) for k in mods)
    assert changed > 0, "recovery training did not update the surviving weights"
    # the callback on its own: a training step that would move pruned weights is undone
    model = tiny_bert(layers=1)
    mods = prunable(model)
    masks = {k: torch.rand_like(m.weight) > 0.5 for k, m in mods.items()}
    cb = mask_callback(mods, masks)
    with torch.no_grad():
        for m in mods.values():
            m.weight.add_(1.0)
    cb.on_step_end(None, None, None)
    assert all(torch.equal(m.weight == 0, ~masks[k]) for k, m in mods.items())


def test_rewind_resets_surviving_weights(tiny_bert, tokenizer, tiny_task, tmp_path):
    model = tiny_bert(layers=2)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = sf.PruneUnstructured(sparsity=0.5, steps=2, recovery_steps=4, recovery_lr=1e-2, batch_size=8,
                               rewind=True, rewind_steps=0)
    model, info = sf.prune_unstructured(model, cfg, tokenizer, tiny_task, tmp_path / "w")
    assert info["increments"][-1]["rewound"] and info["sparsity"] == 0.5
    mods = {f"{n}.weight": m for n, m in prunable(model).items()}
    for k, v in model.state_dict().items():
        if k in mods:
            keep = v != 0
            assert torch.equal(v[keep], start[k][keep]), k
        else:
            assert torch.equal(v, start[k]), k  # biases, LayerNorm, head: back to the start too
    # without rewind, the same run ends with trained weights
    other, _ = sf.prune_unstructured(tiny_bert(layers=2), cfg.model_copy(update={"rewind": False}), tokenizer,
                                     tiny_task, tmp_path / "w2")
    assert not torch.equal(other.bert.encoder.layer[0].attention.self.query.bias,
                           start["bert.encoder.layer.0.attention.self.query.bias"])


def test_reload_fresh_process_and_sparse_encoding(tiny_bert, tokenizer, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model, _ = sf.prune_unstructured(tiny_bert(layers=2),
                                     sf.PruneUnstructured(sparsity=0.7))
    models.save(model, tokenizer, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert not (cfg.get("slimformer") or {}).get("ops"), "unstructured pruning must not record an op"
    ref = logits(model, tokenizer)
    assert (fresh_process_logits(tmp_path / "m") - ref).abs().max() < 1e-6
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m").eval()
    assert (logits(plain, tokenizer) - ref).abs().max() < 1e-6
    enc = sparse_encode(model)
    dec = sparse_decode(enc)
    sd = model.state_dict()
    assert all(torch.equal(dec[k], sd[k]) for k in dec) and set(dec) <= set(sd)
    n_enc = sum(1 for k in enc if k.endswith(".bitmask"))
    assert n_enc == len(EXPECTED)  # pooler / classifier have no zeros: stored dense
    from slimformer.bench import saved_size

    saving = sum(m.weight.numel() * 4 - (int((m.weight != 0).sum()) * 4 + (m.weight.numel() + 7) // 8)
                 for m in prunable(model).values())
    assert abs((saved_size(model) - sparse_size(model)) - saving) < 4096  # headers differ by a few names


def test_errors(tiny_bert):
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(SlimformerError, match=r"prune_unstructured: sparsity must be a fraction in \[0, 1\)"):
            sf.PruneUnstructured(sparsity=bad)
    with pytest.raises(SlimformerError, match="prune_unstructured: unknown criterion 'gradient'"):
        sf.PruneUnstructured(sparsity=0.5, criterion="gradient")
    with pytest.raises(SlimformerError, match=r"recipe step 1 \(prune_unstructured\): steps"):
        parse_step({"step": "prune_unstructured", "sparsity": 0.5, "steps": 0}, 0)
    with pytest.raises(SlimformerError, match="criterion 'movement' needs a tokenizer and task data"):
        sf.prune_unstructured(tiny_bert(layers=1), sf.PruneUnstructured(sparsity=0.5, criterion="movement"))
    with pytest.raises(SlimformerError, match="recovery fine-tuning needs a tokenizer and task data"):
        sf.prune_unstructured(tiny_bert(layers=1), sf.PruneUnstructured(sparsity=0.5, recovery_steps=2))
    with pytest.raises(SlimformerError, match="no Linear layer to prune"):
        sf.prune_unstructured(tiny_bert(layers=1), sf.PruneUnstructured(sparsity=0.5, include=["classifier",
                                                                                                 "embeddings"]))
    with pytest.raises(SlimformerError, match="not a valid regex"):
        sf.PruneUnstructured(sparsity=0.5, include=["("])
    assert not parse_step({"step": "prune_unstructured", "sparsity": 0.5}, 0).needs_data
    assert parse_step({"step": "prune_unstructured", "sparsity": 0.5, "criterion": "movement"}, 0).needs_data
    with pytest.raises(SlimformerError) as e:
        parse_step({"step": "prune_unstructured", "sparsity": 2}, 0)
    assert "\n" not in str(e.value)


def test_movement_and_include(tiny_bert, tokenizer, tiny_task):
    model, info = sf.prune_unstructured(tiny_bert(layers=2), sf.PruneUnstructured(
        sparsity=0.4, criterion="movement", scope="per_layer", score_examples=16, batch_size=8), tokenizer, tiny_task)
    assert all(abs(s - 0.4) < 1e-3 for s in info["sparsity_per_layer"].values())
    model, info = sf.prune_unstructured(tiny_bert(layers=2), sf.PruneUnstructured(
        sparsity=0.5, include=[r"intermediate\.dense$", "classifier"]))
    assert set(info["sparsity_per_matrix"]) == {"bert.encoder.layer.0.intermediate.dense",
                                                "bert.encoder.layer.1.intermediate.dense"}
    assert int((model.classifier.weight == 0).sum()) == 0


def test_recipe_runs_and_ledger_shows_sparsity(tiny_bert, tokenizer, tiny_task, tmp_path):
    steps = [{"step": "prune_unstructured", "sparsity": 0.5, "steps": 2, "recovery_steps": 2, "batch_size": 8}]
    res = compress(tiny_bert(layers=2), tokenizer, steps, tmp_path / "out", tiny_task, FAST)
    rows = [json.loads(line) for line in (tmp_path / "out" / "ledger.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == ["input", "prune_unstructured"]
    info = rows[1]["info"]
    zeros, total = map(int, info["zeros"].split("/"))
    assert info["sparsity"] == 0.5 and total == 2 * (4 * 32 * 32 + 2 * 32 * 64) and zeros == total // 2
    assert set(info["sparsity_per_layer"]) == {"0", "1"} and len(info["increments"]) == 2
    assert info["sparse_encoded_bytes"] < info["dense_bytes"] == rows[1]["size_bytes"]
    assert (fresh_process_logits(tmp_path / "out") - logits(res.model, tokenizer)).abs().max() < 1e-5


def test_movement_score_is_minus_w_times_grad(tiny_bert, tokenizer, tiny_task):
    from slimformer.prune.importance import importance_batches
    from slimformer.prune.unstructured import movement_scores

    model = tiny_bert(layers=1)
    mods = prunable(model)
    batches = importance_batches(tokenizer, tiny_task, 8, 32, 4)
    got = movement_scores(model, mods, batches)
    assert all(p.requires_grad for p in model.parameters()) and not model.training
    model.zero_grad()
    for b in batches:
        model(**b).loss.backward()
    for n, m in mods.items():
        torch.testing.assert_close(got[n], -(m.weight * m.weight.grad).detach(), rtol=1e-4, atol=1e-7)


def test_python_api_without_work_dir_leaves_no_scratch(tiny_bert, tokenizer, tiny_task, tmp_path, monkeypatch):
    """Recovery checkpoints of a call without work_dir go to a temporary folder that is removed afterwards."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    cfg = sf.PruneUnstructured(sparsity=0.5, steps=1, recovery_steps=2, batch_size=8)
    _, info = sf.prune_unstructured(tiny_bert(layers=1), cfg, tokenizer, tiny_task)
    assert "recovery_train_loss" in info["increments"][0]
    heads = sf.PruneHeads(keep=0.5, rounds=2, recovery_epochs=1, recovery_examples=8, importance_examples=8,
                          batch_size=8)
    _, info = sf.prune_heads(tiny_bert(layers=1), heads, tokenizer, tiny_task, max_len=16)
    assert "recovery_train_loss" in info["rounds"][0]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("slimformer-")]
