"""AWQ (Lin et al. 2023, activation-aware weight quantization): before round-to-nearest group quantization,
scale up the weight columns of the input channels with large activations (and scale those activations down by
folding 1/s into the op before, so the float function is unchanged): their rounding error shrinks relative to
their weight, which matters most because their inputs are large.

Per layer, for every foldable group of smoothing.py (norm -> q/k/v, v -> o, norm -> gate/up, up -> down):
s = mean|x|^alpha over calibration tokens (normalised by sqrt(max s * min s), as the reference code does),
alpha from a grid i/grid, i = 0..grid (alpha = 0 is plain RTN), keeping the alpha whose quantized Linears'
outputs on the calibration inputs are closest to the float outputs. Layers are processed in order on the
outputs of the already scaled layers (prune/layerwise.py). The search measures the error of the group's own
Linear outputs (the reference measures the attention / MLP block output, and also searches a weight clipping
range, which is not done here).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import check
from ..models.linear import in_features, weight_oi
from ..progress import track
from ..prune.layerwise import for_each_layer
from .modules import dequantize_groups, fit_group, quantize_groups
from .smoothing import Batches, ScaleGroup, fold, norm_groups, scale_groups


def fake_quant(w: torch.Tensor, bits: int, group_size: int | None) -> torch.Tensor:
    """w after group-wise asymmetric round-to-nearest (the grid QLinear stores)."""
    gs = fit_group(w.shape[1], group_size)
    q, s, z = quantize_groups(w, bits, gs)
    return dequantize_groups(q, s, z, gs)


@torch.no_grad()
def search_scale(group: ScaleGroup, x: torch.Tensor, bits: int, group_size: int | None, grid: int
                 ) -> tuple[float, torch.Tensor, float, float]:
    """(best alpha, its scale s, its error, the error at alpha = 0) for one group on inputs x [tokens, in]."""
    x = x.float()
    mean = group.reduce(x.abs().mean(0))
    ws = [weight_oi(lin).detach().float() for lin in group.linears]
    refs = [x @ w.T for w in ws]
    norm = sum(float((r ** 2).sum()) for r in refs) or 1.0
    best: tuple[float, torch.Tensor, float] | None = None
    base = float("nan")
    for i in range(grid + 1):
        alpha = i / grid
        s = mean.pow(alpha).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        se = group.expand(s)
        err = sum(float(((x @ (fake_quant(w * se[None, :], bits, group_size) / se[None, :]).T - r) ** 2).sum())
                  for w, r in zip(ws, refs)) / norm
        if i == 0:
            base = err
        if best is None or err < best[2]:
            best = (alpha, s, err)
    assert best is not None
    return best[0], best[1], best[2], base


def _rows(xs: list[torch.Tensor], limit: int) -> torch.Tensor:
    x = torch.cat(xs)
    if x.shape[0] > limit:  # evenly strided subset: every batch and position represented
        x = x[torch.linspace(0, x.shape[0] - 1, limit).long()]
    return x


def awq_scale(model: nn.Module, batches: Batches, bits: int, group_size: int | None, grid: int = 20,
              max_tokens: int = 4096) -> dict[str, Any]:
    """Search and fold AWQ scales into model in place (float function unchanged; quantize afterwards with RTN
    at the same bits and group size). Returns {group: alpha} and the relative error before / after."""
    check(len(batches) > 0, "awq: no calibration batches")
    check(grid >= 1, f"awq: grid must be >= 1, got {grid}")
    norm_groups(model, "awq")
    groups = scale_groups(model)
    names = {id(m): n for n, m in model.named_modules()}
    by_first = {names[id(g.linears[0])]: g for g in groups}
    firsts = {n: g.linears[0] for n, g in by_first.items()}
    report: dict[str, Any] = {"alpha": {}, "error_rtn": 0.0, "error_awq": 0.0}
    bar = iter(track(range(len(groups)), desc=f"awq {bits}-bit", total=len(groups)))

    def fit(layer: nn.Module, seen: dict[str, list[torch.Tensor]]) -> None:
        for name, xs in seen.items():
            g = by_first[name]
            check(in_features(g.linears[0]) == xs[0].shape[-1], f"awq: unexpected input width at {name}")
            alpha, s, err, base = search_scale(g, _rows(xs, max_tokens), bits, group_size, grid)
            fold(g, s)
            report["alpha"][g.name] = alpha
            report["error_rtn"] += base / len(groups)
            report["error_awq"] += err / len(groups)
            next(bar, None)

    for_each_layer(model, batches, firsts, fit)
    for _ in bar:
        pass
    report["error_rtn"], report["error_awq"] = round(report["error_rtn"], 6), round(report["error_awq"], 6)
    return report
