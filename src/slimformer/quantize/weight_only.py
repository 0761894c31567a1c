"""Weight-only 8/4-bit quantization with group-wise scales: round-to-nearest or GPTQ.

Weights are stored as uint8 codes (two 4-bit codes per byte) with fp16 scales and uint8 zeros per group, so
the file really shrinks; at run time each layer dequantizes once to fp32 (on CPU this buys size on disk and
download, not latency; combine with quantize_dynamic for INT8 speed).
"""
from __future__ import annotations

import copy
from typing import ClassVar, Literal

from pydantic import Field
from torch import nn

from ..progress import track
from ..steps import Context, implements
from .common import QuantStep, run_guard, summary
from .gptq import gptq_quantize, input_hessians
from .guard import calibration_batches
from .modules import QLinear
from .ops import quantize_embeddings, quantize_linears


class QuantizeWeights(QuantStep):
    """Weight-only quantization of Linear layers (and the word embeddings) to 8 or 4 bits."""

    step: ClassVar[str] = "quantize_weights"
    bits: Literal[4, 8] = 4
    group_size: int | None = Field(128, ge=2, description="columns per scale (None: one scale per row)")
    method: Literal["rtn", "gptq"] = "rtn"
    embeddings: bool = Field(True, description="quantize the word embeddings too")
    embedding_bits: Literal[4, 8] | None = Field(None, description="bits of the embeddings (default: bits)")
    calib_examples: int = Field(128, ge=1, description="train examples for the GPTQ Hessians")
    damp: float = Field(0.01, gt=0, description="GPTQ dampening, a fraction of the mean Hessian diagonal")


def _fit_group(cols: int, group_size: int | None) -> int | None:
    if not group_size or group_size >= cols:
        return None
    return group_size if cols % group_size == 0 else None


def quantize_weights(model: nn.Module, cfg: QuantizeWeights | None = None,
                     batches: list | None = None) -> nn.Module:
    """Quantize model in place (Python API). GPTQ needs calibration `batches` (see guard.calibration_batches)."""
    cfg = cfg or QuantizeWeights()
    names = cfg.targets(model)
    mods = dict(model.named_modules())
    hessians = input_hessians(model, names, batches) if cfg.method == "gptq" and batches else {}
    by_group: dict[int | None, list[str]] = {}
    for n in names:
        by_group.setdefault(_fit_group(mods[n].in_features, cfg.group_size), []).append(n)
    floats = {n: mods[n].weight.detach().clone() for n in names}
    for gs, group_names in by_group.items():
        quantize_linears(model, group_names, bits=cfg.bits, group_size=gs, act="none")
    if hessians:
        qmods = dict(model.named_modules())
        for n in track(names, desc="gptq", total=len(names)):
            q: QLinear = qmods[n]
            codes, scale, zero = gptq_quantize(floats[n], hessians[n], cfg.bits, q.group_size, cfg.damp)
            q.set_codes(codes, scale, zero)
    if cfg.embeddings:
        quantize_embeddings(model, bits=cfg.embedding_bits or cfg.bits, group_size=cfg.group_size)
    return model


@implements(QuantizeWeights)
def quantize_weights_step(model: nn.Module, cfg: QuantizeWeights, ctx: Context) -> nn.Module:
    batches = None
    if cfg.method == "gptq":
        task = ctx.require_task(cfg.step)
        batches = calibration_batches(ctx.tokenizer, task, cfg.calib_examples, ctx.max_len, seed=ctx.seed, model=model)
    before = copy.deepcopy(model) if cfg.guard and ctx.task is not None else None
    model = quantize_weights(model, cfg, batches)
    ctx.note("quantized", summary(model))
    if before is not None:
        run_guard(before, model, cfg, ctx)
    return model
