"""Cross-layer sharing: same tensors in memory, stored once on disk, reload, group validation, ALBERT export."""
from __future__ import annotations

import pytest
import torch

from helpers import fresh_process_logits, logits
from slimformer import SlimformerError, models
from slimformer.factorize import factorize_embeddings
from slimformer.fsutil import weights_size
from slimformer.recipe import EvalSettings, compress
from slimformer.share import ShareLayers, make_groups, share_layers, sharing_groups, to_albert
from slimformer.steps import Context, apply_step, parse_step
from slimformer.tasks import Example, TaskData


def _layer(model, i):
    return model.bert.encoder.layer[i]


def test_groups_of_two_share_tensors(tiny_bert, tokenizer, tmp_path):
    model = tiny_bert(layers=4)
    per_layer = sum(p.numel() for p in _layer(model, 0).parameters())
    before = models.num_params(model)
    ctx = Context(tokenizer=tokenizer, task=None, work_dir=tmp_path)
    out = apply_step(model, ShareLayers(group_size=2), ctx)
    assert ctx.info["groups"] == [[0, 1], [2, 3]]
    assert _layer(out, 1).attention.self.query.weight is _layer(out, 0).attention.self.query.weight
    assert _layer(out, 3).output.LayerNorm.bias is _layer(out, 2).output.LayerNorm.bias
    assert _layer(out, 2).intermediate.dense.weight is not _layer(out, 0).intermediate.dense.weight
    assert _layer(out, 1) is not _layer(out, 0)  # modules stay distinct; parameters are shared
    assert models.num_params(out) == before - 2 * per_layer
    assert sharing_groups(out) == [[0, 1], [2, 3]]


@pytest.mark.parametrize("init,src", [("first", [0]), ("middle", [1]), ("last", [2]), ("average", [0, 1, 2])])
def test_init_choices(tiny_bert, init, src):
    model = tiny_bert(layers=3)
    want = torch.stack([_layer(model, i).intermediate.dense.weight.detach().clone() for i in src]).mean(0)
    share_layers(model, [[0, 1, 2]], init)
    for i in range(3):
        torch.testing.assert_close(_layer(model, i).intermediate.dense.weight.detach(), want)


def test_stored_once_and_reload_fresh_process(tiny_bert, tokenizer, tmp_path):
    model = tiny_bert(layers=4, hidden=64, ffn=128)
    models.save(model, tokenizer, tmp_path / "dense")
    share_layers(model, [[0, 1, 2, 3]], "average")
    models.save(model, tokenizer, tmp_path / "shared")
    per_layer_bytes = 4 * sum(p.numel() for p in _layer(model, 0).parameters())
    saved = weights_size(tmp_path / "dense") - weights_size(tmp_path / "shared")
    assert saved >= 3 * per_layer_bytes  # three of the four layers are not written again
    from safetensors import safe_open

    with safe_open(str(tmp_path / "shared" / "model.safetensors"), "pt") as f:
        assert sum(1 for k in f.keys() if k.endswith("intermediate.dense.weight")) == 1
    ref = logits(model, tokenizer)
    torch.testing.assert_close(fresh_process_logits(tmp_path / "shared"), ref, atol=1e-6, rtol=0)
    reloaded, _ = models.load(str(tmp_path / "shared"))
    assert _layer(reloaded, 3).attention.output.dense.weight is _layer(reloaded, 0).attention.output.dense.weight


@pytest.mark.parametrize("groups,msg", [
    ([[0, 1], [1, 2, 3]], "more than one group"),
    ([[0, 1], [2, 4]], "unknown layer index 4"),
    ([[0, 1], [3]], r"layers \[2\] are in no group"),
    ([[0, -1], [2, 3]], "unknown layer index -1"),
    ([[0, 1], []], "non-empty"),
])
def test_bad_group_maps(tiny_bert, tokenizer, tmp_path, groups, msg):
    model = tiny_bert(layers=4)
    with pytest.raises(SlimformerError, match=msg):
        apply_step(model, ShareLayers(groups=groups), Context(tokenizer=tokenizer, task=None, work_dir=tmp_path))
    assert sharing_groups(model) == [[0], [1], [2], [3]]  # nothing changed


def test_bad_configs_and_shapes(tiny_bert):
    with pytest.raises(SlimformerError):
        parse_step({"step": "share_layers", "group_size": 0}, 0)
    with pytest.raises(SlimformerError):
        parse_step({"step": "share_layers", "group_size": 2, "groups": [[0, 1]]}, 0)
    with pytest.raises(SlimformerError):
        parse_step({"step": "share_layers", "init": "random"}, 0)
    assert make_groups(5, 2) == [[0, 1], [2, 3], [4]]
    assert make_groups(3) == [[0, 1, 2]]
    model = tiny_bert(layers=2)
    model.bert.encoder.layer[1].intermediate.dense = torch.nn.Linear(32, 48)
    with pytest.raises(SlimformerError, match="differ in structure"):
        share_layers(model, [[0, 1]])


def test_recipe_share_then_distill(tiny_bert, tokenizer, batch, tmp_path):
    rows = [Example(t, i % 2) for i, t in enumerate(["good film", "bad plot", "fine acting", "dull and long"] * 4)]
    task = TaskData("toy", ["0", "1"], {"train": rows, "dev": rows[:4]})
    steps = [{"step": "share_layers", "group_size": 2},
             {"step": "distill", "kd": 1.0, "ce": 0.5, "hidden": 1.0, "max_steps": 2, "batch_size": 8,
              "save_steps": 1}]
    ev = EvalSettings(max_len=16, seq_len=16, batches=[1], latency_budget_s=0.2)
    result = compress(tiny_bert(layers=4), tokenizer, steps, tmp_path / "out", task=task, eval_settings=ev, seed=1)
    assert result.rows[-1]["info"]["distill"]["train_loss"] is not None
    assert sharing_groups(result.model) == [[0, 1], [2, 3]]  # training kept the tensors tied
    reloaded, _ = models.load(str(tmp_path / "out"))
    assert sharing_groups(reloaded) == [[0, 1], [2, 3]]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, result.model.eval()(**batch).logits, atol=0, rtol=0)


@pytest.mark.parametrize("groups", [[[0, 1], [2, 3]], [[0, 1, 2, 3]], [[0], [1], [2], [3]]])
def test_to_albert_same_logits(tiny_bert, tokenizer, tmp_path, groups):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = tiny_bert(layers=4)
    if len(groups) < 4:
        share_layers(model, groups, "average")
    ref = logits(model, tokenizer)
    to_albert(model, tmp_path / "albert", tokenizer)
    albert = AutoModelForSequenceClassification.from_pretrained(tmp_path / "albert").eval()
    assert type(albert).__name__ == "AlbertForSequenceClassification"
    assert albert.config.num_hidden_groups == len(groups)
    tok = AutoTokenizer.from_pretrained(tmp_path / "albert")
    torch.testing.assert_close(logits(albert, tok), ref, atol=1e-5, rtol=0)


def test_to_albert_refusals(tiny_bert, tokenizer, tmp_path):
    model = tiny_bert(layers=4)
    share_layers(model, [[0, 2], [1, 3]])
    with pytest.raises(SlimformerError, match="consecutive"):
        to_albert(model, tmp_path / "a")
    model = tiny_bert(layers=4)
    factorize_embeddings(model, 8)
    with pytest.raises(SlimformerError, match="factorized word embeddings"):
        to_albert(model, tmp_path / "b")
    from slimformer.factorize import factorize_linears

    model = tiny_bert(layers=2)
    factorize_linears(model, {"bert.encoder.layer.0.intermediate.dense": 4})
    with pytest.raises(SlimformerError, match="structure was changed"):
        to_albert(model, tmp_path / "c")
    with pytest.raises(SlimformerError, match="only BERT"):
        to_albert(tiny_bert(model_type="roberta"), tmp_path / "d")
    assert not (tmp_path / "a").exists()


def test_factorize_after_sharing_keeps_tensors_shared(tiny_bert, tokenizer, tmp_path):
    from slimformer.factorize import Factorize

    model = tiny_bert(layers=4)
    ctx = Context(tokenizer=tokenizer, task=None, work_dir=tmp_path)
    apply_step(model, ShareLayers(group_size=2), ctx)
    shared = models.num_params(model)
    apply_step(model, Factorize(ratio=0.5), ctx)
    assert sharing_groups(model) == [[0, 1], [2, 3]]
    q0, q1 = _layer(model, 0).attention.self.query, _layer(model, 1).attention.self.query
    assert q0 is not q1 and q0.first.weight is q1.first.weight and q0.second.bias is q1.second.bias
    # per shared layer: 4 attention 32x32 at rank 8 and 2 FFN 32x64 at rank 10, two distinct layers
    assert models.num_params(model) == shared - 2 * (4 * (32 * 32 - 8 * 64) + 2 * (32 * 64 - 10 * 96))
    ref = logits(model, tokenizer)
    models.save(model, tokenizer, tmp_path / "m")
    torch.testing.assert_close(fresh_process_logits(tmp_path / "m"), ref, atol=1e-6, rtol=0)
    model.save_pretrained(tmp_path / "hf")  # Trainer checkpoints: transformers accepts the declared aliases
