"""Task-agnostic distillation on raw text (e.g. WikiText-2): a general student for any later task.

Blocks of text are corrupted as for masked-LM (15% of tokens: 80% [MASK], 10% random, 10% kept) and fed to
teacher and student alike. The packaged MiniLM is a sentence encoder with no MLM head, so by default the
student learns the teacher's hidden states and attention distributions (TinyBERT general distillation)
rather than its token predictions. When both models carry an MLM head (AutoModelForMaskedLM), `kd`
(soft targets on the masked tokens) and `ce` (the MLM loss itself, DistilBERT's L_mlm) can be switched on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field
from torch import nn

from ..steps import Context, StepConfig, implements
from ..tasks.text import mlm_blocks, read_text
from .step import LossTerms, run_distillation


class DistillGeneral(LossTerms):
    """Distil the current model from a teacher on raw text with masked-LM corruption (no labels needed)."""

    step: ClassVar[str] = "distill_general"
    text: str = Field(..., description="a .txt file or a directory of .txt files (WikiText-2: ../shared/data/wikitext2)")
    teacher: str | None = None
    kd: float = Field(0.0, ge=0)
    ce: float = Field(0.0, ge=0)
    hidden: float = Field(1.0, ge=0)
    attention: float = Field(1.0, ge=0)
    block_size: int = Field(128, ge=8)
    max_blocks: int | None = Field(None, ge=1)
    mask_prob: float = Field(0.15, ge=0, lt=1)
    epochs: float = Field(1.0, gt=0)
    lr: float = Field(1e-4, gt=0)


def distill_general(student: nn.Module, teacher: nn.Module, tokenizer: Any, cfg: DistillGeneral,
                    work_dir: str | Path, seed: int = 42, resume: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Task-agnostic distillation of student (in place) on cfg.text; returns (student, stats)."""
    from transformers import DataCollatorForLanguageModeling

    blocks = mlm_blocks(tokenizer, read_text(cfg.text), cfg.block_size, cfg.max_blocks)
    # masking draws from the global torch RNG, which the Trainer seeds and restores on resume
    collate = DataCollatorForLanguageModeling(tokenizer, mlm=cfg.mask_prob > 0,
                                              mlm_probability=cfg.mask_prob or 0.15)
    stats = run_distillation(student, teacher, tokenizer, blocks, collate, cfg, work_dir, seed, resume,
                             cfg.block_size)
    stats["blocks"] = len(blocks)
    return student, stats


@implements(DistillGeneral)
def distill_general_step(model: nn.Module, cfg: DistillGeneral, ctx: Context) -> nn.Module:
    from ..models import load

    teacher = load(cfg.teacher, head=None)[0] if cfg.teacher else ctx.original()
    model, stats = distill_general(model, teacher, ctx.tokenizer, cfg, ctx.work_dir / "distill_general", ctx.seed,
                                   ctx.resume)
    ctx.note("distill_general", stats)
    return model
