"""Unstructured (weight-level) pruning: zero a fraction of the encoder's Linear weights.

    model, info = sf.prune_unstructured(model, sf.PruneUnstructured(sparsity=0.7, steps=3, recovery_steps=20),
                                        tokenizer, task)

Recipe: `- {step: prune_unstructured, sparsity: 0.7, scope: global, criterion: magnitude, steps: 3}`.

- criterion `magnitude`: |W| (no data). `movement` (Sanh et al. 2020): the first-order score -W * dL/dW summed
  over `score_examples` task examples at the current weights (the paper accumulates it during fine-tuning;
  here it is re-computed before every increment). Pruned weights keep their mask (masks only grow).
- scope `global`: one threshold over all included weights; `per_layer`: every included weight matrix
  gets the target sparsity.
- gradual: `steps` increments on the cubic schedule of Zhu & Gupta 2017, s_k = s (1 - (1 - k/steps)^3),
  each followed by `recovery_steps` optimizer steps of HF-Trainer fine-tuning (0 = one-shot, no training).
- `rewind` (lottery ticket; Frankle & Carbin 2019, Chen et al. 2020 for BERT): once the final mask is found,
  every weight is reset to its value when the model entered the step, the mask is applied, and the model is
  fine-tuned for `rewind_steps` (default `recovery_steps`) with the mask fixed.

The mask is re-applied after every optimizer step (a Trainer callback), so zeros stay zeros. The result is
a plain dense model whose weights contain zeros: no op is recorded and it reloads with `slimformer.load` or
`from_pretrained`. Dense safetensors do not get smaller, and dense CPU kernels (torch, ONNX Runtime) do not
get faster: unstructured sparsity gives no CPU speed-up here. `sparse_size(model)` measures what a sparse
encoding (float values of the nonzeros + a 1-bit-per-weight mask) would take on disk.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from ..errors import check
from ..fsutil import work_or_temp
from ..models import get_adapter
from ..models.linear import is_linear
from ..steps import regexes, Context, StepConfig, implements
from ..tasks.base import Task

CRITERIA = ("magnitude", "movement")


class PruneUnstructured(StepConfig):
    """Set a fraction of the encoder's Linear weights to zero (magnitude or movement; global or per weight matrix)."""

    step: ClassVar[str] = "prune_unstructured"
    sparsity: float = Field(..., description="fraction of the included weights set to zero, in [0, 1)")
    scope: Literal["global", "per_layer"] = Field("global", description="one threshold for all included "
                                                  "weights, or the same sparsity in every weight matrix")
    criterion: Literal["magnitude", "movement"] = Field("magnitude", description="magnitude |W| (no data) | "
                                                        "movement -W*grad (Sanh et al.; needs task data; "
                                                        "experimental: collapsed on MiniLM SST-2 at 70%, "
                                                        "see docs/BENCHMARKS.md section 6; learned scores: "
                                                        "the prune_movement step)")
    include: list[str] | None = Field(None, description="regexes on Linear module names; default: attention "
                                      "query/key/value/output and FFN up/down of every layer")

    @field_validator("include")
    @classmethod
    def _patterns(cls, v: list[str] | None) -> list[str] | None:
        return regexes(v, "include")
    steps: int = Field(1, ge=1, le=100, description="pruning increments on the cubic schedule (Zhu & Gupta)")
    recovery_steps: int = Field(0, ge=0, description="fine-tuning optimizer steps after each increment (0: one-shot)")
    recovery_lr: float = Field(5e-5, gt=0)
    batch_size: int = Field(32, ge=1)
    rewind: bool = Field(False, description="lottery ticket: reset surviving weights to their values before the "
                         "step, then fine-tune with the mask fixed")
    rewind_steps: int | None = Field(None, ge=0, description="fine-tuning steps after rewinding (default: "
                                     "recovery_steps)")
    score_examples: int = Field(256, ge=1, description="task examples the movement score is summed over")
    save_steps: int | None = Field(None, ge=1, description="checkpoint every N recovery steps (for resume); "
                                   "default: about every 10% of the run, 1 to 200")

    @field_validator("criterion", mode="before")
    @classmethod
    def _known_criterion(cls, v: Any) -> Any:
        check(v in CRITERIA, f"prune_unstructured: unknown criterion {v!r} (magnitude | movement)")
        return v

    @model_validator(mode="after")
    def _valid(self) -> "PruneUnstructured":
        s = self.step
        check(0 <= self.sparsity < 1, f"{s}: sparsity must be a fraction in [0, 1), got {self.sparsity}")
        for p in self.include or []:
            try:
                re.compile(p)
            except re.error as e:
                check(False, f"{s}: include pattern {p!r} is not a valid regex ({e})")
        check(self.include is None or len(self.include) > 0, f"{s}: include is empty; omit it for the default layers")
        return self

    @property
    def final_steps(self) -> int:
        """Fine-tuning steps after the last increment (after rewinding when rewind is on)."""
        return self.recovery_steps if not self.rewind or self.rewind_steps is None else self.rewind_steps

    @property
    def needs_data(self) -> bool:  # type: ignore[override]
        return self.criterion == "movement" or self.recovery_steps > 0 or self.final_steps > 0


def cubic_schedule(sparsity: float, steps: int) -> list[float]:
    """Sparsity after each of `steps` increments, Zhu & Gupta 2017: s (1 - (1 - k/steps)^3), k = 1..steps."""
    return [sparsity * (1.0 - (1.0 - k / steps) ** 3) for k in range(1, steps + 1)]


def prunable(model: nn.Module, include: list[str] | None = None) -> dict[str, nn.Linear]:
    """The Linear modules to prune, by name: the adapter's attention and FFN Linears of every encoder layer, or
    the Linear modules whose name matches an include regex. Embeddings, pooler and task head never."""
    adapter = get_adapter(model)
    names = {id(m): n for n, m in model.named_modules()}
    if include is None:
        mods: list[nn.Module] = []
        for att in adapter.attention(model):
            mods += [att.q, att.k, att.v, att.o] if not att.fused else [att.q, att.o]
        for ffn in adapter.ffn(model):
            mods += [*ffn.up, ffn.down]
        found = {names[id(m)]: m for m in mods if is_linear(m)}
    else:
        pats = [re.compile(p) for p in include]
        found = {n: m for n, m in model.named_modules() if is_linear(m) and any(p.search(n) for p in pats)}
    skip = [names[id(m)] for m in adapter.embedding_modules(model)] + adapter.head_modules(model)
    found = {n: m for n, m in found.items() if not any(n == s or n.startswith(s + ".") for s in skip)}
    check(len(found) > 0, f"prune_unstructured: no Linear layer to prune (include={include}); embeddings, "
          f"pooler and task head are never pruned")
    seen: set[int] = set()
    out = {}
    for n, m in found.items():  # a weight shared by several modules (share_layers) is pruned once
        if id(m.weight) not in seen:
            seen.add(id(m.weight))
            out[n] = m
    return out


def movement_scores(model: nn.Module, mods: dict[str, nn.Linear], batches: list[dict[str, torch.Tensor]],
                    task: Task | None = None) -> dict[str, torch.Tensor]:
    """Sanh et al. first-order movement score -sum_batches W * dL/dW for every weight of mods."""
    check(len(batches) > 0, "prune_unstructured: movement needs at least one batch of task examples")
    weights = [m.weight for m in mods.values()]
    scores = [torch.zeros_like(w, dtype=torch.float32) for w in weights]
    was_training, flags = model.training, [p.requires_grad for p in model.parameters()]
    model.eval()  # no dropout: the score of the deterministic model
    for p in model.parameters():
        p.requires_grad_(False)
    for w in weights:
        w.requires_grad_(True)
    try:
        for batch in batches:
            loss = task.loss(model, batch) if task is not None else model(**batch).loss
            check(loss is not None, "prune_unstructured: movement needs a model that returns a loss for labelled "
                  "batches (a task head)")
            for s, w, g in zip(scores, weights, torch.autograd.grad(loss, weights)):
                s -= (w.detach() * g).float()
    finally:
        for p, rg in zip(model.parameters(), flags):
            p.requires_grad_(rg)
        model.train(was_training)
    return dict(zip(mods, scores))


def _prune_lowest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask with the k lowest scores off (ties broken by position, so exactly k are off)."""
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    if k > 0:
        keep[torch.argsort(flat, stable=True)[:k]] = False
    return keep


def select_masks(scores: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], sparsity: float,
                 scope: str) -> dict[str, torch.Tensor]:
    """New keep-masks: the lowest-scoring round(sparsity * n) weights off, globally or per matrix. Weights
    already off stay off (their score is -inf)."""
    scores = {n: s.float().masked_fill(~masks[n], float("-inf")) for n, s in scores.items()}
    if scope == "per_layer":
        return {n: _prune_lowest(s.flatten(), round(sparsity * s.numel())).view_as(s) for n, s in scores.items()}
    flat = torch.cat([s.flatten() for s in scores.values()])
    keep = _prune_lowest(flat, round(sparsity * flat.numel()))
    parts = torch.split(keep, [s.numel() for s in scores.values()])
    return {n: p.view_as(s) for (n, s), p in zip(scores.items(), parts)}


@torch.no_grad()
def apply_masks(mods: dict[str, nn.Linear], masks: dict[str, torch.Tensor]) -> None:
    """Zero the weights whose mask is off (in place)."""
    for n, m in mods.items():
        m.weight.mul_(masks[n].to(m.weight.dtype))


def mask_callback(mods: dict[str, nn.Linear], masks: dict[str, torch.Tensor]) -> Any:
    """A Trainer callback that re-applies the masks after every optimizer step, so zeros stay zeros."""
    from transformers import TrainerCallback

    class KeepMasks(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            apply_masks(mods, masks)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            apply_masks(mods, masks)

    return KeepMasks()


def keep_zeros_callback(model: nn.Module) -> Any:
    """A Trainer callback keeping today's zeros of the prunable Linears at zero (training after prune_oneshot)."""
    mods = prunable(model)
    return mask_callback(mods, {n: m.weight.detach() != 0 for n, m in mods.items()})


def sparsity_report(model: nn.Module, mods: dict[str, nn.Linear]) -> dict[str, Any]:
    """Zeros of the included weights: per layer, per matrix and overall (measured on the weights)."""
    adapter = get_adapter(model)
    per_mod = {n: (int((m.weight == 0).sum()), m.weight.numel()) for n, m in mods.items()}
    layers: dict[str, list[int]] = {}
    for n, (z, t) in per_mod.items():
        where = adapter.locate(model, n)
        key = "other" if where is None else (str(where[1]) if not adapter.is_multi_stack(model)
                                             else f"{where[0]}.{where[1]}")
        acc = layers.setdefault(key, [0, 0])
        acc[0] += z
        acc[1] += t
    zeros, total = sum(z for z, _ in per_mod.values()), sum(t for _, t in per_mod.values())
    return {"sparsity": round(zeros / total, 4), "zeros": zeros, "weights": total,
            "sparsity_per_layer": {k: round(z / t, 4) for k, (z, t) in layers.items()},
            "sparsity_per_matrix": {n: round(z / t, 4) for n, (z, t) in per_mod.items()}}


def sparse_encode(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of the state dict once (as save_model writes it), each Linear weight whose encoding is smaller
    than the dense tensor as values + bitmask + shape (`sparse_io.encode`). A bitmask beats CSR with int32 column
    indices below ~97% sparsity (1 bit per weight vs 32 bits per nonzero)."""
    from .sparse_io import encode

    linear_weights = {id(m.weight) for m in model.modules() if is_linear(m)}
    tensors: dict[str, torch.Tensor] = {}
    names: set[str] = set()
    seen: set[int] = set()
    for name, p in model.state_dict(keep_vars=True).items():  # what save_model writes
        if id(p) in seen:  # shared tensors once
            continue
        seen.add(id(p))
        tensors[name] = p
        if id(p) in linear_weights:
            names.add(name)
    return encode(tensors, names)


def sparse_decode(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The dense tensors back from sparse_encode's output (exact)."""
    from .sparse_io import decode

    return decode(tensors)


def sparse_size(model: nn.Module) -> int:
    """Bytes of a safetensors file holding sparse_encode(model): measured by writing it, not estimated."""
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "sparse.safetensors"
        save_file(sparse_encode(model), str(path))
        return path.stat().st_size


def _recover(model: nn.Module, cfg: PruneUnstructured, n_steps: int, callback: Any, tokenizer: Any,
             task: Task, out: Path, seed: int, max_len: int, resume: bool) -> float | None:
    from ..train import TrainConfig, finetune

    tcfg = TrainConfig(max_steps=n_steps, lr=cfg.recovery_lr, batch_size=cfg.batch_size, max_len=max_len, seed=seed,
                       max_train_examples=n_steps * cfg.batch_size, save_steps=cfg.save_steps)
    model, stats = finetune(model, tokenizer, task, tcfg, out, resume=resume, callbacks=[callback])
    return stats.get("train_loss")


def prune_unstructured(model: nn.Module, cfg: PruneUnstructured, tokenizer: Any = None, task: Task | None = None,
                       work_dir: str | Path | None = None, seed: int = 42, max_len: int = 128,
                       resume: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Prune model's weights in place by cfg; returns (model, sparsity report with the per-increment history).
    Recovery checkpoints go to work_dir, or to a temporary folder removed on return."""
    with work_or_temp(work_dir, "slimformer-unstructured-") as base:
        return _prune_unstructured(model, cfg, tokenizer, task, base, seed, max_len, resume)


def _prune_unstructured(model: nn.Module, cfg: PruneUnstructured, tokenizer: Any, task: Task | None, base: Path,
                        seed: int, max_len: int, resume: bool) -> tuple[nn.Module, dict[str, Any]]:
    from .importance import importance_batches

    if cfg.needs_data:
        why = "criterion 'movement'" if cfg.criterion == "movement" else "recovery fine-tuning"
        check(task is not None and tokenizer is not None,
              f"prune_unstructured: {why} needs a tokenizer and task data (pass --task and --data)")
    mods = prunable(model, cfg.include)
    masks = {n: torch.ones_like(m.weight, dtype=torch.bool) for n, m in mods.items()}
    start = {k: v.detach().clone() for k, v in model.state_dict().items()} if cfg.rewind else None
    batches = None
    if cfg.criterion == "movement":
        assert task is not None
        batches = importance_batches(tokenizer, task, cfg.score_examples, max_len, cfg.batch_size, seed, model)
    callback = mask_callback(mods, masks)
    history = []
    schedule = cubic_schedule(cfg.sparsity, cfg.steps)
    for k, target in enumerate(schedule, start=1):
        if cfg.criterion == "movement":
            scores = movement_scores(model, mods, batches or [], task)
        else:
            scores = {n: m.weight.detach().abs() for n, m in mods.items()}
        new = select_masks(scores, masks, target, cfg.scope)
        for n in masks:  # in place: the callback holds these tensors
            masks[n].copy_(new[n])
        apply_masks(mods, masks)
        rep = sparsity_report(model, mods)
        history.append({"increment": k, "target": round(target, 4), "sparsity": rep["sparsity"]})
        last = k == len(schedule)
        if last and start is not None:  # lottery ticket: back to the weights the step started from
            model.load_state_dict(start)
            apply_masks(mods, masks)
            history[-1]["rewound"] = True
        n_steps = cfg.final_steps if last else cfg.recovery_steps
        if n_steps > 0:
            assert task is not None
            history[-1]["recovery_train_loss"] = _recover(model, cfg, n_steps, callback, tokenizer, task,
                                                          base / f"recovery-{k}", seed + k, max_len, resume)
    model.eval()
    rep = sparsity_report(model, mods)
    return model, {**rep, "schedule": [round(s, 4) for s in schedule], "increments": history}


@implements(PruneUnstructured)
def prune_unstructured_step(model: nn.Module, cfg: PruneUnstructured, ctx: Context) -> nn.Module:
    from ..bench import saved_size

    model, info = prune_unstructured(model, cfg, ctx.tokenizer, ctx.task, ctx.work_dir, ctx.seed, ctx.max_len,
                                     ctx.resume)
    ctx.note("sparsity", info["sparsity"])
    ctx.note("zeros", f"{info['zeros']}/{info['weights']}")
    ctx.note("sparsity_per_layer", info["sparsity_per_layer"])
    ctx.note("dense_bytes", saved_size(model))  # dense safetensors: the zeros take as much space as before
    ctx.note("sparse_encoded_bytes", sparse_size(model))  # float32 nonzeros + 1-bit mask, measured
    if len(info["increments"]) > 1 or cfg.recovery_steps or cfg.rewind:
        ctx.note("increments", info["increments"])
    return model
