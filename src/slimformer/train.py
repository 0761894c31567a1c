"""Fine-tuning on the Hugging Face Trainer: checkpoints, resume, and multi-process via torchrun/accelerate.

Distillation and quantization-aware training reuse `make_trainer` with their own Trainer subclass
(overriding `compute_loss`), so every training run shares the same engine, progress bars and resume logic.
"""
from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from . import checkpoints
from .checkpoints import atomic_trainer
from .data import EncodedDataset
from .tasks.base import Task


class TrainConfig(BaseModel):
    """Hyper-parameters of one training run."""

    model_config = ConfigDict(extra="forbid")
    epochs: float = Field(3.0, gt=0)
    lr: float = Field(5e-5, gt=0)
    batch_size: int = Field(32, ge=1)
    max_len: int = Field(128, ge=8)
    seed: int = 42
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    max_steps: int = -1
    max_train_examples: int | None = Field(None, ge=1, description="train on the first N (shuffled) examples")
    save_steps: int | None = Field(None, ge=1, description="checkpoint every N optimizer steps (for resume); "
                                   "default: about every 10% of the run, at least 1 and at most 200 steps")
    eval_each_epoch: bool = False
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label-smoothed cross-entropy (translation: 0.1)")


def set_seed(seed: int) -> None:
    from transformers import set_seed as hf_set_seed

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    hf_set_seed(seed)


def train_examples(task: Task, cfg: TrainConfig) -> list[Any]:
    """The training split, or cfg.max_train_examples of it drawn with cfg.seed."""
    examples = list(task.split("train"))
    if cfg.max_train_examples and cfg.max_train_examples < len(examples):
        rng = random.Random(cfg.seed)
        examples = rng.sample(examples, cfg.max_train_examples)
    return examples


def train_dataset(tokenizer: Any, task: Task, cfg: TrainConfig, examples: list[Any] | None = None) -> EncodedDataset:
    """The encoded training set (examples: already chosen ones, e.g. with the teacher's targets)."""
    return task.encode(tokenizer, train_examples(task, cfg) if examples is None else examples, cfg.max_len)


MAX_SAVE_STEPS = 200


def total_steps(cfg: TrainConfig, n_examples: int) -> int:
    """Optimizer steps of the run, as the Trainer counts them (max_steps, else epochs x batches per epoch)."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_epoch = max(1, math.ceil(n_examples / (cfg.batch_size * int(os.environ.get("WORLD_SIZE", "1")))))
    return max(1, math.ceil(cfg.epochs * per_epoch))


def save_every(cfg: TrainConfig, n_examples: int | None) -> int:
    """Checkpoint interval: cfg.save_steps, else a tenth of the run rounded down (so every 5-10% of it for
    runs of 10 to 2000 steps), at least 1, at most 200: a short run killed half-way loses little."""
    if cfg.save_steps is not None:
        return cfg.save_steps
    if n_examples is None:
        return MAX_SAVE_STEPS
    return max(1, min(MAX_SAVE_STEPS, total_steps(cfg, n_examples) // 10))


def training_args(cfg: TrainConfig, out_dir: str | Path, n_examples: int | None = None, **overrides: Any) -> Any:
    """TrainingArguments for cfg; n_examples (the training set's size) sets the default checkpoint interval."""
    from transformers import TrainingArguments

    args = dict(
        output_dir=str(Path(out_dir) / "checkpoints"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=64,
        warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio of the total steps in transformers 5
        weight_decay=cfg.weight_decay,
        seed=cfg.seed,
        data_seed=cfg.seed,
        save_strategy="steps",
        save_steps=save_every(cfg, n_examples),
        save_total_limit=2,
        eval_strategy="no",
        logging_strategy="steps",
        logging_steps=50,
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        ddp_backend="gloo" if _distributed() and not torch.cuda.is_available() else None,
        dataloader_num_workers=0,
        disable_tqdm=bool(os.environ.get("SLIMFORMER_QUIET")),
        save_only_model=False,
        label_smoothing_factor=cfg.label_smoothing,
    )
    args.update(overrides)
    return TrainingArguments(**args)


class TaskTrainer:
    """Mixin for HF Trainers whose loss comes from the task (embedding similarity); see `trainer_class`."""

    task: Task

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        loss = self.task.loss(model, inputs)
        return (loss, {"loss": loss}) if return_outputs else loss


def trainer_class(task: Task, base: Any = None) -> Any:
    """The HF Trainer class for a task: the stock one, or one whose loss is the task's own."""
    from transformers import Trainer

    base = base or Trainer
    if not task.uses_custom_loss():
        return base
    return type(f"Task{base.__name__}", (TaskTrainer, base), {"task": task})


class EvalCallback:
    """Evaluates the task's metrics at the end of every epoch and logs them (any task kind)."""

    def __new__(cls, task: Task, tokenizer: Any, max_len: int) -> Any:
        from transformers import TrainerCallback

        class _Eval(TrainerCallback):
            def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
                if model is None or not is_main_process():
                    return
                was = model.training
                model.eval()
                metrics = task.evaluate(model, tokenizer, task.eval_split(task.default_split), max_len)
                model.train(was)
                state.log_history.append({"epoch": state.epoch, **{f"eval_{k}": v for k, v in metrics.items()}})
                from .progress import console

                console.print(f"epoch {state.epoch:.2f}: {metrics}")

        return _Eval()


def make_trainer(model: torch.nn.Module, tokenizer: Any, task: Task, cfg: TrainConfig, out_dir: str | Path,
                 trainer_cls: Any = None, train_ds: Any = None, callbacks: list[Any] | None = None,
                 **trainer_kwargs: Any) -> Any:
    """A Trainer on the task's train split (the task's metrics evaluated each epoch when cfg.eval_each_epoch)."""
    set_seed(cfg.seed)
    train_ds = train_ds if train_ds is not None else train_dataset(tokenizer, task, cfg)
    callbacks = list(callbacks or [])
    if cfg.eval_each_epoch:
        callbacks.append(EvalCallback(task, tokenizer, cfg.max_len))
    cls = atomic_trainer(trainer_class(task, trainer_cls))
    args = training_args(cfg, out_dir, len(train_ds))
    if task.uses_custom_loss():
        args.remove_unused_columns = False  # the task's loss reads columns the model's forward does not take
    return cls(model=model, args=args, train_dataset=train_ds, data_collator=task.collator(tokenizer, model),
               callbacks=callbacks, **trainer_kwargs)


def last_checkpoint(out_dir: str | Path, move_broken: bool = True) -> str | None:
    """The newest whole checkpoint of the run in out_dir (broken ones skipped with a warning, moved aside)."""
    return checkpoints.last_checkpoint(Path(out_dir) / "checkpoints", move_broken)


def resume_point(trainer: Any, out_dir: str | Path) -> str | None:
    """The checkpoint to resume from, the same on every rank (the main process checks and moves broken
    ones aside first); says so when there is none."""
    from .progress import console

    ck = last_checkpoint(out_dir) if is_main_process() else None
    trainer.accelerator.wait_for_everyone()
    if not is_main_process():
        return last_checkpoint(out_dir, move_broken=False)
    if ck is None:
        console.print(f"no checkpoint found in {Path(out_dir) / 'checkpoints'}, starting from scratch",
                      soft_wrap=True)
    else:
        console.print(f"[yellow]resuming from {ck}[/]", soft_wrap=True)
    return ck


def run_training(trainer: Any, out_dir: str | Path, resume: bool) -> dict[str, Any]:
    """Train, resuming from the newest whole checkpoint under out_dir when asked and one exists."""
    if not isinstance(trainer, checkpoints.AtomicCheckpoints):
        raise TypeError(f"{type(trainer).__name__} must mix in checkpoints.AtomicCheckpoints (atomic_trainer)")
    ck = resume_point(trainer, out_dir) if resume else None
    result = trainer.train(resume_from_checkpoint=ck)
    return {"train_runtime_s": result.metrics.get("train_runtime"),
            "train_samples_per_second": result.metrics.get("train_samples_per_second"),
            "train_loss": result.metrics.get("train_loss"), "resumed_from": ck}


def finetune(model: torch.nn.Module, tokenizer: Any, task: Task, cfg: TrainConfig, work_dir: str | Path,
             resume: bool = False, callbacks: list[Any] | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Fine-tune model in place on the task; returns (model, training stats)."""
    task.check_model(model)
    trainer = make_trainer(model, tokenizer, task, cfg, work_dir, callbacks=callbacks)
    stats = run_training(trainer, work_dir, resume)
    model.eval()
    return model, stats


def _distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
