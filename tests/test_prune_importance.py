"""Importance scores: gate gradients match finite differences; magnitude and selection rules."""
from __future__ import annotations

import pytest
import torch

from families import inputs, tiny
from slimformer.models import get_adapter
from slimformer.prune.activation_importance import activation_importance
from slimformer.prune.gates import gated, ones_gates
from slimformer.prune.importance import gradient_importance, magnitude_importance, normalize_per_layer
from slimformer.prune.schedule import round_target, select


def test_gradient_importance_matches_finite_difference(tiny_bert, batch):
    model = tiny_bert(layers=2)
    labelled = {**batch, "labels": torch.tensor([0, 1, 1])}
    scores = gradient_importance(model, [labelled], "heads")
    assert all(p.requires_grad for p in model.parameters())  # restored
    eps = 1e-3
    for layer, head in ((0, 2), (1, 0)):
        losses = []
        for sign in (1, -1):
            gates = ones_gates(model, "heads")
            gates[f"encoder.{layer}.self"][head] += sign * eps
            with torch.no_grad(), gated(model, heads=gates):
                losses.append(float(model(**labelled).loss))
        fd = abs(losses[0] - losses[1]) / (2 * eps)
        assert abs(fd - float(scores[f"encoder.{layer}.self"][head])) < 1e-3 + 1e-2 * fd


def test_ffn_gradient_scores_shape_and_sign(tiny_bert, batch):
    model = tiny_bert(layers=2, ffn=48)
    scores = gradient_importance(model, [{**batch, "labels": torch.tensor([0, 1, 1])}] * 2, "ffn")
    assert [s.shape[0] for s in scores.values()] == [48, 48] and all((s >= 0).all() for s in scores.values())
    norm = normalize_per_layer(scores)
    assert all(abs(float(s.norm()) - 1) < 1e-5 for s in norm.values())


def test_magnitude_importance_is_weight_norm(tiny_bert):
    model = tiny_bert(layers=1)
    att = get_adapter(model).attention(model)[0]
    s = magnitude_importance(model, "heads")["encoder.0.self"]
    d = att.head_dim
    expect = torch.cat([att.q.weight[d:2 * d].flatten(), att.k.weight[d:2 * d].flatten(),
                        att.v.weight[d:2 * d].flatten(), att.o.weight[:, d:2 * d].flatten()]).detach().norm()
    assert abs(float(s[1]) - float(expect)) < 1e-5


def test_global_selection_keeps_min_per_layer_and_best_overall():
    scores = {0: torch.tensor([0.9, 0.8, 0.7, 0.6]), 1: torch.tensor([0.1, 0.05, 0.2, 0.01])}
    assert select(scores, 3) == {0: [0, 1], 1: [2]}  # layer 1 keeps its best head even though it ranks low
    assert select(scores, 5, min_per_layer=2) == {0: [0, 1, 2], 1: [0, 2]}
    assert select(scores, [1, 2]) == {0: [0], 1: [0, 2]}


def test_geometric_schedule():
    assert [round_target(12, 48, k, 2) for k in (1, 2)] == [24, 12]
    assert [round_target([3, 1], [12, 12], k, 2) for k in (1, 2)] == [[6, 3], [3, 1]]


@pytest.mark.parametrize("family", ["bert", "llama", "gpt2", "marian"])
def test_activation_importance_is_each_units_output_contribution(family):
    """A unit's activation score equals the mean, over unpadded tokens, of the norm of the change in its block's
    output when the unit is gated off (heads summed over a key/value group; GPT-2's Conv1D; cross-attention)."""
    model = tiny(family)
    batch = inputs(model)
    adapter = get_adapter(model)
    mask = batch["attention_mask"].float()
    for kind in ("heads", "ffn"):
        scores = activation_importance(model, [batch], kind)
        units = adapter.attention(model) if kind == "heads" else adapter.ffn(model)
        for u in units[:3]:
            mod = u.o if kind == "heads" else u.down
            n = u.heads if kind == "heads" else u.width
            outs = []
            hook = mod.register_forward_hook(lambda _m, _a, out: outs.append(out.detach()))
            try:
                for j in (None, 0, n - 1):
                    gate = torch.ones(n)
                    if j is not None:
                        gate[j] = 0
                    with torch.no_grad(), gated(model, **{"heads" if kind == "heads" else "neurons": {u.unit: gate}}):
                        model(**batch)
            finally:
                hook.remove()
            full = outs[0]
            decoder_side = model.config.is_encoder_decoder and u.unit.startswith("decoder")
            w = mask if not decoder_side else torch.ones(full.shape[:-1])
            expect = [float(((full - o).norm(dim=-1) * w).sum() / w.sum()) for o in outs[1:]]
            group = u.group if kind == "heads" else 1
            got = [float(scores[u.unit][0]), float(scores[u.unit][-1])]
            if group == 1:
                assert got == pytest.approx(expect, rel=1e-4, abs=1e-6), (family, kind, u.unit)
            else:  # a KV group's score sums its query heads: check it bounds each head's share from above
                assert got[0] >= expect[0] - 1e-6 and got[-1] >= expect[1] - 1e-6


def test_activation_importance_zero_output_weights_score_zero():
    model = tiny("llama")
    f = get_adapter(model).ffn(model)[0]
    with torch.no_grad():
        f.down.weight[:, 5] = 0
    s = activation_importance(model, [inputs(model)], "ffn")[f.unit]
    assert float(s[5]) == 0 and bool((s[:5] > 0).all())
