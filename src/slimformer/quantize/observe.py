"""Calibration passes: run batches through a model and hand each watched module's input tokens to a callback
(padding positions left out), as GPTQ's Hessians and SmoothQuant's activation maxima both need."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

Batches = list[dict[str, torch.Tensor]]


@torch.no_grad()
def observe_inputs(model: nn.Module, modules: list[nn.Module], batches: Batches,
                   fn: Callable[[nn.Module, torch.Tensor], None]) -> None:
    """Call fn(module, x) for every batch and watched module, x = its input's non-padding tokens [tokens, in]."""
    state: dict[str, Any] = {}

    def hook(mod: nn.Module, args: tuple, out: Any) -> None:
        x = args[0]
        mask = state.get("mask")
        fn(mod, x[mask.bool()] if mask is not None and mask.shape == x.shape[:2] else x.reshape(-1, x.shape[-1]))

    handles = [m.register_forward_hook(hook) for m in dict.fromkeys(modules)]
    try:
        model.eval()
        for b in batches:
            state["mask"] = b.get("attention_mask")
            model(**b)
    finally:
        for h in handles:
            h.remove()
