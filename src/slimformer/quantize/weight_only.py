"""Weight-only 8/4/3-bit quantization with group-wise scales: round-to-nearest, GPTQ or AWQ.

Weights are stored as uint8 codes (two 4-bit codes per byte, eight 3-bit codes per three bytes) with fp16
scales and uint8 zeros per group, so the file really shrinks; at run time each layer dequantizes once to fp32
(size on disk, not latency), or with `kernel: int4` (4/3 bits) runs on torch's CPU int4 kernel from the codes
(int4_cpu.py: faster batch-1 decoding, bf16 activations).

- `rtn`: round to nearest on an asymmetric grid per group (min-max, or `grid: mse`, the clipping search).
- `gptq` (gptq.py): column by column with the inverse input Hessian; `act_order: true` visits columns by
  decreasing Hessian diagonal with static groups (grids fixed from the original weights, storage unchanged);
  `sequential: true` takes each layer's Hessians from the already quantized layers' outputs.
- `awq` (awq.py): activation-aware per-channel scales searched per layer and folded into the op before
  (norm, v, up), then RTN. Needs pre-norm layers (Llama-style decoders, GPT-2).
"""
from __future__ import annotations

import copy
import sys
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator
from torch import nn

from ..errors import check
from ..models import apply_op
from ..progress import track
from ..steps import Context, implements
from .awq import awq_scale
from .common import QuantStep, record_meta, run_guard, summary
from .gptq import gptq_quantize, gptq_sequential, input_hessians
from .guard import calibration_batches
from .modules import QLinear, fit_group, group_params
from .ops import head_tied, quantize_embeddings, quantize_linears, untie_lm_head, use_weight_kernel
from .smoothing import norm_groups


class QuantizeWeights(QuantStep):
    """Weight-only quantization of Linear layers (and the word embeddings) to 8, 4 or 3 bits."""

    step: ClassVar[str] = "quantize_weights"
    bits: Literal[3, 4, 8] = Field(4, description="bits per weight; 3-bit codes are packed 8 per 3 bytes")
    group_size: int | None = Field(128, ge=2, description="columns per scale (None: one scale per row)")
    method: Literal["rtn", "gptq", "awq"] = Field("rtn", description="rtn (round to nearest), gptq (Hessian "
                                                  "error compensation) or awq (activation-aware scales, then rtn)")
    act_order: bool = Field(False, description="gptq: quantize columns by decreasing Hessian diagonal (static "
                            "groups: each group's grid fixed from the original weights)")
    awq_grid: int = Field(20, ge=1, le=100, description="awq: alpha tried at i/awq_grid, i = 0..awq_grid")
    sequential: bool = Field(True, description="gptq: calibrate layer by layer on the outputs of the layers "
                             "already quantized (the reference algorithm); false: one pass of the float model "
                             "for every Hessian (faster, worse: SmolLM2 g64 17.97 vs 17.79 perplexity)")
    grid: Literal["minmax", "mse"] = Field("minmax", description="each group's grid (Linears): min-max, or mse: "
                                           "the clipping that minimises the group's rounding error (GPTQ's "
                                           "reference `mse` search; slower to quantize, same storage)")
    lm_head: bool | Literal["shared"] = Field(
        False, description="quantize the LM head too, with the same method (GPTQ: calibrated on the final hidden "
        "states); true: a head tied to the embeddings gets its own copy first, so the file holds a low-bit head and "
        "a low-bit table instead of one fp32 table; shared (tied models): the head's codes also serve the "
        "embedding lookups, one low-bit copy for both")
    embeddings: bool = Field(True, description="quantize the word embeddings too (a table tied to the LM head "
                             "stays fp32 unless lm_head unties or shares them)")
    embedding_bits: Literal[3, 4, 8] | None = Field(None, description="bits of the embeddings (default: bits)")
    kernel: Literal["dequant", "int4"] = Field(
        "dequant", description="how the layers run on a CPU: dequant (fp32 weights dequantized once: exact, fp32 "
        "speed and memory) or int4 (4/3 bits, groups of 32-256: torch's CPU int4 kernel reads the packed codes, "
        "activations rounded to bf16; faster batch-1 decoding, an eighth of fp32's weight bytes)")
    calib_examples: int = Field(128, ge=1, description="train examples for the GPTQ Hessians / AWQ statistics")
    damp: float = Field(0.01, gt=0, description="GPTQ dampening, a fraction of the mean Hessian diagonal")

    @model_validator(mode="after")
    def _options(self) -> "QuantizeWeights":
        check(self.kernel == "dequant" or self.bits in (3, 4),
              f"quantize_weights: kernel {self.kernel} runs 4-bit and 3-bit codes, not {self.bits}-bit ones")
        check(not self.act_order or self.method == "gptq",
              f"quantize_weights: act_order applies to method gptq, not {self.method}")
        check(self.lm_head != "shared" or self.embedding_bits in (None, self.bits),
              "quantize_weights: lm_head shared gives the table the head's codes, so embedding_bits must equal bits")
        return self

    def preflight(self, model: nn.Module, task: Any) -> None:
        if self.method == "awq":
            norm_groups(model, "quantize_weights: method awq")


def quantize_weights(model: nn.Module, cfg: QuantizeWeights | None = None,
                     batches: list | None = None) -> nn.Module:
    """Quantize model in place (Python API). GPTQ and AWQ need calibration `batches`
    (see guard.calibration_batches); without them GPTQ falls back to RTN, AWQ refuses."""
    cfg = cfg or QuantizeWeights()
    names = cfg.targets(model)
    if cfg.lm_head:
        check(cfg.lm_head is True or head_tied(model),
              "quantize_weights: lm_head shared needs an LM head tied to the word embeddings")
        head = untie_lm_head(model)
        names += [] if head in names else [head]
    if cfg.method == "awq":
        check(bool(batches), "quantize_weights: method awq needs calibration batches")
        report = awq_scale(model, batches or [], cfg.bits, cfg.group_size, cfg.awq_grid)
        record_meta(model, "awq", {k: report[k] for k in ("error_rtn", "error_awq")})
    mods = dict(model.named_modules())
    gptq = cfg.method == "gptq" and bool(batches)
    by_group: dict[int | None, list[str]] = {}
    for n in names:
        by_group.setdefault(fit_group(mods[n].in_features, cfg.group_size), []).append(n)
    group_of = {n: gs for gs, ns in by_group.items() for n in ns}
    codes = (gptq_sequential(model, names, batches or [], cfg.bits, group_of, cfg.damp, cfg.act_order,
                             cfg.grid == "mse") if gptq and cfg.sequential else {})
    # Linears outside the layers (an LM head): Hessians from the outputs of the layers quantized above
    rest = [n for n in names if n not in codes]
    hessians = input_hessians(model, rest, batches) if gptq and rest else {}
    floats = {n: mods[n].weight.detach().clone() for n in rest}
    for gs, group_names in by_group.items():
        quantize_linears(model, group_names, bits=cfg.bits, group_size=gs, act="none")
    qmods = dict(model.named_modules())
    for n, c in codes.items():
        qmods[n].set_codes(*c)
    for n in track(rest, desc="gptq", total=len(rest)) if hessians else rest:
        q: QLinear = qmods[n]
        if n in hessians:
            q.set_codes(*gptq_quantize(floats[n], hessians[n], cfg.bits, q.group_size, cfg.damp,
                                       act_order=cfg.act_order, mse=cfg.grid == "mse"))
        elif cfg.grid == "mse":  # round to nearest on the searched grid
            q.set_weight(floats[n], *group_params(floats[n], cfg.bits, q.group_size, mse=True))
    if cfg.lm_head == "shared":
        apply_op(model, "share_head_codes")
    elif cfg.embeddings:
        quantize_embeddings(model, bits=cfg.embedding_bits or cfg.bits, group_size=cfg.group_size)
    if cfg.kernel != "dequant":
        used = use_weight_kernel(model, cfg.kernel)
        record_meta(model, "weight_kernel", {"kernel": cfg.kernel, "layers": len(used["layers"]), "kept": used["kept"]})
    return model


@implements(QuantizeWeights)
def quantize_weights_step(model: nn.Module, cfg: QuantizeWeights, ctx: Context) -> nn.Module:
    batches = None
    if cfg.method in ("gptq", "awq"):
        task = ctx.require_task(cfg.step)
        batches = calibration_batches(ctx.tokenizer, task, cfg.calib_examples, ctx.max_len, seed=ctx.seed, model=model)
    before = copy.deepcopy(model) if cfg.guard and ctx.task is not None else None
    model = quantize_weights(model, cfg, batches)
    meta = getattr(model.config, "slimformer", None) or {}
    for key in ("awq", "weight_kernel"):
        if meta.get(key):
            ctx.note(key, meta[key])
    kept = meta.get("weight_kernel", {}).get("kept")
    if kept:
        name, why = next(iter(kept.items()))
        print(f"quantize_weights: {len(kept)} layers stay on the dequantized path (e.g. {name}: {why})",
              file=sys.stderr, flush=True)
    ctx.note("quantized", summary(model))
    if before is not None:
        run_guard(before, model, cfg, ctx)
    return model
