"""Half precision: every float weight and buffer cast to bfloat16 (or float16), `model.to(dtype)`.

Half the file, no calibration, no training, and (bfloat16) the range of fp32, so accuracy rarely moves. It is
faster only where the hardware multiplies in that format: CPUs with AVX512-BF16 or AMX (bf16), GPUs (both).
Elsewhere torch converts on the fly and the model can be slower than fp32; the step says so from the CPU's
flags. float16 on a CPU without AVX512-FP16 / AMX-FP16 is slow: prefer bfloat16 there. Recorded as an op,
so a reload casts the fresh model before loading the saved half-precision tensors. ONNX export writes an fp32
graph (ONNX Runtime's CPU kernels have no fast bf16 path); use `quantize_dynamic` for a small fast ORT graph.
"""
from __future__ import annotations

import copy
import sys
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from ..errors import SlimformerError
from ..models import apply_op, register_op
from ..steps import Context, StepConfig, implements
from .advice import cpu_flags, log
from .common import record_meta, run_guard
from .modules import QEmbedding, QLinear

Dtype = Literal["bfloat16", "float16"]
FAST = {"bfloat16": ("avx512_bf16", "amx_bf16"), "float16": ("avx512_fp16", "amx_fp16")}


class HalfPrecision(StepConfig):
    """Cast the whole model to bfloat16 or float16 (2x smaller; faster where the CPU or GPU computes in it)."""

    step: ClassVar[str] = "half_precision"
    quantizes: ClassVar[bool] = True  # nothing is trained or pruned in half precision after it
    dtype: Dtype = Field("bfloat16", description="bfloat16 (fp32's range, 8-bit mantissa: the safe choice on "
                                                 "CPUs) or float16 (more precision, less range; GPUs)")
    guard: bool = Field(True, description="evaluate on the dev split and warn when the metric drops")
    tolerance: float = Field(1.0, ge=0, description="allowed drop of the main metric, in points")
    guard_examples: int | None = Field(None, ge=1, description="evaluate the guard on the first N dev examples")

    def preflight(self, model: nn.Module, task: Any) -> None:
        if any(isinstance(m, (QLinear, QEmbedding)) for m in model.modules()):
            raise SlimformerError("half_precision: the model already has quantized layers; cast a float model")


@register_op("cast_dtype")
def _cast_dtype(model: nn.Module, dtype: str) -> None:
    if dtype not in FAST:
        raise SlimformerError(f"cast_dtype: unknown dtype {dtype!r}")
    model.to(getattr(torch, dtype))


def advice(dtype: str, flags: set[str] | None = None) -> list[str]:
    """Why `dtype` may not be faster than fp32 on this CPU (empty when it has the instructions)."""
    flags = cpu_flags() if flags is None else flags
    if not flags or any(f in flags for f in FAST[dtype]):
        return []
    return [f"this CPU has no {' / '.join(FAST[dtype])} instructions: {dtype} matrix products are converted "
            "on the fly and can be slower than fp32 (the file still halves)"]


def half_precision(model: nn.Module, cfg: HalfPrecision | None = None) -> nn.Module:
    """Cast `model` in place (Python API) and return it."""
    cfg = cfg or HalfPrecision()
    cfg.preflight(model, None)
    apply_op(model, "cast_dtype", dtype=cfg.dtype)
    record_meta(model, "half_precision", {"dtype": cfg.dtype, "advice": advice(cfg.dtype)})
    return model


def float32_twin(model: nn.Module) -> tuple[nn.Module, str | None]:
    """(`model`, None) when its weights are fp32, else (an fp32 copy, a note saying so): for the exporters."""
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if dtypes <= {torch.float32}:
        return model, None
    names = ", ".join(sorted(str(d).replace("torch.", "") for d in dtypes))
    return copy.deepcopy(model).float(), f"the model's {names} weights are exported as fp32 (ONNX Runtime's CPU " \
                                         "kernels have no fast half-precision path)"


@implements(HalfPrecision)
def half_precision_step(model: nn.Module, cfg: HalfPrecision, ctx: Context) -> nn.Module:
    before = copy.deepcopy(model) if cfg.guard and ctx.task is not None else None
    lines = advice(cfg.dtype)
    for line in lines:
        log.warning(line)
        print(f"{cfg.dtype.upper()} MAY NOT PAY OFF: {line}", file=sys.stderr, flush=True)
    if lines:
        ctx.note("advice", lines)
    model = half_precision(model, cfg)
    ctx.note("cast", {"dtype": cfg.dtype})
    if before is not None:
        run_guard(before, model, cfg, ctx)  # type: ignore[arg-type]  (it reads guard, tolerance, guard_examples)
    return model
