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
def gated(model: nn.Module, heads: Mapping[int, torch.Tensor] | None = None,
          neurons: Mapping[int, torch.Tensor] | None = None) -> Iterator[None]:
    """Multiply head contexts / FFN neurons of the given layers by gate tensors while the block runs."""
    adapter = get_adapter(model)
    layers = adapter.layers(model)
    handles = []
    try:
        for i, gate in (heads or {}).items():
            check(0 <= int(i) < len(layers), f"gate for unknown layer {i}")
            att = adapter.attention(layers[int(i)])
            check(gate.numel() == adapter.num_heads(layers[int(i)]), f"layer {i}: head gate has {gate.numel()} "
                  f"entries but the layer has {adapter.num_heads(layers[int(i)])} heads")
            handles.append(att.output.register_forward_pre_hook(_head_hook(gate, att.head_dim)))
        for i, gate in (neurons or {}).items():
            check(0 <= int(i) < len(layers), f"gate for unknown layer {i}")
            ffn = adapter.ffn(layers[int(i)])
            check(gate.numel() == ffn.down.in_features, f"layer {i}: neuron gate has {gate.numel()} entries but "
                  f"the FFN has {ffn.down.in_features} neurons")
            handles.append(ffn.down.register_forward_pre_hook(_neuron_hook(gate)))
        yield
    finally:
        for h in handles:
            h.remove()


def ones_gates(model: nn.Module, kind: str, requires_grad: bool = False) -> dict[int, torch.Tensor]:
    """A gate of ones per layer: kind 'heads' (one per head) or 'ffn' (one per intermediate neuron)."""
    adapter = get_adapter(model)
    out = {}
    for i, layer in enumerate(adapter.layers(model)):
        n = adapter.num_heads(layer) if kind == "heads" else adapter.ffn(layer).down.in_features
        out[i] = torch.ones(n, requires_grad=requires_grad)
    return out


def mask_gates(model: nn.Module, kind: str, keep: Mapping[int, list[int]]) -> dict[int, torch.Tensor]:
    """Gates that are 1 on kept units and 0 elsewhere (layers not named keep everything)."""
    gates = ones_gates(model, kind)
    for i, kept in keep.items():
        g = torch.zeros_like(gates[int(i)])
        g[list(kept)] = 1.0
        gates[int(i)] = g
    return gates
