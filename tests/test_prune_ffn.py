"""FFN pruning: gate 0 equals physical removal, exact parameter counts, reload, ONNX, clear errors."""
from __future__ import annotations

import pytest
import torch

import slimformer as sf
from slimformer import SlimformerError, models
from slimformer.models import get_adapter
from slimformer.models.io import num_params
from slimformer.prune.ffn import keep_ffn
from slimformer.prune.gates import gated, mask_gates
from slimformer.prune.heads import keep_heads

from helpers import fresh_process_logits, logits

FFN = {0: list(range(0, 64, 2)), 2: [5, 7, 9]}  # 32, 64 (untouched), 3 of 64 neurons
HEADS = {0: [1, 3], 1: [0, 1, 2], 2: [2]}


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_gate_zero_equals_physical_removal(tiny_bert, batch, model_type):
    model = tiny_bert(layers=3, model_type=model_type)
    gates = dict(heads=mask_gates(model, "heads", HEADS), neurons=mask_gates(model, "ffn", FFN))
    with torch.no_grad(), gated(model, **gates):
        ref = model(**batch).logits
    keep_heads(model, HEADS)
    keep_ffn(model, FFN)
    with torch.no_grad():
        got = model(**batch).logits
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
    ad = get_adapter(model)
    assert [f.width for f in ad.ffn(model)] == [32, 64, 3]


def test_parameter_count_and_targets(tiny_bert):
    model = tiny_bert(layers=3, hidden=32, ffn=64)
    before = num_params(model)
    keep_ffn(model, FFN)
    assert before - num_params(model) == (32 + 61) * (32 + 1 + 32)  # up row + bias, down column
    model = tiny_bert(layers=3)
    model, info = sf.prune_ffn(model, sf.PruneFFN(keep=0.25, criterion="magnitude"))
    assert info["kept_total"] == 48 and sum(f.width for f in get_adapter(model).ffn(model)) == 48
    model = tiny_bert(layers=3)
    model, info = sf.prune_ffn(model, sf.PruneFFN(keep_count=10, scope="per_layer", criterion="magnitude", rounds=3))
    assert info["kept_per_layer"] == [10, 10, 10]
    assert [r["kept_per_layer"] for r in info["rounds"]][:2] == [[34, 34, 34], [19, 19, 19]]  # 64*(10/64)^(k/3)


def test_reload_fresh_process_and_onnx(tiny_bert, tokenizer, tmp_path):
    from slimformer.export import to_onnx

    model = tiny_bert(layers=3)
    keep_heads(model, HEADS)
    keep_ffn(model, FFN)
    models.save(model, tokenizer, tmp_path / "m")
    assert (fresh_process_logits(tmp_path / "m") - logits(model, tokenizer)).abs().max() < 1e-5
    assert to_onnx(model, tokenizer, tmp_path / "m.onnx")["max_abs_diff"] < 1e-4


def test_bad_targets(tiny_bert):
    model = tiny_bert(layers=2)
    for kwargs in (dict(keep=0.0), dict(keep=1.01), dict(keep=-1)):
        with pytest.raises(SlimformerError, match="prune_ffn: keep must be a ratio"):
            sf.PruneFFN(**kwargs)
    with pytest.raises(SlimformerError, match="unknown layer index 2"):
        keep_ffn(model, {2: [0]})
    with pytest.raises(SlimformerError, match="every FFN neuron of encoder.0"):
        keep_ffn(model, {0: []})
    with pytest.raises(SlimformerError, match="exceeds the 64 FFN neurons of layer 0"):
        sf.prune_ffn(model, sf.PruneFFN(keep_count=65, scope="per_layer", criterion="magnitude"))


def test_recipe_step_errors_name_the_step():
    from slimformer.steps import parse_step

    with pytest.raises(SlimformerError, match="prune_ffn: keep must be a ratio in"):
        parse_step({"step": "prune_ffn", "keep": 2}, 0)
    with pytest.raises(SlimformerError, match=r"recipe step 1 \(prune_heads\): scope"):
        parse_step({"step": "prune_heads", "keep": 0.5, "scope": "layerwise"}, 0)
    assert parse_step({"step": "prune_heads", "keep": 0.5}, 0).needs_data
    assert not parse_step({"step": "prune_ffn", "keep": 0.5, "criterion": "magnitude"}, 0).needs_data
