"""The `finetune` recipe step: recovery fine-tuning on the task's train split."""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from torch import nn

from .steps import Context, StepConfig, implements
from .train import TrainConfig, finetune


class Finetune(StepConfig):
    """Fine-tune the current model on the task (e.g. to recover accuracy after pruning)."""

    step: ClassVar[str] = "finetune"
    needs_data: ClassVar[bool] = True
    epochs: float = Field(1.0, gt=0)
    lr: float = Field(5e-5, gt=0)
    batch_size: int = Field(32, ge=1)
    max_train_examples: int | None = Field(None, ge=1)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    save_steps: int | None = Field(None, ge=1, description="checkpoint every N optimizer steps (for resume); "
                                   "default: about every 10% of the run, 1 to 200")
    keep_zeros: bool = Field(False, description="weights that are zero when the step starts stay zero (recovery "
                             "after prune_oneshot / prune_unstructured)")


@implements(Finetune)
def finetune_step(model: nn.Module, cfg: Finetune, ctx: Context) -> nn.Module:
    task = ctx.require_task(cfg.step)
    tcfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, max_len=ctx.max_len, seed=ctx.seed,
                       max_train_examples=cfg.max_train_examples, warmup_ratio=cfg.warmup_ratio,
                       save_steps=cfg.save_steps)
    callbacks = None
    if cfg.keep_zeros:
        from .prune.unstructured import keep_zeros_callback

        callbacks = [keep_zeros_callback(model)]
    model, stats = finetune(model, ctx.tokenizer, task, tcfg, ctx.work_dir / "train", resume=ctx.resume,
                            callbacks=callbacks)
    ctx.note("train", stats)
    return model
