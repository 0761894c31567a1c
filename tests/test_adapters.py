"""Architecture adapters: the same generic operations on BERT, RoBERTa and DistilBERT."""
from __future__ import annotations

import pytest
import torch

from slimformer import models
from slimformer.models import get_adapter
from slimformer.profile import profile_model
from slimformer.prune.layers import keep_layers

from helpers import fresh_process_logits, logits


def tiny_distilbert(layers: int = 3):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    cfg = DistilBertConfig(vocab_size=30522, dim=32, n_layers=layers, n_heads=4, hidden_dim=64, dropout=0.0,
                           attention_dropout=0.0, max_position_embeddings=160, num_labels=2)
    return DistilBertForSequenceClassification(cfg).eval()


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert"])
def test_adapter_finds_the_parts(tiny_bert, kind):
    m = tiny_distilbert() if kind == "distilbert" else tiny_bert(layers=3, model_type=kind)
    ad = get_adapter(m)
    assert len(ad.layers(m)) == 3
    parts = ad.attention(m)[0]
    assert parts.heads == 4 and parts.head_dim == 8 and parts.unit == "encoder.0.self"
    assert parts.q.in_features == 32 and parts.o.out_features == 32
    assert ad.ffn(m)[0].width == 64 and ad.ffn(m)[0].down.out_features == 32
    assert ad.word_embeddings(m).num_embeddings == 30522
    assert ad.head_modules(m)


def test_distilbert_profile_and_layer_drop_reload(tmp_path, tokenizer):
    m = tiny_distilbert()
    prof = profile_model(m, tokenizer, seq_len=16, batch=2, runs=2)
    assert sum(r["params"] for r in prof["rows"]) == sum(p.numel() for p in m.parameters())
    assert prof["by_kind"]["ffn"]["params_share"] > 0 and prof["by_kind"]["attention"]["params_share"] > 0
    keep_layers(m, [0, 2])
    models.save(m, tokenizer, tmp_path / "d")
    assert (fresh_process_logits(tmp_path / "d") - logits(m, tokenizer)).abs().max() < 1e-5
