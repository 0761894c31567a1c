"""Importance of attention heads and FFN neurons.

- gradient (Michel et al. 2019): I = sum over batches of |d loss / d gate| with all gates at 1, on task
  training examples; optionally each layer's scores are divided by their L2 norm (as Michel et al. do), so
  a global ranking compares heads across layers on a common scale.
- activation (forward passes only): the mean norm of what a unit adds to its block's output on examples
  (activation_importance.py; Minitron's criterion for width pruning of LLMs).
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
from ..tasks.base import Task
from .gates import gated, ones_gates

Scores = dict[str, torch.Tensor]  # unit name -> one score per prunable unit (head, KV group or neuron)


def magnitude_importance(model: nn.Module, kind: str) -> Scores:
    """Weight-norm score per head / KV group (kind 'heads') or per FFN neuron (kind 'ffn'), per unit."""
    adapter = get_adapter(model)
    out: Scores = {}
    with torch.no_grad():
        if kind == "heads":
            for a in adapter.attention(model):
                d, n = a.head_dim, a.units
                q = a.weight("q").float().reshape(n, a.group * d, -1).pow(2).sum((1, 2))
                kv = sum(a.weight(r).float().reshape(n, d, -1).pow(2).sum((1, 2)) for r in ("k", "v"))
                o = a.weight("o").float().reshape(a.weight("o").shape[0], n, a.group * d).pow(2).sum((0, 2))
                out[a.unit] = (q + kv + o).sqrt()
        else:
            from ..models.linear import weight_oi

            for f in adapter.ffn(model):
                sq = sum(weight_oi(u).float().pow(2).sum(1) for u in f.up) + weight_oi(f.down).float().pow(2).sum(0)
                out[f.unit] = sq.sqrt()
    return out


def sample_examples(task: Task, n: int, seed: int = 42) -> list[Any]:
    """The n training examples importance is scored on (a seeded sample; all of them if fewer)."""
    examples = list(task.split("train"))
    check(len(examples) > 0, f"task {task.name} has no training examples to score importance on")
    return random.Random(seed).sample(examples, n) if n < len(examples) else examples


def importance_batches(tokenizer: Any, task: Task, n: int, max_len: int, batch_size: int,
                       seed: int = 42, model: nn.Module | None = None) -> list[dict[str, torch.Tensor]]:
    """n shuffled training examples (blocks for language modelling), encoded and collated with labels."""
    ds = task.encode(tokenizer, sample_examples(task, n, seed), max_len)
    collate = task.collator(tokenizer, model)
    return [dict(collate([ds[j] for j in range(s, min(s + batch_size, len(ds)))]))
            for s in range(0, len(ds), batch_size)]


def gradient_importance(model: nn.Module, batches: list[dict[str, torch.Tensor]], kind: str,
                        task: Task | None = None) -> Scores:
    """sum over batches of |d loss / d gate| per head (summed over a KV group's query heads) or FFN neuron."""
    check(len(batches) > 0, "gradient importance needs at least one batch of examples")
    gates = ones_gates(model, kind, requires_grad=True)
    scores = {u: torch.zeros_like(g) for u, g in gates.items()}
    was_training = model.training
    model.eval()  # no dropout: the score is the sensitivity of the deterministic model
    grads_before = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)  # only the gates need gradients
    units = list(gates)
    try:
        with gated(model, **({"heads": gates} if kind == "heads" else {"neurons": gates})):
            for batch in batches:
                if task is not None:
                    loss = task.loss(model, batch)
                else:
                    out = model(**batch)
                    check(getattr(out, "loss", None) is not None, "gradient importance needs a model that returns "
                          "a loss for labelled batches (a task head)")
                    loss = out.loss
                grads = torch.autograd.grad(loss, [gates[u] for u in units])
                for u, g in zip(units, grads):
                    scores[u] += g.detach().abs()
    finally:
        for p, rg in zip(model.parameters(), grads_before):
            p.requires_grad_(rg)
        model.train(was_training)
    return per_unit(model, kind, scores)


def per_unit(model: nn.Module, kind: str, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Head scores summed over each key/value group (the unit that is pruned under GQA); FFN scores as they are."""
    if kind != "heads":
        return scores
    groups = {a.unit: a.group for a in get_adapter(model).attention(model)}
    return {u: s.view(-1, groups[u]).sum(1) for u, s in scores.items()}


def normalize_per_layer(scores: Scores) -> Scores:
    """Divide each unit's scores by their L2 norm (Michel et al.)."""
    return {i: s / s.norm().clamp_min(1e-20) for i, s in scores.items()}


def importance(model: nn.Module, kind: str, criterion: str, batches: list[dict[str, torch.Tensor]] | None = None,
               normalize: bool = True, task: Task | None = None, reference: list[torch.Tensor] | None = None,
               seed: int = 0) -> Scores:
    """Scores per unit by the chosen criterion ('gradient' and 'activation' need batches; 'embedding' sentence
    batches and the unpruned model's embeddings of them, see embedding_importance.py)."""
    check(kind in ("heads", "ffn"), f"unknown unit kind '{kind}'")
    if criterion == "gradient":
        check(batches is not None, "gradient importance needs task data")
        scores = gradient_importance(model, batches or [], kind, task)
    elif criterion == "activation":
        from .activation_importance import activation_importance

        check(batches is not None, "activation importance needs task data")
        scores = activation_importance(model, batches or [], kind, task)
    elif criterion == "embedding":
        from .embedding_importance import embedding_importance

        check(batches is not None and reference is not None, "embedding importance needs sentences")
        scores = embedding_importance(model, batches or [], reference or [], kind, seed)
    elif criterion == "magnitude":
        scores = magnitude_importance(model, kind)
    else:
        raise SlimformerError(f"unknown importance criterion '{criterion}' "
                              "(gradient | activation | magnitude | embedding)")
    return normalize_per_layer(scores) if normalize else scores
