"""Post-training static INT8: activation ranges calibrated on task train examples (min-max, percentile or
entropy), weights int8 per channel.

torch backend: each Linear quantizes its input with the calibrated (scale, zero), runs the fbgemm INT8 GEMM
and requantizes its output with the calibrated output range. onnxruntime backend: ORT `quantize_static`
(QDQ) with the same calibration data and ORT's MinMax / Percentile / Entropy calibrators.
"""
from __future__ import annotations

import copy
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from ..steps import Context, implements
from .calibrate import Method, observe, qparams
from .common import QuantStep, run_guard, summary
from .guard import calibration_batches
from .onnx_backend import quantize_onnx
from .ops import quantize_embeddings, quantize_linears


class QuantizeStatic(QuantStep):
    """Static INT8 with calibrated activation ranges."""

    step: ClassVar[str] = "quantize_static"
    needs_data: ClassVar[bool] = True
    method: Method = Field("percentile", description="calibration: minmax, percentile or entropy")
    percentile: float = Field(99.99, gt=50, le=100)
    calib_examples: int = Field(256, ge=1, description="train examples used for calibration")
    backend: Literal["torch", "onnxruntime"] = "torch"
    embeddings: bool = Field(True, description="store the word embeddings as int8")


def calibrated_ranges(model: nn.Module, names: list[str], batches: list[dict[str, torch.Tensor]],
                      method: Method = "percentile", percentile: float = 99.99) -> dict[str, list[float]]:
    """{linear name: [in_scale, in_zero, out_scale, out_zero]} from the float model's activations."""
    obs = observe(model, names, batches)
    out = {}
    for n, (o_in, o_out) in obs.items():
        s_in, z_in = qparams(*o_in.range(method, percentile))
        s_out, z_out = qparams(*o_out.range(method, percentile))
        out[n] = [s_in, float(z_in), s_out, float(z_out)]
    return out


def quantize_static(model: nn.Module, batches: list[dict[str, torch.Tensor]], cfg: QuantizeStatic | None = None,
                    tokenizer: object = None) -> nn.Module:
    """Quantize model in place with static INT8 calibrated on `batches` (Python API)."""
    cfg = cfg or QuantizeStatic()
    names = cfg.targets(model)
    if cfg.backend == "onnxruntime":
        return quantize_onnx(model, tokenizer, names, mode="static", calib_batches=batches, method=cfg.method,
                             percentile=cfg.percentile, embeddings=cfg.embeddings)
    ranges = calibrated_ranges(model, names, batches, cfg.method, cfg.percentile)
    quantize_linears(model, names, bits=8, act="static")
    mods = dict(model.named_modules())
    for n, qp in ranges.items():
        mods[n].act_qparams.copy_(torch.tensor(qp))
    if cfg.embeddings:
        quantize_embeddings(model, bits=8)
    return model


@implements(QuantizeStatic)
def quantize_static_step(model: nn.Module, cfg: QuantizeStatic, ctx: Context) -> nn.Module:
    task = ctx.require_task(cfg.step)
    batches = calibration_batches(ctx.tokenizer, task, cfg.calib_examples, ctx.max_len, seed=ctx.seed, model=model)
    before = copy.deepcopy(model) if cfg.guard else None
    model = quantize_static(model, batches, cfg, ctx.tokenizer)
    ctx.note("quantized", {**summary(model), "method": cfg.method, "backend": cfg.backend})
    if before is not None:
        run_guard(before, model, cfg, ctx)
    return model
