"""Importance of heads and FFN neurons for a sentence encoder, measured on its embeddings (no labels).

The objective is the distance between the pruned model's normalised mean-pooled embeddings e(g) and the
original model's e0 on unlabelled sentences, D(g) = 1/2 sum_i ||e_i(g) - e0_i||^2 (one minus the cosine,
summed). Removing unit u moves its gate g_u from 1 to 0; to second order (Gauss-Newton) that raises D by

    dD_u ~= -dD/dg_u + 1/2 sum_i ||d e_i / d g_u||^2.

On the unpruned model the first term is 0 (e = e0 is D's minimum, so a plain gradient score would be zero);
in later rounds it is not. The Jacobian norms are estimated with random probes (Hutchinson): for r_i with
E[r r^T] = I, E[(d(sum_i r_i . e_i)/d g_u)^2] = sum_i ||d e_i / d g_u||^2. The score is dD_u: the units
whose removal moves the embeddings least go first.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import check
from .gates import gated, ones_gates
from .importance import per_unit

PROBES = 16


def sentence_batches(tokenizer: Any, texts: list[str], max_len: int, batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Length-sorted, dynamically padded batches of input_ids / attention_mask."""
    check(len(texts) > 0, "embedding importance needs at least one sentence")
    texts = sorted(texts, key=len)
    out = []
    for s in range(0, len(texts), batch_size):
        enc = tokenizer(texts[s:s + batch_size], truncation=True, max_length=max_len, padding=True,
                        return_tensors="pt")
        out.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    return out


def _embedding(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    from ..tasks.similarity import mean_pool

    return F.normalize(mean_pool(model(**batch), batch["attention_mask"]).float(), dim=-1)


def reference_embeddings(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    """The normalised embeddings of the model before pruning, one tensor per batch."""
    with torch.no_grad():
        return [_embedding(model, b) for b in batches]


def embedding_importance(model: nn.Module, batches: list[dict[str, torch.Tensor]], reference: list[torch.Tensor],
                         kind: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """dD_u per head (summed over a KV group's query heads) or FFN neuron; see the module docstring."""
    check(len(batches) > 0 and len(batches) == len(reference), "embedding importance needs batches and their "
          "reference embeddings")
    gates = ones_gates(model, kind, requires_grad=True)
    units = list(gates)
    scores = {u: torch.zeros_like(g) for u, g in gates.items()}
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    grads_before = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with gated(model, **({"heads": gates} if kind == "heads" else {"neurons": gates})):
            for batch, ref in zip(batches, reference):
                e = _embedding(model, batch)
                dist = 0.5 * (e - ref).pow(2).sum()
                first = torch.autograd.grad(dist, [gates[u] for u in units], retain_graph=True, allow_unused=True)
                for u, g in zip(units, first):
                    if g is not None:
                        scores[u] -= g.detach()
                for k in range(PROBES):
                    r = torch.randn(e.shape, generator=gen)
                    grads = torch.autograd.grad((r * e).sum(), [gates[u] for u in units],
                                                retain_graph=k < PROBES - 1, allow_unused=True)
                    for u, g in zip(units, grads):
                        if g is not None:
                            scores[u] += 0.5 * g.detach().pow(2) / PROBES
    finally:
        for p, rg in zip(model.parameters(), grads_before):
            p.requires_grad_(rg)
        model.train(was_training)
    return per_unit(model, kind, scores)
