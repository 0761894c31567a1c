"""Loading, saving, fresh-process reload and load errors."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import slimformer
from slimformer import models
from slimformer.errors import SlimformerError
from slimformer.prune.layers import keep_layers

from helpers import fresh_process_logits, logits


def test_plain_save_loads_with_transformers_and_slimformer(tmp_path, tiny_bert, tokenizer):
    from transformers import AutoModelForSequenceClassification

    m = tiny_bert()
    models.save(m, tokenizer, tmp_path / "m")
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m").eval()
    assert torch.equal(logits(hf, tokenizer), logits(m, tokenizer))
    assert torch.equal(fresh_process_logits(tmp_path / "m"), logits(m, tokenizer))


def test_reshaped_model_reloads_in_fresh_process(tmp_path, tiny_bert, tokenizer):
    m = tiny_bert(layers=4, model_type="roberta")
    keep_layers(m, [1, 3])
    models.save(m, tokenizer, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 2 and cfg["slimformer"]["base_config"]["num_hidden_layers"] == 4
    assert (fresh_process_logits(tmp_path / "m") - logits(m, tokenizer)).abs().max() < 1e-5


def test_save_is_atomic_and_replaces(tmp_path, tiny_bert, tokenizer):
    out = tmp_path / "m"
    models.save(tiny_bert(seed=1), tokenizer, out)
    models.save(tiny_bert(seed=2), tokenizer, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.parametrize("case,pattern", [
    ("missing", "no such model directory"),
    ("not_a_model", "not a model directory"),
    ("corrupt_config", "cannot read the model config"),
    ("corrupt_weights", "cannot load the weights"),
    ("unknown_arch", "cannot read the model config"),
])
def test_load_errors_are_clear(tmp_path, tiny_bert, tokenizer, case, pattern):
    d = tmp_path / "m"
    if case != "missing":
        models.save(tiny_bert(), tokenizer, d)
    if case == "missing":
        d = tmp_path / "nope" / "model"
    elif case == "not_a_model":
        (d / "config.json").unlink()
    elif case == "corrupt_config":
        (d / "config.json").write_text("{not json")
    elif case == "corrupt_weights":
        (d / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    elif case == "unknown_arch":
        cfg = json.loads((d / "config.json").read_text())
        cfg["model_type"] = "no-such-arch"
        (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SlimformerError, match=pattern) as e:
        models.load(str(d))
    assert "\n" not in str(e.value)


def test_unsupported_architecture_for_techniques(tiny_bert):
    from transformers import AlbertConfig, AlbertForSequenceClassification

    m = AlbertForSequenceClassification(AlbertConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2,
                                                     intermediate_size=32, embedding_size=8, vocab_size=100))
    with pytest.raises(SlimformerError, match="no adapter for model type 'albert'"):
        models.get_adapter(m)


@pytest.mark.integration
def test_packaged_minilm_loads_and_is_not_modified(tmp_path):
    path = Path(models.resolve("minilm"))
    digest = hashlib.md5((path / "model.safetensors").read_bytes()).hexdigest()
    model, tok = slimformer.load("minilm", head="classification", num_labels=2)
    assert models.num_params(model) == pytest.approx(22.7e6, rel=0.01)
    keep_layers(model, [0, 1])
    models.save(model, tok, tmp_path / "m")
    assert hashlib.md5((path / "model.safetensors").read_bytes()).hexdigest() == digest
    assert (fresh_process_logits(tmp_path / "m") - logits(model, tok)).abs().max() < 1e-5


def test_saved_files_get_default_permissions(tmp_path, tiny_bert, tokenizer):
    import os
    import stat

    from slimformer.fsutil import write_json

    mask = os.umask(0)
    os.umask(mask)
    out = models.save(tiny_bert(), tokenizer, tmp_path / "m")
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~mask  # not mkdtemp's private 0700
    assert stat.S_IMODE((out / "model.safetensors").stat().st_mode) == 0o666 & ~mask
    write_json(tmp_path / "r.json", {"a": 1})
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o666 & ~mask
