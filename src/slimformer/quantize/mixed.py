"""Mixed precision: per-layer sensitivity (how much the output distribution moves when ONLY that layer is
quantized, the empirical version of Q-BERT's per-layer Hessian criterion) and a bit allocation under a size
budget (greedy: start every layer at the cheapest choice, upgrade the best sensitivity-per-byte first)."""
from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..models import get_adapter
from ..progress import track
from ..steps import Context, implements
from .common import QuantStep, run_guard, summary
from .guard import calibration_batches
from .modules import QLinear
from .ops import _parent, quantize_embeddings, quantize_linears

Choice = Literal["int4", "int8", "fp32"]
ORDER = ("int4", "int8", "fp32")


def cost(choice: str, in_features: int, group_size: int) -> float:
    """Bytes per weight: int4 = codes + fp16 scale and uint8 zero per group (a whole row when the group does
    not divide it); int8 = codes + one fp32 scale per row; fp32 = 4."""
    if choice == "int4":
        group = group_size if in_features % group_size == 0 and group_size < in_features else in_features
        return 0.5 + 3 / group
    return 1.0 + 4 / in_features if choice == "int8" else 4.0


def _quantized(lin: nn.Linear, choice: str, group_size: int) -> nn.Module:
    if choice == "int8":
        return QLinear.from_linear(lin, 8, None, "dynamic")
    gs = group_size if lin.in_features % group_size == 0 and group_size < lin.in_features else None
    return QLinear.from_linear(lin, 4, gs, "none")


@torch.no_grad()
def sensitivity(model: nn.Module, names: list[str], batches: list[dict[str, torch.Tensor]],
                choices: tuple[str, ...] = ("int4", "int8"), group_size: int = 128) -> dict[str, dict[str, float]]:
    """{layer: {choice: KL(fp32 logits || logits with only this layer quantized)}} on the batches."""
    model.eval()
    ref = [F.log_softmax(model(**b).logits.float(), -1) for b in batches]

    def kl() -> float:
        tot = 0.0
        for b, r in zip(batches, ref):
            lp = F.log_softmax(model(**b).logits.float(), -1)
            tot += float(F.kl_div(lp, r, log_target=True, reduction="batchmean"))
        return tot / len(batches)

    out: dict[str, dict[str, float]] = {}
    for n in track(names, desc="sensitivity", total=len(names)):
        parent, child = _parent(model, n)
        lin = getattr(parent, child)
        out[n] = {}
        for c in choices:
            setattr(parent, child, _quantized(lin, c, group_size))
            try:
                out[n][c] = kl()
            finally:
                setattr(parent, child, lin)
    return out


def allocate(sens: dict[str, dict[str, float]], sizes: dict[str, int], budget_bytes: float,
             choices: tuple[str, ...] = ORDER, in_features: dict[str, int] | None = None,
             group_size: int = 128) -> dict[str, str]:
    """Greedy allocation: everything at the cheapest choice, then upgrades by sensitivity drop per extra byte."""
    order = [c for c in ORDER if c in choices]
    fan_in = in_features or {n: group_size * 8 for n in sens}

    def nbytes(n: str, c: str) -> float:
        return sizes[n] * cost(c, fan_in[n], group_size)

    pick = {n: order[0] for n in sens}
    used = sum(nbytes(n, pick[n]) for n in pick)

    def s(n: str, c: str) -> float:
        return 0.0 if c == "fp32" else sens[n].get(c, 0.0)

    while True:
        best, best_gain = None, 0.0
        for n, c in pick.items():
            i = order.index(c)
            if i + 1 >= len(order):
                continue
            nxt = order[i + 1]
            extra = nbytes(n, nxt) - nbytes(n, c)
            if used + extra > budget_bytes:
                continue
            gain = (s(n, c) - s(n, nxt)) / extra
            if gain > best_gain:
                best, best_gain = (n, nxt, extra), gain
        if best is None:
            return pick
        pick[best[0]] = best[1]
        used += best[2]


SHORT = {"int4": "4", "int8": "8", "fp32": "32"}


def per_layer_table(model: nn.Module, pick: dict[str, str]) -> dict[str, str]:
    """{"layer i": "q8 k4 v4 o8 up4 down8"} (bits per projection; "-" when not quantized), for the report."""
    adapter = get_adapter(model)
    names = {id(m): n for n, m in model.named_modules()}
    out = {}
    for a in adapter.attention(model):
        parts = [("q", a.q), ("k", a.k), ("v", a.v), ("o", a.o)] if not a.fused else [("qkv", a.q), ("o", a.o)]
        out[a.unit] = " ".join(f"{k}{SHORT.get(pick.get(names.get(id(m), ''), ''), '-')}" for k, m in parts)
    for f in adapter.ffn(model):
        parts = [(f"up{i}" if len(f.up) > 1 else "up", m) for i, m in enumerate(f.up)] + [("down", f.down)]
        out[f"{f.unit}.ffn"] = " ".join(f"{k}{SHORT.get(pick.get(names.get(id(m), ''), ''), '-')}" for k, m in parts)
    return out


class QuantizeMixed(QuantStep):
    """Per-layer bit allocation (int4 weight-only / INT8 dynamic / fp32) under a size budget."""

    step: ClassVar[str] = "quantize_mixed"
    needs_data: ClassVar[bool] = True
    budget: float = Field(0.2, gt=0, le=1, description="Linear weight bytes allowed, as a fraction of fp32")
    choices: list[Choice] = Field(default_factory=lambda: ["int4", "int8", "fp32"])
    group_size: int = Field(128, ge=2)
    calib_examples: int = Field(64, ge=1)
    embedding_bits: Literal[4, 8] | None = Field(8, description="bits of the word embeddings (None: keep fp32)")


def quantize_mixed(model: nn.Module, batches: list[dict[str, torch.Tensor]], cfg: QuantizeMixed | None = None
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """Quantize model in place; returns (model, {layer: choice, sensitivity, budget})."""
    cfg = cfg or QuantizeMixed()
    names = cfg.targets(model)
    mods = dict(model.named_modules())
    sizes = {n: mods[n].weight.numel() for n in names}
    choices = tuple(c for c in cfg.choices)
    sens = sensitivity(model, names, batches, tuple(c for c in choices if c != "fp32"), cfg.group_size)
    budget = cfg.budget * 4.0 * sum(sizes.values())
    fan_in = {n: mods[n].in_features for n in names}
    pick = allocate(sens, sizes, budget, choices, fan_in, cfg.group_size)
    int8 = [n for n, c in pick.items() if c == "int8"]
    int4 = [n for n, c in pick.items() if c == "int4"]
    quantize_linears(model, int8, bits=8, act="dynamic")
    by_group: dict[int | None, list[str]] = {}
    for n in int4:
        f = mods[n].in_features
        by_group.setdefault(cfg.group_size if f % cfg.group_size == 0 and cfg.group_size < f else None, []).append(n)
    for gs, group in by_group.items():
        quantize_linears(model, group, bits=4, group_size=gs, act="none")
    if cfg.embedding_bits:
        quantize_embeddings(model, bits=cfg.embedding_bits, group_size=cfg.group_size)
    used = sum(sizes[n] * cost(pick[n], fan_in[n], cfg.group_size) for n in pick)
    info = {"per_layer": per_layer_table(model, pick), "choice": pick, "counts": {c: list(pick.values()).count(c) for c in choices},
            "linear_bytes_fraction_of_fp32": round(used / (4.0 * sum(sizes.values())), 4),
            "sensitivity": {n: {c: round(v, 6) for c, v in d.items()} for n, d in sens.items()}}
    return model, info


@implements(QuantizeMixed)
def quantize_mixed_step(model: nn.Module, cfg: QuantizeMixed, ctx: Context) -> nn.Module:
    task = ctx.require_task(cfg.step)
    batches = calibration_batches(ctx.tokenizer, task, cfg.calib_examples, ctx.max_len, seed=ctx.seed, model=model)
    before = copy.deepcopy(model) if cfg.guard else None
    model, info = quantize_mixed(model, batches, cfg)
    ctx.note("mixed", info)
    ctx.note("quantized", summary(model))
    if before is not None:
        run_guard(before, model, cfg, ctx)
    return model
