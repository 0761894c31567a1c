"""Importance of attention heads and FFN neurons.

- gradient (Michel et al. 2019): I = sum over batches of |d loss / d gate| with all gates at 1, on task
  training examples; optionally each layer's scores are divided by their L2 norm (as Michel et al. do), so
  a global ranking compares heads across layers on a common scale.
- magnitude (data-free fallback): the L2 norm of the weights a unit owns (its q/k/v rows and output columns
  for a head; its up row and down column for an FFN neuron).
"""
from __future__ import annotations

import random
from typing import Any

import torch
from torch import nn

from ..errors import SlimformerError, check
from ..models import get_adapter
from ..tasks.base import TaskData
from .gates import gated, ones_gates

Scores = dict[int, torch.Tensor]


def magnitude_importance(model: nn.Module, kind: str) -> Scores:
    """Weight-norm score per head (kind 'heads') or per FFN neuron (kind 'ffn'), per layer."""
    adapter = get_adapter(model)
    out: Scores = {}
    with torch.no_grad():
        for i, layer in enumerate(adapter.layers(model)):
            if kind == "heads":
                att = adapter.attention(layer)
                n, d = adapter.num_heads(layer), att.head_dim
                sq = sum(m.weight.view(n, d, -1).pow(2).sum((1, 2)) for m in (att.query, att.key, att.value))
                sq = sq + att.output.weight.view(att.output.out_features, n, d).pow(2).sum((0, 2))
            else:
                ffn = adapter.ffn(layer)
                sq = ffn.up.weight.pow(2).sum(1) + ffn.down.weight.pow(2).sum(0)
            out[i] = sq.sqrt().float()
    return out


def sample_examples(task: TaskData, n: int, seed: int = 42) -> list[Any]:
    """The n training examples importance is scored on (a seeded sample; all of them if fewer)."""
    examples = list(task.split("train"))
    check(len(examples) > 0, f"task {task.name} has no training examples to score importance on")
    return random.Random(seed).sample(examples, n) if n < len(examples) else examples


def importance_batches(tokenizer: Any, task: TaskData, n: int, max_len: int, batch_size: int,
                       seed: int = 42) -> list[dict[str, torch.Tensor]]:
    """n shuffled training examples, tokenised and padded into batches (labels included)."""
    from ..data import collator, encode

    ds = encode(tokenizer, sample_examples(task, n, seed), max_len)
    collate = collator(tokenizer)
    return [dict(collate([ds[j] for j in range(s, min(s + batch_size, len(ds)))]))
            for s in range(0, len(ds), batch_size)]


def gradient_importance(model: nn.Module, batches: list[dict[str, torch.Tensor]], kind: str) -> Scores:
    """sum over batches of |d loss / d gate| for every head (kind 'heads') or FFN neuron (kind 'ffn')."""
    check(len(batches) > 0, "gradient importance needs at least one batch of examples")
    gates = ones_gates(model, kind, requires_grad=True)
    scores = {i: torch.zeros_like(g) for i, g in gates.items()}
    was_training = model.training
    model.eval()  # no dropout: the score is the sensitivity of the deterministic model
    grads_before = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)  # only the gates need gradients
    try:
        with gated(model, **({"heads": gates} if kind == "heads" else {"neurons": gates})):
            for batch in batches:
                out = model(**batch)
                check(getattr(out, "loss", None) is not None, "gradient importance needs a model that returns a "
                      "loss for labelled batches (a task head)")
                grads = torch.autograd.grad(out.loss, [gates[i] for i in sorted(gates)])
                for i, g in zip(sorted(gates), grads):
                    scores[i] += g.detach().abs()
    finally:
        for p, rg in zip(model.parameters(), grads_before):
            p.requires_grad_(rg)
        model.train(was_training)
    return scores


def normalize_per_layer(scores: Scores) -> Scores:
    """Divide each layer's scores by their L2 norm (Michel et al.)."""
    return {i: s / s.norm().clamp_min(1e-20) for i, s in scores.items()}


def importance(model: nn.Module, kind: str, criterion: str, batches: list[dict[str, torch.Tensor]] | None = None,
               normalize: bool = True) -> Scores:
    """Scores per layer by the chosen criterion ('gradient' needs batches)."""
    check(kind in ("heads", "ffn"), f"unknown unit kind '{kind}'")
    if criterion == "gradient":
        check(batches is not None, "gradient importance needs task data")
        scores = gradient_importance(model, batches or [], kind)
    elif criterion == "magnitude":
        scores = magnitude_importance(model, kind)
    else:
        raise SlimformerError(f"unknown importance criterion '{criterion}' (gradient | magnitude)")
    return normalize_per_layer(scores) if normalize else scores
