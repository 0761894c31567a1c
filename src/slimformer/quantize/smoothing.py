"""Per-channel scales folded into the op before a Linear, so the float function is unchanged: the shared
machinery of AWQ (awq.py) and SmoothQuant (Xiao et al. 2023, `smooth` here).

A `ScaleGroup` is an op `prev` whose output features are the only input of some Linears: dividing prev's
output feature j by s_j and multiplying column j of every consumer by s_j computes the same function. Which
op feeds which Linear comes from the architecture adapter (models/families): a pre-norm layer's norm feeds
its q/k/v (`AttnSpec.norm`) and its FFN's up projections (`FFNSpec.norm`); v feeds o (attention is linear in
v; under grouped-query attention one v feature feeds the same feature of every query head of its group); a
gated FFN's linear `up` feeds down (`FFNSpec.linear_up`). Post-LN layers (BERT) declare no norm: their norm
output also feeds the residual, so a scale cannot be folded into it.

SmoothQuant: s_j = max|X_j|^a / max|W_j|^(1-a) over calibration tokens (X: the norm output, W: the
consumers' column j) moves activation outliers into the weights before INT8 weights and activations.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import check
from ..models import get_adapter
from ..models.linear import is_linear, out_features, weight_oi
from .observe import observe_inputs

Batches = list[dict[str, torch.Tensor]]


@dataclass
class ScaleGroup:
    """prev's output features feed only `linears`; s has prev's output size."""

    name: str                    # "decoder.3.self.qkv", "decoder.3.self.vo", "decoder.3.ffn", "decoder.3.down"
    prev: nn.Module              # a norm (weight [, bias]) or a Linear (its rows)
    linears: list[nn.Module]
    from_norm: bool
    repeat: int = 1              # o under GQA: each v feature feeds `repeat` query heads' columns
    head_dim: int = 1

    def expand(self, s: torch.Tensor) -> torch.Tensor:
        """s (prev's outputs) -> the scale of the consumers' input columns."""
        if self.repeat == 1:
            return s
        return s.view(-1, 1, self.head_dim).expand(-1, self.repeat, self.head_dim).reshape(-1)

    def reduce(self, stat: torch.Tensor, how: str = "mean") -> torch.Tensor:
        """A per-input-column statistic of the consumers -> one value per entry of s."""
        if self.repeat == 1:
            return stat
        v = stat.view(-1, self.repeat, self.head_dim)
        return v.mean(1).reshape(-1) if how == "mean" else v.amax(1).reshape(-1)


def scale_groups(model: nn.Module) -> list[ScaleGroup]:
    """Every foldable (prev, consumers) pair of the model, in layer order, from its adapter."""
    adapter = get_adapter(model)
    out: list[ScaleGroup] = []
    for a in adapter.attention(model):
        projs = list(dict.fromkeys([a.q, a.k, a.v]))  # one module when q|k|v are fused
        if a.norm is not None and all(is_linear(p) for p in projs):
            out.append(ScaleGroup(f"{a.unit}.qkv", a.norm, projs, True))
        if not a.fused and is_linear(a.v) and is_linear(a.o) and out_features(a.v) == a.kv_heads * a.head_dim:
            out.append(ScaleGroup(f"{a.unit}.vo", a.v, [a.o], False, a.group, a.head_dim))
    for f in adapter.ffn(model):
        if f.norm is not None and all(is_linear(u) for u in f.up):
            out.append(ScaleGroup(f"{f.unit}.ffn", f.norm, list(f.up), True))
        if f.linear_up is not None and is_linear(f.linear_up) and is_linear(f.down):
            out.append(ScaleGroup(f"{f.unit}.down", f.linear_up, [f.down], False))
    return out


def norm_groups(model: nn.Module, what: str) -> list[ScaleGroup]:
    """The norm-fed groups, or a one-line refusal naming `what` needs them."""
    groups = [g for g in scale_groups(model) if g.from_norm]
    check(bool(groups), f"{what} needs pre-norm layers whose norm feeds the projections (Llama-style decoders, "
          f"GPT-2); {type(model).__name__} has none")
    return groups


@torch.no_grad()
def fold(group: ScaleGroup, s: torch.Tensor) -> None:
    """Divide prev's output features by s and multiply the consumers' input columns by s (same function)."""
    s = s.detach().float()
    prev = group.prev
    if group.from_norm:
        w = prev.weight
        check(w is not None and w.dim() == 1 and w.numel() == s.numel(),
              f"{group.name}: the norm has no per-feature weight of size {s.numel()} to fold a scale into")
        w.div_(s.to(w.dtype))
    else:
        w = weight_oi(prev)
        w.div_(s.to(w.dtype)[:, None])
    bias = getattr(prev, "bias", None)
    if bias is not None:
        bias.div_(s.to(bias.dtype))
    se = group.expand(s)
    for lin in group.linears:
        wl = weight_oi(lin)
        wl.mul_(se.to(wl.dtype)[None, :])


@torch.no_grad()
def input_absmax(model: nn.Module, modules: list[nn.Module], batches: Batches) -> dict[int, torch.Tensor]:
    """{id(module): max |x_j| over the non-padding calibration tokens} of each module's input."""
    out: dict[int, torch.Tensor] = {}

    def record(mod: nn.Module, x: torch.Tensor) -> None:
        m = x.detach().abs().float().amax(0)
        out[id(mod)] = torch.maximum(out[id(mod)], m) if id(mod) in out else m

    observe_inputs(model, modules, batches, record)
    return out


@torch.no_grad()
def smooth(model: nn.Module, batches: Batches, alpha: float = 0.5) -> dict[str, Any]:
    """SmoothQuant in place: fold s_j = max|X_j|^alpha / max|W_j|^(1-alpha) into every pre-norm and its
    consumers (q/k/v, the FFN's up projections). Returns the largest and smallest scale for the ledger."""
    check(0 <= alpha <= 1, f"smoothquant alpha must be in [0, 1], got {alpha}")
    check(len(batches) > 0, "smoothquant: no calibration batches")
    groups = norm_groups(model, "smoothquant")
    xmax = input_absmax(model, [g.linears[0] for g in groups], batches)
    lo, hi = float("inf"), 0.0
    for g in groups:
        x = xmax[id(g.linears[0])].clamp(min=1e-5)
        w = torch.stack([weight_oi(lin).detach().abs().float().amax(0) for lin in g.linears]).amax(0).clamp(min=1e-5)
        s = (x.pow(alpha) / w.pow(1 - alpha)).clamp(min=1e-5)
        fold(g, s)
        lo, hi = min(lo, float(s.min())), max(hi, float(s.max()))
    return {"alpha": alpha, "groups": len(groups), "scale_min": round(lo, 6), "scale_max": round(hi, 6)}
