"""Distillation loss terms against direct computations on hand-made tensors; layer-map validation."""
from __future__ import annotations

import math

import pytest
import torch

from slimformer.distill import losses as L
from slimformer.distill.layer_map import build_layer_map, describe_layer_map
from slimformer.errors import SlimformerError
from slimformer.steps import parse_step


def _softmax(xs: list[float], T: float = 1.0) -> list[float]:
    e = [math.exp(x / T) for x in xs]
    return [v / sum(e) for v in e]


def test_kd_matches_direct_kl_times_t_squared():
    s, t = [1.0, 2.0, 0.5], [3.0, -1.0, 0.0]
    for T in (1.0, 2.0, 4.0):
        ps, pt = _softmax(s, T), _softmax(t, T)
        kl = sum(a * math.log(a / b) for a, b in zip(pt, ps))
        got = L.kd_loss(torch.tensor([s]), torch.tensor([t]), T)
        assert got.item() == pytest.approx(kl * T * T, rel=1e-5)


def test_kd_t_squared_keeps_gradient_scale():
    """Without T^2 the soft-target gradient shrinks like 1/T^2; with it, it stays of the same order."""
    s0, t = torch.tensor([[0.3, -0.2, 0.1]]), torch.tensor([[0.5, 0.0, -0.4]])
    norms = []
    for T in (4.0, 8.0):
        s = s0.clone().requires_grad_(True)
        L.kd_loss(s, t, T).backward()
        norms.append(s.grad.norm().item())
    assert norms[0] / norms[1] == pytest.approx(1.0, abs=0.1)
    s = s0.clone().requires_grad_(True)
    (L.kd_loss(s, t, 8.0) / 64).backward()  # the unscaled KL
    assert s.grad.norm().item() < norms[1] / 30


def test_kd_mask_selects_rows():
    s = torch.tensor([[[1.0, 0.0], [0.0, 5.0]]])
    t = torch.tensor([[[0.0, 1.0], [9.0, 0.0]]])
    mask = torch.tensor([[True, False]])
    assert L.kd_loss(s, t, 1.0, mask).item() == pytest.approx(L.kd_loss(s[:, :1], t[:, :1], 1.0).item())


def test_hard_ce():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0])
    p0, p1 = _softmax([2.0, 0.0])[0], _softmax([0.0, 1.0])[0]
    assert L.hard_ce(logits, labels).item() == pytest.approx(-(math.log(p0) + math.log(p1)) / 2, rel=1e-6)


def test_cosine_over_real_tokens():
    s = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    t = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert L.cosine_loss(s, t, mask).item() == pytest.approx(((1 - 1) + (1 - 0)) / 2)


def test_hidden_mse_over_real_tokens():
    s = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]])
    t = torch.tensor([[[0.0, 0.0], [9.0, 9.0]]])
    assert L.hidden_mse(s, t, torch.tensor([[1, 0]])).item() == pytest.approx((1 + 4) / 2)
    assert L.hidden_mse(s, t).item() == pytest.approx((1 + 4 + 81 + 81) / 4)


def test_attention_kl():
    t = torch.tensor([0.5, 0.5])
    s = torch.tensor([0.25, 0.75])
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    sa = s.expand(1, 2, 2, 2).clone()  # [batch, heads, q, k]
    ta = t.expand(1, 2, 2, 2).clone()
    assert L.attention_loss(sa, ta).item() == pytest.approx(kl, rel=1e-5)
    assert L.attention_loss(sa, ta, torch.tensor([[1, 0]])).item() == pytest.approx(kl, rel=1e-5)
    assert L.attention_loss(ta, ta).item() == pytest.approx(0.0, abs=1e-6)
    # different head counts: compared after averaging over heads
    assert L.attention_loss(sa[:, :1], ta).item() == pytest.approx(kl, rel=1e-5)


def test_pkd_normalised_cls():
    s = torch.tensor([[3.0, 0.0]])
    t = torch.tensor([[0.0, 7.0]])
    assert L.pkd_loss(s, t).item() == pytest.approx(2.0)  # |(1,0) - (0,1)|^2
    assert L.pkd_loss(s, 10 * s).item() == pytest.approx(0.0, abs=1e-7)


def test_layer_maps():
    assert build_layer_map("uniform", 3, 6) == [(0, 1), (1, 3), (2, 5)]
    assert build_layer_map("skip", 2, 6) == [(0, 2), (1, 5)]
    assert build_layer_map("last", 3, 6) == [(0, 3), (1, 4), (2, 5)]
    assert build_layer_map("uniform", 4, 6)[-1] == (3, 5)
    assert build_layer_map([[-1, -1], [0, 2]], 2, 6) == [(-1, -1), (0, 2)]
    assert describe_layer_map([(-1, -1), (0, 2)]) == "student emb <- teacher emb, student 0 <- teacher 2"


@pytest.mark.parametrize("spec,ns,nt,msg", [
    ("skip", 4, 6, "multiple"),
    ("zigzag", 3, 6, "unknown strategy"),
    ("last", 7, 6, "more layers"),
    ([[0, 6]], 3, 6, "teacher layer 6 does not exist"),
    ([[3, 1]], 3, 6, "student layer 3 does not exist"),
    ([[0, 1], [0, 2]], 3, 6, "appears twice"),
    ([[-1, 2]], 3, 6, "embeddings"),
    ([[0]], 3, 6, "pair"),
    ([], 3, 6, "empty"),
])
def test_layer_map_errors(spec, ns, nt, msg):
    with pytest.raises(SlimformerError, match=msg):
        build_layer_map(spec, ns, nt)


def test_config_errors():
    with pytest.raises(SlimformerError, match="every loss weight is 0"):
        parse_step({"step": "distill", "kd": 0, "ce": 0}, 0)
    with pytest.raises(SlimformerError, match="cache_teacher"):
        parse_step({"step": "distill", "cache_teacher": True, "hidden": 1}, 0)
    with pytest.raises(SlimformerError, match="temperature"):
        parse_step({"step": "distill", "temperature": 0}, 0)
    with pytest.raises(SlimformerError, match="at most one"):
        parse_step({"step": "make_student", "every": 2, "layers": [0]}, 0)
