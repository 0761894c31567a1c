"""Shared fixtures: tiny random-config models built in the test, and the packaged MiniLM tokenizer."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("SLIMFORMER_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
torch.set_num_threads(1)


def make_tiny_bert(num_labels: int = 2, layers: int = 2, heads: int = 4, hidden: int = 32, ffn: int = 64,
                   vocab: int = 30522, seed: int = 0, model_type: str = "bert"):
    """A random-weight sequence classifier of the given size (BERT layout; roberta also works)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(model_type, vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                               num_attention_heads=heads, intermediate_size=ffn, max_position_embeddings=160,
                               num_labels=num_labels, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if model_type == "roberta":
        cfg.pad_token_id = 1
        cfg.max_position_embeddings = 162
    return AutoModelForSequenceClassification.from_config(cfg).eval()


@pytest.fixture
def tiny_bert():
    return make_tiny_bert


@pytest.fixture(scope="session")
def tokenizer():
    """The packaged MiniLM WordPiece tokenizer (local files, no network)."""
    from transformers import AutoTokenizer

    from slimformer.models import resolve

    return AutoTokenizer.from_pretrained(resolve("minilm"))


@pytest.fixture
def batch(tokenizer):
    enc = tokenizer(["a fine film , well acted", "dull and far too long to sit through", "ok"],
                    padding=True, return_tensors="pt")
    return dict(enc)


def write_tiny_sst2(folder, n: int = 40):
    """A learnable SST-2-format task (train = dev = test) of n lines in folder; returns the loaded TaskData."""
    from slimformer import tasks

    rows = "\n".join(f"{i % 2} {'good great fine' if i % 2 else 'bad awful dull'} film number {i}" for i in range(n))
    for split in ("train", "dev", "test"):
        (folder / f"stsa.binary.{split}").write_text(rows + "\n")
    return tasks.load("sst2", folder)


@pytest.fixture
def cli_inputs(tmp_path, tokenizer):
    """tmp/in holding a saved 2-label tiny BERT (model/), SST-2-format data (data/) and a one-step recipe."""
    from slimformer import models

    root = tmp_path / "in"
    models.save(make_tiny_bert(), tokenizer, root / "model")
    data = root / "data"
    data.mkdir()
    lines = "\n".join(f"{i % 2} {'good' if i % 2 else 'bad'} movie {i}" for i in range(16))
    for split in ("train", "dev", "test"):
        (data / f"stsa.binary.{split}").write_text(lines + "\n")
    (root / "r.yaml").write_text("eval: {seq_len: 8, batches: [1], latency_budget_s: 0.02}\n"
                                 "steps:\n  - {step: drop_layers, keep: 1}\n")
    return root
