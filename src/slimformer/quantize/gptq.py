"""GPTQ (Frantar et al. 2022): quantize a weight matrix column by column, spreading each column's rounding
error over the not-yet-quantized columns with the inverse Hessian of the layer's inputs (H = 2 X^T X)."""
from __future__ import annotations

import torch
from torch import nn

from .modules import dequantize_groups, group_params
from .observe import observe_inputs

Batches = list[dict[str, torch.Tensor]]


@torch.no_grad()
def input_hessians(model: nn.Module, names: list[str], batches: Batches) -> dict[str, torch.Tensor]:
    """H = 2/n X^T X of the inputs of each named Linear over the non-padding tokens of the batches."""
    mods = dict(model.named_modules())
    hs = {n: torch.zeros(mods[n].in_features, mods[n].in_features, dtype=torch.float64) for n in names}
    counts = {n: 0 for n in names}
    name_of = {id(mods[n]): n for n in names}

    def add(mod: nn.Module, x: torch.Tensor) -> None:
        x = x.double()
        hs[name_of[id(mod)]] += 2 * x.T @ x
        counts[name_of[id(mod)]] += x.shape[0]

    observe_inputs(model, [mods[n] for n in names], batches, add)
    return {n: (hs[n] / max(counts[n], 1)).float() for n in names}


def hessian(xs: list[torch.Tensor], cols: int) -> torch.Tensor:
    """H = 2/n X^T X over a Linear's input rows `xs` (each [tokens, cols]), accumulated chunk by chunk."""
    h = torch.zeros(cols, cols, dtype=torch.float64)
    n = 0
    for x in xs:
        x = x.double()
        h += 2 * x.T @ x
        n += x.shape[0]
    return (h / max(n, 1)).float()


@torch.no_grad()
def gptq_sequential(model: nn.Module, names: list[str], batches: Batches, bits: int,
                    group_of: dict[str, int | None], damp: float, act_order: bool, mse: bool
                    ) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """GPTQ layer by layer as the reference code runs it: each layer's Hessians come from the outputs of the
    layers already quantized before it (prune/layerwise.py), and its float Linears are replaced by their
    quantized values before its outputs feed the next layer. Returns {name: (codes, scale, zero)}; the model
    keeps the dequantized weights in its float Linears."""
    from ..prune.layerwise import for_each_layer

    mods = dict(model.named_modules())
    out: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def fit(layer: nn.Module, seen: dict[str, list[torch.Tensor]]) -> None:
        for n, xs in seen.items():
            w = mods[n].weight
            codes, scale, zero = gptq_quantize(w, hessian(xs, w.shape[1]), bits, group_of[n], damp, act_order=act_order, mse=mse)
            out[n] = (codes, scale, zero)
            w.data.copy_(dequantize_groups(codes, scale, zero, group_of[n]).to(w.dtype))

    for_each_layer(model, batches, {n: mods[n] for n in names}, fit)
    return out


def prepare_obs(w: torch.Tensor, h: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """What GPTQ and SparseGPT start from: a float copy of w with the columns of dead inputs zeroed, and the
    upper Cholesky factor of the inverse of the dampened Hessian (H + damp * mean(diag H) * I)."""
    w = w.detach().float().clone()
    h = h.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += damp * torch.mean(torch.diag(h)) * torch.eye(h.shape[0])
    return w, torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)


@torch.no_grad()
def gptq_quantize(w: torch.Tensor, h: torch.Tensor, bits: int, group_size: int | None, damp: float = 0.01,
                  block: int = 128, act_order: bool = False, mse: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ codes for w [out, in] given input Hessian h [in, in]: (uint8 codes, scale, zero) per group.

    act_order: columns are quantized in order of decreasing Hessian diagonal (the inputs with the most energy
    first, while the most columns are left to absorb their error), as in the GPTQ reference code. Groups stay
    the contiguous input ranges of the storage format ("static groups" of the reference code, no g_idx): every
    group's grid is fixed from the original weights before the sweep, so any column order can use it.
    mse: each grid by the clipping search of modules.group_params instead of min-max."""
    if not act_order:
        return _sweep(w, h, bits, group_size, damp, block, None, mse)
    perm = torch.argsort(torch.diag(h), descending=True, stable=True)
    q, scale, zero = _sweep(w[:, perm], h[perm][:, perm], bits, group_size, damp, block, perm, mse)
    out = torch.empty_like(q)
    out[:, perm] = q
    return out, scale, zero


def _sweep(w: torch.Tensor, h: torch.Tensor, bits: int, group_size: int | None, damp: float, block: int,
           perm: torch.Tensor | None, mse: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The GPTQ column sweep over w (columns already in `perm` order when given: static groups by the
    original column index perm[c]; otherwise each group's grid comes from its error-updated weights)."""
    w, hinv = prepare_obs(w, h, damp)
    rows, cols = w.shape
    gs = group_size if group_size and group_size < cols else cols
    n_groups = cols // gs
    if perm is not None:  # static groups: grids from the original (dead-zeroed) weights in storage order
        orig = torch.empty_like(w)
        orig[:, perm] = w
        scale, zero = group_params(orig, bits, gs if gs < cols else None, mse)
        group_of = perm // gs
        block = min(block, cols)
    else:
        scale = torch.zeros(rows, n_groups)
        zero = torch.zeros(rows, n_groups)
        group_of = torch.arange(cols) // gs
        block = gs if gs < cols else min(block, cols)  # a block is one group, so its grid sees updated weights
    q = torch.zeros(rows, cols, dtype=torch.uint8)
    levels = 2 ** bits - 1
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            c = i1 + i
            g = int(group_of[c])
            if perm is None and c % gs == 0:  # group grid from the current (error-updated) weights of this group
                s, z = group_params(w1 if gs < cols else w, bits, None, mse)
                scale[:, g], zero[:, g] = s[:, 0], z[:, 0]
            col = w1[:, i]
            codes = torch.clamp(torch.round(col / scale[:, g]) + zero[:, g], 0, levels)
            q[:, c] = codes.to(torch.uint8)
            deq = (codes - zero[:, g]) * scale[:, g]
            e = (col - deq) / hinv1[i, i]
            w1[:, i:] -= e[:, None] * hinv1[i, i:][None, :]
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return q, scale, zero
