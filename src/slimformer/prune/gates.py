"""Multiplicative gates on attention heads and FFN neurons (Michel et al. 2019), as forward pre-hooks.

A head gate scales the head's slice of the attention context (the input of the attention output projection);
a neuron gate scales one intermediate activation (the input of the FFN down projection). A gate of 0 is
exactly what physically removing the head or neuron does, which the tests check; the gradient of the loss
with respect to a gate of 1 is the importance score.

    with gated(model, heads={0: torch.tensor([1., 0., 1., 1.])}):
        out = model(**batch)
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from ..errors import check
from ..models import get_adapter


def _head_hook(gate: torch.Tensor, head_dim: int) -> Any:
    def pre(_m: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        shaped = x.view(*x.shape[:-1], -1, head_dim) * gate.to(x.dtype)[:, None]
        return (shaped.view(x.shape), *args[1:])

    return pre


def _neuron_hook(gate: torch.Tensor) -> Any:
    def pre(_m: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0] * gate.to(args[0].dtype), *args[1:])

    return pre


@contextlib.contextmanager
def gated(model: nn.Module, heads: Mapping[Any, torch.Tensor] | None = None,
          neurons: Mapping[Any, torch.Tensor] | None = None) -> Iterator[None]:
    """Multiply head contexts (one gate per query head) / FFN neurons of the named units by gate tensors while
    the block runs. Units are attention blocks ('decoder.2.cross') or FFNs ('encoder.0'); a bare layer index
    names the first stack."""
    adapter = get_adapter(model)
    handles = []
    try:
        for unit, gate in (heads or {}).items():
            att = adapter.attention_unit(model, unit)
            check(gate.numel() == att.heads, f"{att.unit}: head gate has {gate.numel()} entries but the block "
                  f"has {att.heads} heads")
            handles.append(att.o.register_forward_pre_hook(_head_hook(gate, att.head_dim)))
        for unit, gate in (neurons or {}).items():
            ffn = adapter.ffn_unit(model, unit)
            check(gate.numel() == ffn.width, f"{ffn.unit}: neuron gate has {gate.numel()} entries but the FFN "
                  f"has {ffn.width} neurons")
            handles.append(ffn.down.register_forward_pre_hook(_neuron_hook(gate)))
        yield
    finally:
        for h in handles:
            h.remove()


def ones_gates(model: nn.Module, kind: str, requires_grad: bool = False) -> dict[str, torch.Tensor]:
    """A gate of ones per unit: kind 'heads' (one per query head) or 'ffn' (one per intermediate neuron)."""
    adapter = get_adapter(model)
    if kind == "heads":
        return {a.unit: torch.ones(a.heads, requires_grad=requires_grad) for a in adapter.attention(model)}
    return {f.unit: torch.ones(f.width, requires_grad=requires_grad) for f in adapter.ffn(model)}


def mask_gates(model: nn.Module, kind: str, keep: Mapping[Any, list[int]]) -> dict[str, torch.Tensor]:
    """Gates that are 1 on kept units and 0 elsewhere (units not named keep everything). For heads, kept
    units are heads, or key/value groups (all their query heads) under grouped-query attention."""
    adapter = get_adapter(model)
    gates = ones_gates(model, kind)
    for unit, kept in keep.items():
        if kind == "heads":
            att = adapter.attention_unit(model, unit)
            g = torch.zeros(att.heads)
            for u in kept:
                g[u * att.group:(u + 1) * att.group] = 1.0
            gates[att.unit] = g
        else:
            name = adapter.ffn_unit(model, unit).unit
            g = torch.zeros_like(gates[name])
            g[list(kept)] = 1.0
            gates[name] = g
    return gates
