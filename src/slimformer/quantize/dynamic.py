"""Dynamic INT8: int8 per-channel weights, activations quantized per tensor at run time.

Backends: `torch` (fbgemm INT8 GEMM, weights stored as int8 tensors so the file is small and reloads),
`onnxruntime` (export + ORT `quantize_dynamic`, per-channel, embedding Gathers int8 too) and `auto` (the
default): build both, time them interleaved with FP32 at batch 1 on this machine and keep the faster; the
choice and the timings are stored in `config.slimformer["quantize_backend"]`. Word embeddings are stored
int8 (per-row scales) by default, which is what makes the file >= 3.5x smaller. A clear warning says when
INT8 will not pay off (measured no faster than FP32, no VNNI, tiny matrices).

`smoothquant: 0.5` (Xiao et al. 2023, W8A8) first folds per-channel scales into every pre-norm and the
Linears it feeds (smoothing.py), moving activation outliers into the weights, on calibration data. Both
kernels quantize activations dynamically per tensor (one scale per call, computed at run time);
`activations: token` (torch backend) quantizes them per token instead (one scale per row, torch._int_mm).
"""
from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator
from torch import nn

from ..errors import SlimformerError, check
from ..steps import Context, implements
from .advice import choose_backend, int8_advice, slow_warning, warn
from .common import QuantStep, record_meta, run_guard, summary
from .guard import calibration_batches
from .onnx_backend import ort_unsupported, quantize_onnx
from .ops import quantize_embeddings, quantize_linears
from .smoothing import norm_groups, smooth

Backend = Literal["auto", "torch", "onnxruntime"]


class QuantizeDynamic(QuantStep):
    """Dynamic INT8 quantization of Linear layers (and int8 word embeddings)."""

    step: ClassVar[str] = "quantize_dynamic"
    backend: Backend = Field("auto", description="auto (time both here, keep the faster), torch (fbgemm) or "
                                                 "onnxruntime")
    embeddings: bool = Field(True, description="store the word embeddings as int8")
    fuse: bool = Field(True, description="onnxruntime: fuse attention, embeddings+LayerNorm, SkipLayerNorm and "
                                         "BiasGelu in the float graph before quantizing (checked against PyTorch)")
    smoothquant: float | None = Field(None, ge=0, le=1, description="SmoothQuant migration strength alpha (0.5 "
                                      "typical): fold max|X|^a / max|W|^(1-a) into the pre-norms first; null: off")
    calib_examples: int = Field(128, ge=1, description="smoothquant: train examples for the activation maxima")
    activations: Literal["tensor", "token"] = Field("tensor", description="tensor: one activation scale per call "
                                                    "(fbgemm, ORT); token: one per token (torch backend, "
                                                    "torch._int_mm int8 GEMM; SmolLM2: 1.7x fp32 prefill, 1.3x decode)")

    @model_validator(mode="after")
    def _token_backend(self) -> "QuantizeDynamic":
        check(self.activations == "tensor" or self.backend == "torch",
              f"quantize_dynamic: activations: token needs backend: torch (got {self.backend})")
        return self

    def preflight(self, model: nn.Module, task: Any) -> None:
        reason = ort_unsupported(model) if self.backend == "onnxruntime" else None
        if reason:
            raise SlimformerError(f"quantize_dynamic: {reason}")
        if self.smoothquant is not None:
            norm_groups(model, "quantize_dynamic: smoothquant")


def _torch(model: nn.Module, names: list[str], cfg: QuantizeDynamic) -> nn.Module:
    quantize_linears(model, names, bits=8, act="token" if cfg.activations == "token" else "dynamic")
    if cfg.embeddings:
        quantize_embeddings(model, bits=8)
    return model


def quantize_dynamic(model: nn.Module, cfg: QuantizeDynamic | None = None, tokenizer: object = None,
                     batches: list | None = None) -> nn.Module:
    """Quantize model (Python API) and return it: in place for an explicit backend; with `auto` the faster
    of two quantized copies is returned. `tokenizer` shapes the ONNX export inputs (optional for BERT);
    `batches` (guard.calibration_batches) are the calibration data smoothquant needs."""
    cfg = cfg or QuantizeDynamic()
    if cfg.smoothquant is not None:
        check(bool(batches), "quantize_dynamic: smoothquant needs calibration batches")
        report = smooth(model, batches or [], cfg.smoothquant)
        record_meta(model, "smoothquant", report)
    names = cfg.targets(model)
    if cfg.backend == "torch":
        return _torch(model, names, cfg)
    if cfg.backend == "onnxruntime":
        return quantize_onnx(model, tokenizer, names, mode="dynamic", embeddings=cfg.embeddings, optimize=cfg.fuse)
    reason = ort_unsupported(model)
    if reason:  # only one backend can serve this model: nothing to time
        out = _torch(model, names, cfg)
        record_meta(out, "quantize_backend", {"chosen": "torch", "why": reason})
        return out
    cands = {"torch": _torch(copy.deepcopy(model), names, cfg)}
    error = None
    try:
        cands["onnxruntime"] = quantize_onnx(copy.deepcopy(model), tokenizer, names, mode="dynamic",
                                             embeddings=cfg.embeddings, optimize=cfg.fuse)
    except (SlimformerError, ImportError) as e:  # export not possible: fbgemm is the fallback
        error = str(e)
    best, report = choose_backend(model, cands, tokenizer)
    if error:
        report["onnxruntime_error"] = error
    warn(slow_warning(report, model))
    out = cands[best]
    record_meta(out, "quantize_backend", report)
    return out


@implements(QuantizeDynamic)
def quantize_dynamic_step(model: nn.Module, cfg: QuantizeDynamic, ctx: Context) -> nn.Module:
    before = copy.deepcopy(model) if cfg.guard and ctx.task is not None else None
    if cfg.backend != "auto":
        advice = int8_advice(model)
        warn(advice)
        if advice:
            ctx.note("int8_advice", advice)
    batches = None
    if cfg.smoothquant is not None:
        batches = calibration_batches(ctx.tokenizer, ctx.require_task(cfg.step), cfg.calib_examples, ctx.max_len,
                                      seed=ctx.seed, model=model)
    model = quantize_dynamic(model, cfg, ctx.tokenizer, batches)
    sq = (getattr(model.config, "slimformer", None) or {}).get("smoothquant")
    if sq:
        ctx.note("smoothquant", sq)
    choice = (getattr(model.config, "slimformer", None) or {}).get("quantize_backend")
    if choice:
        ctx.note("backend", choice)
    ctx.note("quantized", summary(model) or {"backend": cfg.backend})
    if before is not None:
        run_guard(before, model, cfg, ctx)
    return model
