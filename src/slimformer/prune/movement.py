"""Movement pruning with learned scores (Sanh, Wolf & Rush 2020) and block movement pruning (Lagunas et al.
2021), trained on the HF Trainer with optional distillation from a teacher.

    model, info = sf.prune_movement(model, teacher, tokenizer, task,
                                    sf.PruneMovement(variant="hard", sparsity=0.9, max_steps=600), "work/")

Recipe: `- {step: prune_movement, variant: hard, sparsity: 0.9, teacher: teacher/}`. The model the recipe holds
is the one fine-pruned: the paper starts from the pre-trained model (give `minilm` as MODEL and the fine-tuned
model as `teacher`); starting from a fine-tuned model works the same way.

- `variant`: hard (top-k of learned scores per matrix), soft (sigmoid threshold + L1 regularizer on the
  scores; tau set globally each step so the kept fraction follows the schedule; in block mode `threshold:
  per_kind` sets one for heads and one for FFN neurons), magnitude (top-k of |W| per
  matrix: gradual magnitude pruning on the same budget and schedule). Scores learn at `score_lr` (1e-2),
  weights at `lr` (3e-5), as in the reference code; see movement_masks.py for the rules and their sources.
- `score_init`: magnitude (the default: scores start at |W| / mean |W|, so the first masks are magnitude
  pruning's and the learned movement reorders them) or zeros (the paper). From zeros the scores need thousands
  of steps to carry more signal than noise (the paper's runs are tens of thousands of steps); on shorter
  budgets zero-init top-k prunes almost at random and the model collapses, while magnitude-initialised hard and
  soft movement beat gradual magnitude on MiniLM SST-2 from 50% to 5% of the weights left
  (docs/BENCHMARKS.md section 9). Block mode may also start from `gradient` (prune_heads / prune_ffn's
  gradient importance), so movement refines the ranking the one-shot structured pruning would use.
- schedule: nothing pruned for the first `prune_warmup` of the run, the cubic schedule to `sparsity`, then the
  final mask held for the last `prune_cooldown` (reference: 1 and 2 LR warm-up periods).
- `block: true`: one score per head and per FFN neuron; the emptied heads and neurons are then removed with the
  `keep_heads` / `keep_ffn` ops (recorded, so the model reloads with its smaller shapes) and run faster.
- distillation: the Distill fields (kd, ce, temperature, teacher, ...); `kd: 0` trains on the labels alone.

At the end the masks are folded into the weights: the result is an ordinary dense model with zeros (plus the
structural ops in block mode). `slimformer.prune.sparse_io` saves it in a sparse format.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from ..distill.step import Distill, distill, fits
from ..distill.trainer import DistillTrainer
from ..errors import check
from ..models import get_adapter
from ..models.linear import in_features, is_conv1d
from ..steps import Context, implements, regexes
from ..tasks.base import Task
from .movement_masks import Group, Plan, attach, fold, keep_fraction, unit_masks
from .unstructured import prunable, sparsity_report


class PruneMovement(Distill):
    """Fine-prune with learned movement scores (hard / soft) or gradual magnitude, weights or whole heads+neurons."""

    step: ClassVar[str] = "prune_movement"
    variant: Literal["hard", "soft", "magnitude"] = Field("hard", description="hard: top-k of learned scores | "
                                                          "soft: threshold + L1 on the scores | magnitude: |W| "
                                                          "(gradual magnitude pruning on the same schedule)")
    sparsity: float = Field(..., description="fraction of the included weights pruned at the end, in (0, 1)")
    block: bool = Field(False, description="score whole attention heads and FFN neurons, then remove the "
                        "emptied ones physically (Lagunas et al. 2021)")
    score_lr: float = Field(1e-2, gt=0, description="learning rate of the scores (weights: lr)")
    score_init: Literal["magnitude", "zeros", "gradient"] = Field(
        "magnitude", description="magnitude: scores start as each matrix's |W| / mean |W|, so the first masks are "
        "magnitude pruning's and movement adjusts them | gradient (block only): heads and neurons start ranked by "
        "prune_heads / prune_ffn's gradient importance on 256 training examples | zeros: the paper's start "
        "(experimental: collapsed on MiniLM SST-2 with up to 865 steps; docs/BENCHMARKS.md section 9)")
    threshold: Literal["global", "per_kind"] = Field(
        "global", description="soft, block: one threshold over every head and neuron (global: attention and FFN "
        "compete for the weights kept) | one for heads and one for FFN neurons (per_kind: each keeps 1 - sparsity "
        "of its weights across the layers, as prune_heads + prune_ffn at the same keep)")
    regularization: float = Field(400.0, ge=0, description="soft: final lambda of the L1 term on sigmoid(scores)")
    prune_warmup: float = Field(0.1, ge=0, lt=1, description="fraction of the run before pruning starts")
    prune_cooldown: float = Field(0.2, ge=0, lt=1, description="fraction of the run at the final sparsity")
    include: list[str] | None = Field(None, description="regexes on Linear names (not with block); default: "
                                      "attention q/k/v/output and FFN up/down of every layer")
    lr: float = Field(3e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    epochs: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _valid(self) -> "PruneMovement":
        s = self.step
        check(0 < self.sparsity < 1, f"{s}: sparsity must be a fraction in (0, 1), got {self.sparsity}")
        check(self.prune_warmup + self.prune_cooldown < 1, f"{s}: prune_warmup + prune_cooldown must be below 1")
        check(not (self.block and self.include), f"{s}: include selects weight matrices; block mode prunes "
              f"the heads and FFN neurons of every layer (drop include)")
        check(self.block or self.score_init != "gradient", f"{s}: score_init gradient ranks heads and FFN neurons; "
              f"it needs block: true")
        check(self.threshold == "global" or (self.block and self.variant == "soft"), f"{s}: threshold per_kind "
              f"splits soft block movement's threshold between heads and FFN neurons; it needs variant: soft and "
              f"block: true")
        regexes(self.include, "include")
        return self

    def preflight(self, model: nn.Module, task: Any) -> None:
        fits(self, model, task)
        if self.block:
            atts = get_adapter(model).attention(model)
            check(not any(a.fused or is_conv1d(a.o) for a in atts), f"{self.step}: block mode needs separate "
                  f"q/k/v Linear layers (this model has a fused qkv projection); use block: false")


def _rows(n: int) -> Any:
    return lambda m: m.repeat_interleave(n)[:, None]


def _cols(n: int) -> Any:
    return lambda m: m.repeat_interleave(n)[None, :]


def build_groups(model: nn.Module, cfg: PruneMovement) -> dict[str, Group]:
    """Score groups: one per included weight matrix, or (block) one per attention block's heads and per FFN."""
    names = {id(m): n for n, m in model.named_modules()}
    if not cfg.block:
        mods = prunable(model, cfg.include)
        return {f"w{i}": Group(f"w{i}", tuple(m.weight.shape), [(n, lambda m: m)])
                for i, (n, m) in enumerate(mods.items())}
    adapter = get_adapter(model)
    groups: dict[str, Group] = {}
    for i, a in enumerate(adapter.attention(model)):
        d, g = a.head_dim, a.group
        targets = [(names[id(a.q)], _rows(g * d)), (names[id(a.k)], _rows(d)), (names[id(a.v)], _rows(d)),
                   (names[id(a.o)], _cols(g * d))]
        size = (in_features(a.q) * g + in_features(a.k) + in_features(a.v)) * d + a.o.weight.shape[0] * g * d
        groups[f"h{i}"] = Group(f"h{i}", (a.units,), targets, size, a.unit, "heads")
    for i, f in enumerate(adapter.ffn(model)):
        targets = [(names[id(u)], _rows(1)) for u in f.up] + [(names[id(f.down)], _cols(1))]
        size = sum(in_features(u) for u in f.up) + f.down.weight.shape[0]
        groups[f"f{i}"] = Group(f"f{i}", (f.width,), targets, size, f.unit, "ffn")
    return groups


def gradient_init(model: nn.Module, groups: dict[str, Group], tokenizer: Any, task: Task, max_len: int, seed: int,
                  examples: int = 256) -> dict[str, torch.Tensor]:
    """Block scores from gradient importance (sum of |dL/dgate| over `examples` training examples, as prune_heads
    and prune_ffn rank), each tensor divided by its mean like magnitude_init."""
    from .importance import importance, importance_batches

    batches = importance_batches(tokenizer, task, examples, max_len, 32, seed, model)
    out: dict[str, torch.Tensor] = {}
    for kind in ("heads", "ffn"):
        scores = importance(model, kind, "gradient", batches, normalize=False, task=task)
        for g in groups.values():
            if g.kind == kind:
                s = scores[g.unit].detach().float()
                out[g.key] = s / s.mean().clamp_min(1e-12)
    return out


class MovementTrainer(DistillTrainer):
    """DistillTrainer + the scores' own optimizer group (score_lr, no weight decay) + soft movement's L1 term."""

    def __init__(self, *args: Any, plan: Plan, score_lr: float, regularization: float, final_keep: float,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.plan, self.score_lr, self.regularization, self.final_keep = plan, score_lr, regularization, final_keep

    def create_optimizer(self, model: nn.Module | None = None) -> Any:
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            scores = {id(p) for p in (self.plan.scores.values() if self.plan.scores is not None else [])}
            decay = set(self.get_decay_parameter_names(opt_model))
            named = [(n, p) for n, p in opt_model.named_parameters() if p.requires_grad]
            groups = [{"params": [p for _, p in named if id(p) in scores], "lr": self.score_lr, "weight_decay": 0.0},
                      {"params": [p for n, p in named if id(p) not in scores and n in decay],
                       "weight_decay": self.args.weight_decay},
                      {"params": [p for n, p in named if id(p) not in scores and n not in decay], "weight_decay": 0.0}]
            cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = cls([g for g in groups if g["params"]], **kwargs)
        return self.optimizer

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.plan.variant != "soft" or not self.regularization or self.final_keep >= 1:
            return out
        lam = self.regularization * (1.0 - self.plan.keep) / (1.0 - self.final_keep)  # grows with the pruning
        reg = lam * self.plan.regularizer()
        self._terms["l1_scores"] += float(reg.detach())
        return (out[0] + reg, out[1]) if return_outputs else out + reg


def schedule_callback(plan: Plan, cfg: PruneMovement) -> Any:
    """Sets the plan's kept fraction before every optimizer step (from the Trainer's global step, so a resumed
    run continues the schedule where it stopped) and the final one at the end."""
    from transformers import TrainerCallback

    final = 1.0 - cfg.sparsity

    class Schedule(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            total = state.max_steps
            plan.set_keep(keep_fraction(state.global_step, total, round(cfg.prune_warmup * total),
                                        round(cfg.prune_cooldown * total), final))

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            plan.set_keep(final)

    return Schedule()


def remove_empty_units(model: nn.Module, plan: Plan, masks: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Block mode: remove the heads and FFN neurons whose score is masked (their weights are zero, so the
    outputs do not change); returns heads / neurons kept per unit."""
    from .ffn import keep_ffn
    from .heads import keep_heads

    heads: dict[str, list[int]] = {}
    ffn: dict[str, list[int]] = {}
    cut_heads: dict[str, list[int]] = {}
    cut_ffn: dict[str, list[int]] = {}
    for key, m in masks.items():
        g = plan.groups[key]
        kept = [int(j) for j in torch.nonzero(m).flatten()]
        (heads if g.kind == "heads" else ffn)[g.unit] = kept
        if len(kept) < m.numel():
            (cut_heads if g.kind == "heads" else cut_ffn)[g.unit] = kept
    if cut_heads:
        keep_heads(model, cut_heads)
    if cut_ffn:
        keep_ffn(model, cut_ffn)
    return {"heads_kept": {u: len(v) for u, v in heads.items()}, "ffn_kept": {u: len(v) for u, v in ffn.items()}}


def prune_movement(model: nn.Module, teacher: nn.Module | None, tokenizer: Any, task: Task, cfg: PruneMovement,
                   work_dir: str | Path, seed: int = 42, max_len: int = 128,
                   resume: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Fine-prune model in place by cfg (distilling from teacher when cfg.kd; teacher None: labels only, with
    kd and the hidden-state terms at 0); returns (model, report)."""
    cfg.preflight(model, task)
    if teacher is None:
        check(not cfg.weights().kd and not cfg.weights().needs_teacher_states,
              f"{cfg.step}: kd, cos, hidden, attention and pkd need a teacher; pass one or set them to 0")
        teacher = model  # never run: the loss is the labels' alone
    groups = build_groups(model, cfg)
    plan = Plan(cfg.variant, groups, by_kind=cfg.threshold == "per_kind")
    before = sum(m.weight.numel() for m in prunable(model, None if cfg.block else cfg.include).values())
    attach(model, plan, gradient_init(model, groups, tokenizer, task, max_len, seed)
           if cfg.score_init == "gradient" else cfg.score_init)
    kwargs = dict(plan=plan, score_lr=cfg.score_lr, regularization=cfg.regularization, final_keep=1 - cfg.sparsity)
    model, stats = distill(model, teacher, tokenizer, task, cfg, work_dir, seed, max_len, resume,
                           callbacks=[schedule_callback(plan, cfg)], trainer_cls=MovementTrainer,
                           trainer_kwargs=kwargs)
    plan.set_keep(1 - cfg.sparsity)
    masks = unit_masks(plan) if cfg.block else {}
    fold(model, plan)
    info: dict[str, Any] = {"variant": cfg.variant, "block": cfg.block, "train": stats}
    if cfg.block:
        info.update(remove_empty_units(model, plan, masks))
        mods = prunable(model)
    else:
        mods = prunable(model, cfg.include)
    model.eval()
    nonzero = sum(int((m.weight != 0).sum()) for m in mods.values())
    info["remaining"] = round(nonzero / before, 4)  # of the included weights the step started with
    return model, {**sparsity_report(model, mods), **info}


@implements(PruneMovement)
def prune_movement_step(model: nn.Module, cfg: PruneMovement, ctx: Context) -> nn.Module:
    from ..models import load

    task = ctx.require_task(cfg.step)
    teacher = load(cfg.teacher)[0] if cfg.teacher else ctx.original()
    model, info = prune_movement(model, teacher, ctx.tokenizer, task, cfg, ctx.work_dir / "movement", ctx.seed,
                                 ctx.max_len, ctx.resume)
    ctx.note("variant", info["variant"] + (" (block)" if info["block"] else ""))
    ctx.note("remaining", info["remaining"])
    ctx.note("sparsity", info["sparsity"])
    ctx.note("zeros", f"{info['zeros']}/{info['weights']}")
    if cfg.block:
        ctx.note("heads_kept", info["heads_kept"])
        ctx.note("ffn_kept", info["ffn_kept"])
    ctx.note("train", info["train"])
    return model
