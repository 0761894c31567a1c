"""The `distill` recipe step and Python API: task-specific distillation of the current model from a teacher.

    student = sf.make_student(teacher, every=2)
    student, stats = sf.distill(student, teacher, tok, task, sf.Distill(kd=1, ce=0.5, hidden=1), "work/")

The teacher is the model as it entered the recipe (default) or a model directory (`teacher: path`).
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, ClassVar, Iterator, Literal, Union

import torch
from pydantic import Field, model_validator
from torch import nn

from ..errors import SlimformerError, check
from ..models import get_adapter
from ..progress import console
from ..steps import Context, StepConfig, implements
from ..tasks.base import Task
from .augment import agreement, augment_examples, relabel
from .layer_map import build_layer_map, describe_layer_map
from .trainer import (DistillTrainer, IndexedDataset, LossWeights, attach_projections, detach_projections,
                      teacher_logits_cache)


class LossTerms(StepConfig):
    """Loss-term weights shared by the task-specific and the task-agnostic steps."""

    kd: float = Field(1.0, ge=0, description="soft-target KL at temperature T (scaled by T^2)")
    temperature: float = Field(2.0, gt=0)
    ce: float = Field(0.5, ge=0, description="hard-label cross-entropy")
    cos: float = Field(0.0, ge=0, description="1 - cosine of the last hidden states (DistilBERT)")
    hidden: float = Field(0.0, ge=0, description="hidden-state MSE over the layer map (TinyBERT)")
    attention: float = Field(0.0, ge=0, description="attention-distribution KL over the layer map")
    pkd: float = Field(0.0, ge=0, description="normalised [CLS] MSE over the layer map (Patient KD)")
    layer_map: Union[str, list[list[int]]] = Field("uniform", description="uniform | skip | last | [[s, t], ...]")
    epochs: float = Field(3.0, gt=0)
    lr: float = Field(5e-5, gt=0)
    batch_size: int = Field(32, ge=1)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    max_steps: int = -1
    save_steps: int | None = Field(None, ge=1, description="checkpoint every N optimizer steps (for resume); "
                                   "default: about every 10% of the run, 1 to 200")

    @model_validator(mode="after")
    def _some_term(self) -> "LossTerms":
        check(any((self.kd, self.ce, self.cos, self.hidden, self.attention, self.pkd)),
              f"{self.step}: every loss weight is 0; set at least one of kd, ce, cos, hidden, attention, pkd")
        return self

    def weights(self) -> LossWeights:
        return LossWeights(kd=self.kd, ce=self.ce, cos=self.cos, hidden=self.hidden, attention=self.attention,
                           pkd=self.pkd, temperature=self.temperature)


class Distill(LossTerms):
    """Distil the current model (the student) from a teacher on the task's training split."""

    step: ClassVar[str] = "distill"
    needs_data: ClassVar[bool] = True
    teacher: str | None = Field(None, description="teacher model directory; default: the model before the recipe")
    max_train_examples: int | None = Field(None, ge=1)
    cache_teacher: bool = Field(False, description="compute teacher logits once and reuse them every epoch")
    keep_zeros: bool = Field(False, description="weights that are zero when the step starts stay zero (recovery "
                             "after prune_oneshot / prune_unstructured)")
    targets: Literal["gold", "teacher"] = Field("gold", description="teacher: sequence-level KD (Kim & Rush "
                                                "2016), translation only: train on the teacher's beam-search outputs")
    target_beams: int | None = Field(None, ge=1, description="beams of the teacher's translations (default: the "
                                     "task's)")
    augment: int = Field(0, ge=0, description="altered copies of every training example, labelled by the teacher "
                         "(Tang et al. 2019: words masked or swapped, n-grams cut); classification and regression")

    @model_validator(mode="after")
    def _cache_ok(self) -> "Distill":
        check(not self.cache_teacher or not (self.cos or self.hidden or self.attention or self.pkd),
              "distill: cache_teacher caches logits only; it needs cos, hidden, attention and pkd at 0")
        return self

    def preflight(self, model: nn.Module, task: Any) -> None:
        fits(self, model, task)


def fits(cfg: "Distill", student: nn.Module, task: Task | None) -> None:
    """One-line errors when this distillation cannot run on this student and task."""
    if task is None:
        return
    check(task.distill_target != "embedding", "distill: a sentence-embedding model (similarity, embedding mode) "
          "is distilled on its embeddings by the distill_embeddings step")
    check(cfg.targets == "gold" or task.kind == "translation",
          f"distill: targets: teacher (sequence-level KD) needs a translation task, not {task.kind}")
    task.check_model(student)
    check(not cfg.cache_teacher or task.distill_target in ("logits", "regression"),
          "distill: cache_teacher stores one logit row per example; per-token targets (translation, language "
          "modelling) are computed on the fly")
    check(not cfg.augment or task.distill_target in ("logits", "regression"),
          f"distill: augment alters sentences of a classification or regression task, not {task.kind}")
    check(not (cfg.cos or cfg.hidden or cfg.attention or cfg.pkd) or not get_adapter(student).is_multi_stack(student),
          "distill: cos, hidden, attention and pkd terms need a single-stack model (encoder or decoder-only); "
          "for an encoder-decoder use kd and ce")


@contextlib.contextmanager
def eager_attention(models: list[nn.Module], needed: bool) -> Iterator[None]:
    """Switch models to the eager attention implementation (the only one returning attention maps)."""
    old = [m.config._attn_implementation for m in models]
    try:
        if needed:
            for m in models:
                m.set_attn_implementation("eager")
        yield
    finally:
        if needed:
            for m, impl in zip(models, old):
                m.set_attn_implementation(impl)


def resolve_layer_map(student: nn.Module, teacher: nn.Module, cfg: LossTerms) -> list[tuple[int, int]]:
    ns = len(get_adapter(student).layers(student))
    nt = len(get_adapter(teacher).layers(teacher))
    return build_layer_map(cfg.layer_map, ns, nt)


def run_distillation(student: nn.Module, teacher: nn.Module, tokenizer: Any, train_ds: Any, collate: Any,
                     cfg: LossTerms, out_dir: str | Path, seed: int = 42, resume: bool = False,
                     max_len: int = 128, cached_logits: torch.Tensor | None = None,
                     callbacks: list[Any] | None = None, task: Task | None = None,
                     trainer_cls: type[DistillTrainer] = DistillTrainer,
                     trainer_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train student against teacher on train_ds with the HF Trainer (a DistillTrainer subclass may add its own
    loss terms or optimizer groups: movement pruning); returns stats (layer map, timings)."""
    from ..train import TrainConfig, run_training, set_seed, training_args

    out_dir = Path(out_dir)
    pairs = resolve_layer_map(student, teacher, cfg)
    w = cfg.weights()
    uses_map = bool(w.hidden or w.attention or w.pkd)
    text = describe_layer_map(pairs)
    if uses_map:
        console.print(f"[bold]distill layer map:[/] {text}")
    ns = len(get_adapter(student).layers(student))
    set_seed(seed)
    n_proj = attach_projections(student, teacher, pairs, ns, seed, w) if w.needs_hidden else 0
    tcfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, max_len=max_len, seed=seed,
                       warmup_ratio=cfg.warmup_ratio, max_steps=cfg.max_steps, save_steps=cfg.save_steps)
    args = training_args(tcfg, out_dir, len(train_ds))
    args.remove_unused_columns = False  # else the Trainer's collator wrapper drops sf_index (the cache key)
    trainer = trainer_cls(model=student, args=args, train_dataset=train_ds,
                             data_collator=collate, teacher=teacher, weights=w, layer_map=pairs,
                             cached_logits=cached_logits, callbacks=callbacks,
                             target=task.distill_target if task is not None else "logits",
                             shift_labels=task is not None and task.kind == "language_modeling",
                             **(trainer_kwargs or {}))
    t0 = time.perf_counter()
    try:
        with eager_attention([student, teacher], bool(w.attention)):
            stats = run_training(trainer, out_dir, resume)
    finally:
        detach_projections(student)
    student.eval()
    wall = time.perf_counter() - t0
    stats.update({"layer_map": [list(p) for p in pairs] if uses_map else None,
                  "layer_map_text": text if uses_map else None, "projections": n_proj, "wall_s": round(wall, 2),
                  "wall_per_epoch_s": round(wall / cfg.epochs, 2) if cfg.max_steps < 0 else None,
                  "weights": {k: v for k, v in vars(w).items() if v}})
    return stats


def distill(student: nn.Module, teacher: nn.Module, tokenizer: Any, task: Task, cfg: Distill,
            work_dir: str | Path, seed: int = 42, max_len: int = 128,
            resume: bool = False, callbacks: list[Any] | None = None, trainer_cls: type[DistillTrainer] = DistillTrainer,
            trainer_kwargs: dict[str, Any] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Task-specific distillation of student (trained in place) from teacher; returns (student, stats)."""
    from ..train import TrainConfig, train_dataset, train_examples

    fits(cfg, student, task)
    if cfg.kd or cfg.targets == "teacher" or cfg.augment:
        try:
            task.check_model(teacher)
        except SlimformerError as e:
            what = "kd" if cfg.kd else "targets: teacher" if cfg.targets == "teacher" else "augment"
            raise SlimformerError(f"distill: {what} needs a teacher trained for the task: {e}") from e
    work_dir = Path(work_dir)
    tcfg = TrainConfig(max_len=max_len, seed=seed, max_train_examples=cfg.max_train_examples)
    examples, seq_kd = train_examples(task, tcfg), None
    if cfg.targets == "teacher":
        from .sequence_level import with_teacher_targets

        examples, seq_kd = with_teacher_targets(task, examples, teacher, tokenizer, work_dir, cfg.target_beams,
                                                max_len)
    n_gold = len(examples)
    if cfg.augment:
        examples = examples + augment_examples(examples, cfg.augment, seed, getattr(tokenizer, "mask_token", None))
    base = train_dataset(tokenizer, task, tcfg, examples)
    collate = task.collator(tokenizer, student)
    cached, cache_s, aug = None, None, None
    if cfg.cache_teacher or cfg.augment:  # augmented copies need the teacher's labels before training
        t0 = time.perf_counter()
        cached = teacher_logits_cache(teacher, base, collate, work_dir / "teacher_logits.safetensors")
        cache_s = round(time.perf_counter() - t0, 2)
        if cfg.augment:
            aug = {"copies": cfg.augment, "examples": relabel(base, cached, n_gold, task.distill_target),
                   "teacher_agrees_with_gold": agreement(base, cached, n_gold, task.distill_target)}
        cached = cached if cfg.cache_teacher else None
    stats = run_distillation(student, teacher, tokenizer, IndexedDataset(base), collate, cfg, work_dir, seed,
                             resume, max_len, cached, callbacks, task, trainer_cls, trainer_kwargs)
    stats["teacher_cache_s"] = cache_s
    if aug:
        stats["augment"] = aug
    if seq_kd:
        stats["sequence_level"] = seq_kd
    return student, stats


@implements(Distill)
def distill_step(model: nn.Module, cfg: Distill, ctx: Context) -> nn.Module:
    from ..models import load
    from ..prune.vocab import teacher_reads_student_ids

    task = ctx.require_task(cfg.step)
    teacher, teacher_tok = load(cfg.teacher) if cfg.teacher else (ctx.original(), ctx.original_tokenizer())
    callbacks = None
    if cfg.keep_zeros:
        from ..prune.unstructured import keep_zeros_callback

        callbacks = [keep_zeros_callback(model)]
    with teacher_reads_student_ids(teacher, ctx.tokenizer, teacher_tok):  # after prune_vocab they differ
        model, stats = distill(model, teacher, ctx.tokenizer, task, cfg, ctx.work_dir / "distill", ctx.seed,
                               ctx.max_len, ctx.resume, callbacks)
    ctx.note("distill", stats)
    return model
