"""One-shot post-training pruning with calibration data, as LLM users prune: Wanda and SparseGPT, unstructured or
N:M semi-structured (2:4), no training.

    - {step: prune_oneshot, method: sparsegpt, sparsity: 0.5}          # unstructured, 50% of each row
    - {step: prune_oneshot, method: wanda, pattern: "2:4"}              # 2 zeros in every 4 input columns

- `wanda` (Sun et al. 2023, "A Simple and Effective Pruning Approach for LLMs"): score |W_ij| * ||X_j||_2 (the
  norm of input feature j over the calibration tokens); the lowest scores of each output row are zeroed.
  Weights are not updated.
- `sparsegpt` (Frantar & Alistarh 2023): columns are processed left to right in blocks; within a block the
  mask keeps the weights with the largest w^2 / [H^-1]_jj^2 (H = X^T X of the layer's inputs, dampened), and
  the error of each pruned column is spread over the not-yet-visited columns with the inverse Hessian (the OBS
  update), so the surviving weights compensate.
- `magnitude`: |W_ij| per output row, the baseline at the same granularity.

Layers are processed in order (`layerwise.py`): each layer is fitted to the outputs of the already pruned layers
before it, as the reference implementations do. The included Linears are those of `prune_unstructured`
(attention and FFN of every layer; embeddings, LM head and task head never). The result is a dense model with
zeros (no op recorded; it reloads with `slimformer.load` or `from_pretrained`). A training step after this one
does not keep the zeros: prune_unstructured's recovery does (it re-applies its masks after every step).
"""
from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from ..errors import check
from ..models.linear import in_features, is_conv1d, weight_oi
from ..progress import track
from ..quantize.gptq import hessian, prepare_obs
from ..steps import Context, StepConfig, implements, regexes
from .layerwise import Batches, for_each_layer
from .unstructured import prunable, sparsity_report


class PruneOneShot(StepConfig):
    """Zero weights of every layer's Linears from calibration data (Wanda, SparseGPT or per-row magnitude)."""

    step: ClassVar[str] = "prune_oneshot"
    needs_data: ClassVar[bool] = True
    method: Literal["wanda", "sparsegpt", "magnitude"] = "sparsegpt"
    sparsity: float | None = Field(None, description="fraction of each row zeroed, in (0, 1) (unstructured)")
    pattern: str | None = Field(None, description="N:M semi-structured, e.g. '2:4' (N zeros in every M inputs)")
    calib_examples: int = Field(128, ge=1, description="calibration examples (language models: blocks of max_len "
                                "tokens)")
    calib_split: str = Field("train", description="the task split calibration examples come from")
    batch_size: int = Field(8, ge=1)
    damp: float = Field(0.01, gt=0, description="SparseGPT dampening, a fraction of the mean Hessian diagonal")
    block: int = Field(128, ge=1, description="SparseGPT column block")
    include: list[str] | None = Field(None, description="regexes on Linear names; default: attention and FFN "
                                      "Linears of every layer")

    @field_validator("include")
    @classmethod
    def _patterns(cls, v: list[str] | None) -> list[str] | None:
        return regexes(v, "include")

    @model_validator(mode="after")
    def _one_target(self) -> "PruneOneShot":
        check((self.sparsity is None) != (self.pattern is None), "prune_oneshot: give exactly one of sparsity "
              "(unstructured) or pattern (N:M)")
        check(self.sparsity is None or 0 < self.sparsity < 1,
              f"prune_oneshot: sparsity must be in (0, 1), got {self.sparsity}")
        if self.pattern is not None:
            m = re.fullmatch(r"(\d+):(\d+)", self.pattern)
            check(m is not None and 0 < int(m[1]) < int(m[2]) <= 64,
                  f"prune_oneshot: pattern must be N:M with 0 < N < M <= 64, got {self.pattern!r}")
        return self

    @property
    def n_m(self) -> tuple[int, int] | None:
        if self.pattern is None:
            return None
        n, m = self.pattern.split(":")
        return int(n), int(m)

    @property
    def target(self) -> float:
        nm = self.n_m
        return nm[0] / nm[1] if nm else float(self.sparsity)  # type: ignore[arg-type]

    def preflight(self, model: nn.Module, task: Any) -> None:
        if self.n_m:
            m = self.n_m[1]
            bad = [n for n, mod in prunable(model, self.include).items() if in_features(mod) % m]
            check(not bad, f"prune_oneshot: {bad[0] if bad else ''} has {m}-indivisible input width; "
                  f"pattern {self.pattern} needs every input width to be a multiple of {m}")


def row_mask(score: torch.Tensor, sparsity: float | None, n_m: tuple[int, int] | None) -> torch.Tensor:
    """True where a weight is pruned: the lowest `sparsity` of each row, or the N lowest of every M columns."""
    rows, cols = score.shape
    if n_m is not None:
        n, m = n_m
        groups = score.reshape(rows, cols // m, m)
        low = torch.topk(groups, n, dim=-1, largest=False).indices
        return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, low, True).reshape(rows, cols)
    k = int(cols * float(sparsity))  # type: ignore[arg-type]
    mask = torch.zeros_like(score, dtype=torch.bool)
    if k:
        mask.scatter_(1, torch.topk(score, k, dim=1, largest=False).indices, True)
    return mask


def wanda_scores(w: torch.Tensor, xs: list[torch.Tensor]) -> torch.Tensor:
    """|W| * ||X_j||_2 over the calibration tokens (Wanda)."""
    sq = torch.zeros(w.shape[1], dtype=torch.float64)
    for x in xs:
        sq += (x.double() ** 2).sum(0)
    return w.abs() * sq.sqrt().float()[None, :]


@torch.no_grad()
def sparsegpt_prune(w: torch.Tensor, h: torch.Tensor, sparsity: float | None, n_m: tuple[int, int] | None,
                    damp: float = 0.01, block: int = 128) -> torch.Tensor:
    """SparseGPT: the pruned and OBS-updated copy of w [out, in] given the input Hessian h [in, in]."""
    w, hinv = prepare_obs(w, h, damp)
    cols = w.shape[1]
    if n_m is not None:
        block = max(n_m[1], block - block % n_m[1])  # N:M groups never straddle two blocks
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        d = torch.diag(hinv1)
        mask1 = row_mask(w1 ** 2 / d[None, :] ** 2, sparsity, n_m) if n_m else None
        if n_m is None:  # the block's share of each row's sparsity, chosen over the whole block
            score = w1 ** 2 / d[None, :] ** 2
            k = int(score.numel() * float(sparsity))  # type: ignore[arg-type]
            mask1 = torch.zeros_like(score, dtype=torch.bool)
            if k:
                mask1.view(-1)[torch.topk(score.view(-1), k, largest=False).indices] = True
        for i in range(i2 - i1):
            col = w1[:, i]
            q = col.masked_fill(mask1[:, i], 0.0)
            e = (col - q) / d[i]
            w1[:, i:] -= e[:, None] * hinv1[i, i:][None, :]
            w1[:, i] = q
            err1[:, i] = e
        w[:, i1:i2] = w1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return w


def prune_oneshot(model: nn.Module, cfg: PruneOneShot, batches: Batches) -> dict[str, Any]:
    """Prune model in place (Python API) with calibration `batches` (see quantize.guard.calibration_batches)."""
    check(len(batches) > 0, "prune_oneshot: no calibration batches")
    mods = prunable(model, cfg.include)
    bar = track(range(len(mods)), desc=f"{cfg.method} {cfg.pattern or cfg.sparsity}", total=len(mods))
    it = iter(bar)

    def fit(layer: nn.Module, seen: dict[str, list[torch.Tensor]]) -> None:
        for name, xs in seen.items():
            weight = mods[name].weight
            w = weight_oi(mods[name]).detach().float()  # [out, in] (GPT-2's Conv1D stores [in, out])
            if cfg.method == "sparsegpt":
                new = sparsegpt_prune(w, hessian(xs, w.shape[1]), cfg.sparsity, cfg.n_m, cfg.damp, cfg.block)
            else:
                score = wanda_scores(w, xs) if cfg.method == "wanda" else w.abs()
                new = w.masked_fill(row_mask(score, cfg.sparsity, cfg.n_m), 0.0)
            weight.copy_((new.T if is_conv1d(mods[name]) else new).to(weight.dtype))
            next(it, None)

    for_each_layer(model, batches, mods, fit)
    for _ in it:
        pass
    return sparsity_report(model, mods)


@implements(PruneOneShot)
def prune_oneshot_step(model: nn.Module, cfg: PruneOneShot, ctx: Context) -> nn.Module:
    from ..quantize.guard import calibration_batches

    task = ctx.require_task(cfg.step)
    batches = calibration_batches(ctx.tokenizer, task, cfg.calib_examples, ctx.max_len, cfg.batch_size,
                                  seed=ctx.seed, split=cfg.calib_split, model=model)
    for k, v in prune_oneshot(model, cfg, batches).items():
        ctx.note(k, v)
    return model
