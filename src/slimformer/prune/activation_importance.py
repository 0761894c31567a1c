"""Activation importance of attention heads and FFN neurons: forward passes only, no labels' gradient.

A unit's score is the mean over tokens of the L2 norm of what it adds to the block's output: for an FFN neuron
|h_i| * ||W_down[:, i]|| (h the input of the down projection), for a head ||W_o[:, head] c_head|| (c the
head's slice of the attention context). This is the activation criterion of width pruning for LLMs (Minitron,
Muralidharan et al. 2024, score heads and neurons by their activations on a small calibration set) with the
unit's output weights folded in, as Wanda does for single weights, so a unit with large activations but tiny
output weights is not kept for nothing. Under grouped-query attention a key/value group's score is the sum over
its query heads (the group is what is pruned). Padding tokens (attention_mask 0) are not counted, except in an
encoder-decoder's decoder, whose positions all count.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import check
from ..models import get_adapter
from ..models.linear import weight_oi
from ..tasks.base import Task


def _token_weights(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """[B, S] weights of the hooked positions: the attention mask when it matches x's positions, else ones."""
    lead = x.shape[:-1]
    if mask is not None and tuple(mask.shape) == tuple(lead):
        return mask.to(torch.float32)
    return torch.ones(lead, dtype=torch.float32)


def _ffn_hook(acc: dict[str, Any], out_norm: torch.Tensor, state: dict[str, Any]) -> Any:
    def pre(_m: nn.Module, args: tuple[Any, ...]) -> None:
        h = args[0].detach().float()
        w = _token_weights(h, state.get("mask") if acc["masked"] else None)
        acc["sum"] += (h.abs() * w[..., None]).reshape(-1, h.shape[-1]).sum(0) * out_norm
        acc["n"] += float(w.sum())

    return pre


def _head_hook(acc: dict[str, Any], w_o: torch.Tensor, heads: int, head_dim: int, state: dict[str, Any]) -> Any:
    per_head = w_o.reshape(w_o.shape[0], heads, head_dim)  # [out, heads, d]

    def pre(_m: nn.Module, args: tuple[Any, ...]) -> None:
        c = args[0].detach().float()
        w = _token_weights(c, state.get("mask") if acc["masked"] else None).reshape(-1)
        c = c.reshape(-1, heads, head_dim)  # [tokens, heads, d]
        contrib = torch.einsum("thd,ohd->tho", c, per_head).norm(dim=-1)  # [tokens, heads]
        acc["sum"] += (contrib * w[:, None]).sum(0)
        acc["n"] += float(w.sum())

    return pre


@torch.no_grad()
def activation_importance(model: nn.Module, batches: list[dict[str, torch.Tensor]], kind: str,
                          task: Task | None = None) -> dict[str, torch.Tensor]:
    """Mean contribution norm per head (summed over each key/value group) or per FFN neuron, over batches."""
    from .importance import per_unit

    check(len(batches) > 0, "activation importance needs at least one batch of examples")
    adapter = get_adapter(model)
    state: dict[str, Any] = {}
    accs: dict[str, dict[str, Any]] = {}
    handles = []
    was_training = model.training
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))

    def masked(unit: Any) -> bool:  # padding is left out, except in an encoder-decoder's decoder
        return not (seq2seq and str(unit).startswith("decoder"))

    model.eval()
    try:
        if kind == "heads":
            for a in adapter.attention(model):
                accs[a.unit] = {"sum": torch.zeros(a.heads), "n": 0.0, "masked": masked(a.unit)}
                w_o = weight_oi(a.o).detach().float()
                handles.append(a.o.register_forward_pre_hook(_head_hook(accs[a.unit], w_o, a.heads, a.head_dim,
                                                                        state)))
        else:
            for f in adapter.ffn(model):
                accs[f.unit] = {"sum": torch.zeros(f.width), "n": 0.0, "masked": masked(f.unit)}
                out_norm = weight_oi(f.down).detach().float().norm(dim=0)
                handles.append(f.down.register_forward_pre_hook(_ffn_hook(accs[f.unit], out_norm, state)))
        for batch in batches:
            state["mask"] = batch.get("attention_mask")
            if task is not None:
                task.loss(model, batch)
            else:
                model(**{k: v for k, v in batch.items() if k != "labels"})
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    scores = {u: acc["sum"] / max(acc["n"], 1.0) for u, acc in accs.items()}
    return per_unit(model, kind, scores)
