"""Families chained in one recipe: prune -> factorize -> share -> distill -> quantize, then reload the result."""
from __future__ import annotations

import pytest
import torch

import slimformer as sf
from slimformer.recipe import EvalSettings, compress

from conftest import write_tiny_sst2
from helpers import fresh_process_logits, logits

FAST = EvalSettings(max_examples=16, latency_budget_s=0.05, seq_len=16, batches=[1, 4])


@pytest.fixture
def tiny_task(tmp_path):
    return write_tiny_sst2(tmp_path, 48)


def _run(tiny_bert, tokenizer, tiny_task, tmp_path, steps):
    model = tiny_bert(layers=4, heads=4, ffn=64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = compress(model, tokenizer, steps, tmp_path / "out", tiny_task, FAST, seed=1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "input model was modified"
    return model, res


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_prune_distill_quantize_chain_reloads(tiny_bert, tokenizer, tiny_task, tmp_path, backend):
    steps = [sf.PruneHeads(keep=0.5, criterion="gradient", importance_examples=16, batch_size=8),
             sf.PruneFFN(keep=0.5, criterion="magnitude"),
             sf.Distill(epochs=1, batch_size=8, max_train_examples=24),
             sf.QuantizeDynamic(backend=backend, guard=False)]
    model, res = _run(tiny_bert, tokenizer, tiny_task, tmp_path, steps)
    rows = res.rows
    assert [r["step"].split()[0] for r in rows[1:]] == ["prune_heads", "prune_ffn", "distill", "quantize_dynamic"]
    assert rows[1]["params"] < rows[0]["params"] and rows[2]["params"] < rows[1]["params"]
    assert rows[4]["size_bytes"] < rows[3]["size_bytes"]  # int8 weights on disk
    assert rows[4]["params"] >= rows[3]["params"]  # quantization keeps every weight, in fewer bits (+ scales)
    torch.testing.assert_close(fresh_process_logits(tmp_path / "out"), logits(res.model, tokenizer), atol=1e-5, rtol=0)


def test_factorize_share_distill_chain_reloads(tiny_bert, tokenizer, tiny_task, tmp_path):
    steps = [sf.ShareLayers(group_size=2),
             sf.FactorizeEmbeddings(size=16),
             sf.Factorize(parts=["ffn"], ratio=0.5),
             sf.Distill(epochs=1, batch_size=8, max_train_examples=24)]
    model, res = _run(tiny_bert, tokenizer, tiny_task, tmp_path, steps)
    params = [r["params"] for r in res.rows]
    assert params == sorted(params, reverse=True) and params[-1] < params[0]
    torch.testing.assert_close(fresh_process_logits(tmp_path / "out"), logits(res.model, tokenizer), atol=1e-5, rtol=0)
