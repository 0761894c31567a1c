"""Layer-by-layer calibration, as SparseGPT, Wanda and GPTQ process large models: capture what the first layer of
a stack receives on calibration batches, then for each layer in turn collect the inputs of its Linears, let a
callback change the layer, and feed the *changed* layer's outputs to the next layer (so every layer is fitted
to the inputs it will really see). Generic over families: a layer is called with the very positional and
keyword arguments (masks, rotary position embeddings, encoder states) the model passed it.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..models import get_adapter

Batches = list[dict[str, torch.Tensor]]
Calls = list[tuple[tuple[Any, ...], dict[str, Any]]]


class _Captured(Exception):
    """Stops the forward pass once the first layer's inputs are recorded."""


@torch.no_grad()
def capture_layer_inputs(model: nn.Module, layer: nn.Module, batches: Batches) -> Calls:
    """The (args, kwargs) `layer` is called with, once per batch (the forward pass stops there)."""
    calls: Calls = []

    def grab(mod: nn.Module, args: tuple, kwargs: dict) -> None:
        calls.append((args, dict(kwargs)))
        raise _Captured

    handle = layer.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        model.eval()
        for b in batches:
            try:
                model(**b, use_cache=False) if _takes_cache(model) else model(**b)
            except _Captured:
                pass
    finally:
        handle.remove()
    return calls


def _takes_cache(model: nn.Module) -> bool:
    return bool(getattr(getattr(model, "config", None), "use_cache", False))


def _hidden(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _replace_hidden(args: tuple, kwargs: dict, hidden: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def token_mask(batch: dict[str, torch.Tensor], shape: torch.Size) -> torch.Tensor | None:
    """The batch's attention mask when it matches [batch, seq] of a layer input (padding tokens excluded)."""
    m = batch.get("attention_mask")
    return m.bool() if m is not None and m.shape == shape[:2] else None


def _collector(into: list[torch.Tensor], state: dict[str, Any]) -> Callable:
    """A forward hook appending a Linear's input rows (the non-padding tokens when state["mask"] fits)."""
    def fn(mod: nn.Module, inputs: tuple, out: Any) -> None:
        x = inputs[0]
        mask = state.get("mask")
        into.append(x[mask] if mask is not None and mask.shape == x.shape[:2] else x.reshape(-1, x.shape[-1]))
    return fn


@torch.no_grad()
def for_each_layer(model: nn.Module, batches: Batches, linears: dict[str, nn.Module],
                   fit: Callable[[nn.Module, dict[str, list[torch.Tensor]]], None]) -> None:
    """For every layer of every stack (in order): run it on its current inputs with hooks collecting the
    (non-padding) inputs of its Linears in `linears`, call fit(layer, {name: [x [tokens, in], ...]}), then run
    the changed layer to produce the next layer's inputs."""
    adapter = get_adapter(model)
    names = {id(m): n for n, m in model.named_modules()}
    for stack in adapter.stacks(model):
        layers = list(adapter.layers(model, stack.name))
        calls = capture_layer_inputs(model, layers[0], batches)
        for layer in layers:
            mine = {n: m for n, m in linears.items() if n.startswith(names[id(layer)] + ".")}
            seen: dict[str, list[torch.Tensor]] = {n: [] for n in mine}
            state: dict[str, Any] = {}

            handles = [m.register_forward_hook(_collector(seen[n], state)) for n, m in mine.items()]
            try:
                for b, (args, kwargs) in zip(batches, calls):
                    x = args[0] if args else kwargs["hidden_states"]
                    state["mask"] = token_mask(b, x.shape) if stack.name != "decoder" or len(
                        adapter.stacks(model)) == 1 else None
                    layer(*args, **kwargs)
            finally:
                for handle in handles:
                    handle.remove()
            fit(layer, seen)
            calls = [_replace_hidden(args, kwargs, _hidden(layer(*args, **kwargs))) for args, kwargs in calls]
