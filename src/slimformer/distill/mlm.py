"""Task-agnostic distillation on raw text (e.g. WikiText-2): a general student for any later task.

Blocks of text are corrupted as for masked-LM (15% of tokens: 80% [MASK], 10% random, 10% kept) and fed to
teacher and student alike. Block i is masked from its own generator seeded by (seed, i): the corruption does
not depend on the global RNG or on batch order, so runs are reproducible and a resumed run ends identically. The packaged MiniLM is a sentence encoder with no MLM head, so by default the
student learns the teacher's hidden states and attention distributions (TinyBERT general distillation)
rather than its token predictions. When both models carry an MLM head (AutoModelForMaskedLM), `kd`
(soft targets on the masked tokens) and `ce` (the MLM loss itself, DistilBERT's L_mlm) can be switched on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field, model_validator
from torch import nn

from ..errors import check
from ..models import get_adapter
from ..steps import Context, implements
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

    def preflight(self, model: nn.Module, task: Any) -> None:
        ad = get_adapter(model)
        check(not ad.is_multi_stack(model) and ad.stacks(model)[0].name == "encoder",
              "masked-LM text distillation serves encoders; distil a generative model with `distill` on its "
              "translation or language-modelling task (token-level KL)")

    @model_validator(mode="after")
    def _masked(self) -> "DistillGeneral":
        check(self.mask_prob > 0 or not (self.kd or self.ce), "distill_general: kd and ce need mask_prob > 0")
        return self


class MaskedBlocks(torch.utils.data.Dataset):
    """Token blocks with masked-LM corruption; block i always gets the same mask (a generator seeded by seed, i)."""

    def __init__(self, blocks: Any, tokenizer: Any, mask_prob: float, seed: int):
        self.blocks, self.tok, self.p, self.seed = blocks, tokenizer, mask_prob, seed

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, Any]:
        feat = self.blocks[i]
        ids = torch.tensor(feat["input_ids"])
        labels = torch.full_like(ids, -100)
        if self.p > 0:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
            special = torch.tensor(self.tok.get_special_tokens_mask(feat["input_ids"],
                                                                    already_has_special_tokens=True), dtype=torch.bool)
            picked = (torch.rand(ids.shape, generator=g) < self.p) & ~special
            labels[picked] = ids[picked]
            roll = torch.rand(ids.shape, generator=g)
            rand_ids = torch.randint(len(self.tok), ids.shape, generator=g)
            ids = torch.where(picked & (roll < 0.8), torch.tensor(self.tok.mask_token_id), ids)
            ids = torch.where(picked & (roll >= 0.8) & (roll < 0.9), rand_ids, ids)
        return {"input_ids": ids, "attention_mask": torch.tensor(feat["attention_mask"]),
                "token_type_ids": torch.tensor(feat["token_type_ids"]), "labels": labels}


def distill_general(student: nn.Module, teacher: nn.Module, tokenizer: Any, cfg: DistillGeneral,
                    work_dir: str | Path, seed: int = 42, resume: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Task-agnostic distillation of student (in place) on cfg.text; returns (student, stats)."""
    from transformers import default_data_collator

    blocks = mlm_blocks(tokenizer, read_text(cfg.text), cfg.block_size, cfg.max_blocks)
    data = MaskedBlocks(blocks, tokenizer, cfg.mask_prob, seed)
    stats = run_distillation(student, teacher, tokenizer, data, default_data_collator, cfg, work_dir, seed, resume,
                             cfg.block_size)
    stats["blocks"] = len(blocks)
    return student, stats


@implements(DistillGeneral)
def distill_general_step(model: nn.Module, cfg: DistillGeneral, ctx: Context) -> nn.Module:
    from ..models import load

    from ..prune.vocab import teacher_reads_student_ids

    teacher, teacher_tok = load(cfg.teacher, head=None) if cfg.teacher else (ctx.original(), ctx.original_tokenizer())
    with teacher_reads_student_ids(teacher, ctx.tokenizer, teacher_tok):  # after prune_vocab they differ
        model, stats = distill_general(model, teacher, ctx.tokenizer, cfg, ctx.work_dir / "distill_general",
                                       ctx.seed, ctx.resume)
    ctx.note("distill_general", stats)
    return model
