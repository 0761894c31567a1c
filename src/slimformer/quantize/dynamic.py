"""Dynamic INT8: int8 per-channel weights, activations quantized per tensor at run time.

Backends: `torch` (fbgemm INT8 GEMM with AVX512-VNNI, weights stored as int8 tensors so the file is small
and reloads) and `onnxruntime` (export + ORT `quantize_dynamic`, per-channel). Word embeddings are
stored int8 (per-row scales) by default, which is what makes the file >= 3.5x smaller.
"""
from __future__ import annotations

import copy
from typing import ClassVar, Literal

from pydantic import Field
from torch import nn

from ..steps import Context, implements
from .common import QuantStep, run_guard, summary
from .onnx_backend import quantize_onnx
from .ops import quantize_embeddings, quantize_linears

Backend = Literal["torch", "onnxruntime"]


class QuantizeDynamic(QuantStep):
    """Dynamic INT8 quantization of Linear layers (and int8 word embeddings)."""

    step: ClassVar[str] = "quantize_dynamic"
    backend: Backend = Field("torch", description="torch (fbgemm) or onnxruntime")
    embeddings: bool = Field(True, description="store the word embeddings as int8")


def quantize_dynamic(model: nn.Module, cfg: QuantizeDynamic | None = None, tokenizer: object = None) -> nn.Module:
    """Quantize model in place (Python API); `tokenizer` is needed by the onnxruntime backend."""
    cfg = cfg or QuantizeDynamic()
    names = cfg.targets(model)
    if cfg.backend == "onnxruntime":
        return quantize_onnx(model, tokenizer, names, mode="dynamic", embeddings=cfg.embeddings)
    quantize_linears(model, names, bits=8, act="dynamic")
    if cfg.embeddings:
        quantize_embeddings(model, bits=8)
    return model


@implements(QuantizeDynamic)
def quantize_dynamic_step(model: nn.Module, cfg: QuantizeDynamic, ctx: Context) -> nn.Module:
    before = copy.deepcopy(model) if cfg.guard and ctx.task is not None else None
    model = quantize_dynamic(model, cfg, ctx.tokenizer)
    ctx.note("quantized", summary(model) or {"backend": cfg.backend})
    if before is not None:
        run_guard(before, model, cfg, ctx)
    return model
