"""Low-rank factorization: exactness at full rank, parameter formula, rank rules, reload, ONNX, recipe."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import fresh_process_logits, logits
from slimformer import SlimformerError, models
from slimformer.factorize import (Factorize, FactorizedEmbedding, FactorizeEmbeddings, LowRankLinear, choose_ranks,
                                  factorize_embeddings, factorize_linears, select_layers)
from slimformer.factorize.lowrank import energy_rank
from slimformer.recipe import EvalSettings, compress
from slimformer.steps import Context, apply_step, parse_step
from slimformer.tasks import Example, TaskData


def _ctx(tokenizer, tmp_path, task=None, teacher=None):
    return Context(tokenizer=tokenizer, task=task, work_dir=tmp_path, teacher=teacher)


def test_full_rank_svd_reproduces_linear():
    torch.manual_seed(0)
    for i, o in [(32, 64), (64, 32), (24, 24)]:
        lin = nn.Linear(i, o)
        low = LowRankLinear.from_linear(lin, min(i, o))
        x = torch.randn(5, 7, i)
        torch.testing.assert_close(low(x), lin(x), atol=1e-5, rtol=0)
        assert isinstance(low.first, nn.Linear) and isinstance(low.second, nn.Linear)
        assert low.first.bias is None and low.second.bias is not None


def test_truncated_svd_is_best_low_rank():
    torch.manual_seed(0)
    lin = nn.Linear(40, 30, bias=False)
    low = LowRankLinear.from_linear(lin, 5)
    s = torch.linalg.svdvals(lin.weight.detach())
    approx = (low.second.weight @ low.first.weight).detach()
    err = torch.linalg.matrix_norm(lin.weight.detach() - approx)  # Eckart-Young: the tail of the spectrum
    assert abs(float(err) - float(s[5:].square().sum().sqrt())) < 1e-4


def test_model_full_rank_identical_and_param_formula(tiny_bert, batch):
    model = tiny_bert()
    ref = model(**batch).logits
    names = select_layers(model)
    assert len(names) == 2 * 6 and not any("classifier" in n or "pooler" in n for n in names)
    mods = dict(model.named_modules())
    before = models.num_params(model)
    ranks = {n: min(mods[n].in_features, mods[n].out_features) for n in names}
    factorize_linears(model, ranks)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, ref, atol=1e-5, rtol=0)
    expected = before + sum(r * (mods[n].in_features + mods[n].out_features) - mods[n].in_features *
                            mods[n].out_features for n, r in ranks.items())
    assert models.num_params(model) == expected


def test_step_ratio_param_count_and_skip(tiny_bert, tokenizer, tmp_path):
    model = tiny_bert(hidden=32, ffn=64)
    mods = dict(model.named_modules())
    before = models.num_params(model)
    ctx = _ctx(tokenizer, tmp_path)
    out = apply_step(model, Factorize(ratio=0.5), ctx)
    ranks = ctx.info["ranks"]
    # attention 32x32: break-even 16 -> rank 8; FFN 32x64: break-even 21.3 -> rank 10
    assert set(ranks.values()) == {8, 10}
    saved = sum(mods[n].in_features * mods[n].out_features - r * (mods[n].in_features + mods[n].out_features)
                for n, r in ranks.items())
    assert models.num_params(out) == before - saved
    assert isinstance(out.bert.encoder.layer[0].intermediate.dense, LowRankLinear)
    # a rank above the break-even point is skipped (reported), not applied
    m2 = tiny_bert(hidden=32, ffn=64)
    ctx2 = _ctx(tokenizer, tmp_path)
    apply_step(m2, Factorize(rank=20), ctx2)  # saves on FFN (21.3) but not on attention (16)
    assert all("attention" in n for n in ctx2.info["skipped_no_saving"])
    assert all("attention" not in n for n in ctx2.info["ranks"])


def test_energy_and_spectrum_allocation(tiny_bert):
    s = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert energy_rank(s, 9 / 14) == 1 and energy_rank(s, 0.65) == 2 and energy_rank(s, 1.0) == 3
    model = tiny_bert()
    ranks, _ = choose_ranks(model, Factorize(energy=0.9))
    assert all(r >= 1 for r in ranks.values())
    ranks, skipped = choose_ranks(model, Factorize(ratio=0.5, allocation="spectrum"))
    mods = dict(model.named_modules())
    total = sum(mods[n].in_features * mods[n].out_features for n in select_layers(model))
    cost = sum(r * (mods[n].in_features + mods[n].out_features) for n, r in ranks.items())
    cost += sum(mods[n].in_features * mods[n].out_features for n in skipped)
    assert cost <= 0.5 * total and len(set(ranks.values())) > 1  # ranks differ by spectrum


def test_include_patterns_never_head(tiny_bert):
    model = tiny_bert()
    assert select_layers(model, include=[r"intermediate"]) == [f"bert.encoder.layer.{i}.intermediate.dense"
                                                               for i in range(2)]
    assert select_layers(model, include=[r"classifier|pooler"]) == []
    assert len(select_layers(model, parts=["ffn"], exclude=[r"layer\.1\."])) == 2


@pytest.mark.parametrize("raw", [
    {"step": "factorize", "rank": 0},
    {"step": "factorize", "energy": 0.0},
    {"step": "factorize", "energy": 1.5},
    {"step": "factorize", "ratio": 1.2},
    {"step": "factorize", "rank": 4, "ratio": 0.5},
    {"step": "factorize"},
    {"step": "factorize", "rank": 4, "allocation": "spectrum"},
    {"step": "factorize_embeddings", "size": 0},
    {"step": "factorize_embeddings", "energy": 2.0},
])
def test_invalid_configs(raw):
    with pytest.raises(SlimformerError):
        parse_step(raw, 0)


def test_invalid_ranks_at_apply(tiny_bert, tokenizer, tmp_path):
    model = tiny_bert(hidden=32, ffn=64)
    with pytest.raises(SlimformerError, match="outside 1..32"):
        apply_step(model, Factorize(rank=33), _ctx(tokenizer, tmp_path))
    with pytest.raises(SlimformerError, match="outside"):
        factorize_linears(model, {"bert.encoder.layer.0.intermediate.dense": 0})
    with pytest.raises(SlimformerError, match="no module"):
        factorize_linears(model, {"bert.nope": 2})
    with pytest.raises(SlimformerError, match="not a Linear"):
        factorize_linears(model, {"bert.encoder.layer.0.output.LayerNorm": 2})
    with pytest.raises(SlimformerError, match="outside"):
        factorize_embeddings(model, 33)
    with pytest.raises(SlimformerError, match="no Linear"):
        apply_step(model, Factorize(rank=2, include=["nothing-matches"]), _ctx(tokenizer, tmp_path))


def test_embeddings_full_rank_identical(tiny_bert, batch):
    model = tiny_bert(hidden=32)
    ref = model(**batch).logits
    before = models.num_params(model)
    factorize_embeddings(model, 32)
    emb = model.bert.embeddings.word_embeddings
    assert isinstance(emb, FactorizedEmbedding) and emb.embed.weight.shape == (30522, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, ref, atol=1e-5, rtol=0)
    assert models.num_params(model) == before + 32 * 32
    with pytest.raises(SlimformerError, match="not an nn.Embedding"):
        factorize_embeddings(model, 8)


def test_embeddings_step_params_and_energy(tiny_bert, tokenizer, tmp_path):
    model = tiny_bert(hidden=32)
    before = models.num_params(model)
    out = apply_step(model, FactorizeEmbeddings(size=8), _ctx(tokenizer, tmp_path))
    assert models.num_params(out) == before - 30522 * 32 + 30522 * 8 + 8 * 32
    ctx = _ctx(tokenizer, tmp_path)
    apply_step(tiny_bert(hidden=32), FactorizeEmbeddings(energy=0.5), ctx)
    assert 1 <= ctx.info["embedding_size"] < 32


def test_masked_lm_refused():
    from transformers import BertConfig, BertForMaskedLM

    m = BertForMaskedLM(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32))
    with pytest.raises(SlimformerError, match="tied"):
        factorize_embeddings(m, 4)


def test_reload_fresh_process_and_onnx(tiny_bert, tokenizer, tmp_path):
    from slimformer.export import to_onnx

    model = tiny_bert()
    factorize_embeddings(model, 12)
    apply_step(model, Factorize(ratio=0.5), _ctx(tokenizer, tmp_path))
    ref = logits(model, tokenizer)
    models.save(model, tokenizer, tmp_path / "m")
    torch.testing.assert_close(fresh_process_logits(tmp_path / "m"), ref, atol=1e-6, rtol=0)
    reloaded, _ = models.load(str(tmp_path / "m"))
    assert isinstance(reloaded.bert.encoder.layer[1].output.dense, LowRankLinear)
    res = to_onnx(model, tokenizer, tmp_path / "m.onnx", atol=1e-4)
    assert res["max_abs_diff"] < 1e-4


def test_recipe_factorize_then_distill(tiny_bert, tokenizer, batch, tmp_path):
    rows = [Example(t, i % 2) for i, t in enumerate(["good film", "bad plot", "fine acting", "dull and long"] * 4)]
    task = TaskData("toy", ["0", "1"], {"train": rows, "dev": rows[:4]})
    steps = [{"step": "factorize_embeddings", "size": 16}, {"step": "factorize", "ratio": 0.5},
             {"step": "distill", "kd": 1.0, "ce": 0.5, "hidden": 1.0, "max_steps": 2, "batch_size": 8,
              "save_steps": 1}]
    ev = EvalSettings(max_len=16, seq_len=16, batches=[1], latency_budget_s=0.2)
    result = compress(tiny_bert(), tokenizer, steps, tmp_path / "out", task=task, eval_settings=ev, seed=1)
    assert result.rows[-1]["info"]["distill"]["train_loss"] is not None
    assert result.rows[2]["params"] < result.rows[1]["params"] < result.rows[0]["params"]
    reloaded, _ = models.load(str(tmp_path / "out"))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, result.model.eval()(**batch).logits, atol=0, rtol=0)


def test_recipe_file_parses():
    from pathlib import Path

    from slimformer.recipe import read_recipe

    root = Path(__file__).resolve().parents[1]
    for name in ("factorize_distill.yaml", "share_distill.yaml"):
        steps = read_recipe(root / "recipes" / name).parsed_steps()
        assert steps[-1].step == "distill"


def test_distilbert_factorize_share_reload(tokenizer, tmp_path):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from slimformer.share import share_layers

    torch.manual_seed(0)
    m = DistilBertForSequenceClassification(DistilBertConfig(dim=32, hidden_dim=64, n_layers=2, n_heads=4,
                                                             max_position_embeddings=160)).eval()
    factorize_embeddings(m, 8)
    share_layers(m, [[0, 1]])
    ranks, _ = choose_ranks(m, Factorize(ratio=0.5))
    factorize_linears(m, ranks)
    assert len(ranks) == 12 and all(".attention." in n or ".ffn." in n for n in ranks)
    models.save(m, tokenizer, tmp_path / "m")
    torch.testing.assert_close(fresh_process_logits(tmp_path / "m"), logits(m, tokenizer), atol=1e-6, rtol=0)


def test_token_weighted_svd_favours_weighted_rows():
    from slimformer.factorize.embeddings import subspace

    torch.manual_seed(0)
    w = torch.randn(60, 12)
    emb = nn.Embedding.from_pretrained(w.clone())
    weights = torch.ones(60)
    weights[:4] = 1e6  # four "frequent" tokens

    def row_err(mod: FactorizedEmbedding) -> torch.Tensor:
        with torch.no_grad():
            return (mod(torch.arange(60)) - w).norm(dim=1)

    plain, weighted = FactorizedEmbedding.from_embedding(emb, 4), FactorizedEmbedding.from_embedding(emb, 4, weights)
    assert float(row_err(weighted)[:4].max()) < 1e-3 < float(row_err(plain)[:4].max())
    # uniform weights are the plain SVD; every row is projected onto an orthonormal basis
    torch.testing.assert_close(row_err(FactorizedEmbedding.from_embedding(emb, 4, torch.full((60,), 3.0))),
                               row_err(plain), atol=1e-5, rtol=0)
    basis = subspace(w, 4, weights)
    torch.testing.assert_close(basis.T @ basis, torch.eye(4, dtype=basis.dtype), atol=1e-9, rtol=0)
    with pytest.raises(SlimformerError, match="non-negative row weights"):
        FactorizedEmbedding.from_embedding(emb, 4, -torch.ones(60))


def test_token_weights_count_ids(tokenizer):
    from slimformer.factorize.embeddings import token_weights

    w = token_weights(tokenizer, ["good good film", "bad film"], 30522, power=1.0)
    good, film = tokenizer.convert_tokens_to_ids(["good", "film"])
    assert float(w[good]) == 3.0 and float(w[film]) == 3.0 and float(w[tokenizer.cls_token_id]) == 3.0
    assert float(w.min()) == 1.0  # unseen tokens keep weight (0 + 1) ** power


def test_embeddings_step_frequency_weighting(tiny_bert, tokenizer, tmp_path):
    texts = ["a good film", "a bad film", "good acting", "dull and bad"] * 4
    task = TaskData("t", ["neg", "pos"], {"train": [Example(t, i % 2) for i, t in enumerate(texts)]})
    model = tiny_bert(hidden=32)
    plain = apply_step(tiny_bert(hidden=32), FactorizeEmbeddings(size=8), _ctx(tokenizer, tmp_path))
    ctx = _ctx(tokenizer, tmp_path, task=task)
    out = apply_step(model, FactorizeEmbeddings(size=8, weighting="frequency"), ctx)
    assert ctx.info["weighting"] == "frequency" and ctx.info["counted_tokens_seen"] >= 8
    assert models.num_params(out) == models.num_params(plain)
    assert not torch.equal(out.bert.embeddings.word_embeddings.project.weight,
                           plain.bert.embeddings.word_embeddings.project.weight)
    ref = logits(out, tokenizer)
    models.save(out, tokenizer, tmp_path / "m")
    reloaded, _ = models.load(str(tmp_path / "m"))
    torch.testing.assert_close(logits(reloaded, tokenizer), ref, atol=1e-6, rtol=0)
    with pytest.raises(SlimformerError, match="needs task data"):
        apply_step(tiny_bert(hidden=32), FactorizeEmbeddings(size=8, weighting="frequency"), _ctx(tokenizer, tmp_path))
