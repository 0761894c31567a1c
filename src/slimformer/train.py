"""Fine-tuning on the Hugging Face Trainer: checkpoints, resume, and multi-process via torchrun/accelerate.

Distillation and quantization-aware training reuse `make_trainer` with their own Trainer subclass
(overriding `compute_loss`), so every training run shares the same engine, progress bars and resume logic.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from .data import EncodedDataset, collator, encode
from .errors import check
from .tasks.base import TaskData
from .tasks.metrics import compute


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
    save_steps: int = Field(200, ge=1, description="checkpoint every N steps (for --resume)")
    eval_each_epoch: bool = False


def set_seed(seed: int) -> None:
    from transformers import set_seed as hf_set_seed

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    hf_set_seed(seed)


def train_dataset(tokenizer: Any, task: TaskData, cfg: TrainConfig) -> EncodedDataset:
    examples = list(task.split("train"))
    if cfg.max_train_examples and cfg.max_train_examples < len(examples):
        rng = random.Random(cfg.seed)
        examples = rng.sample(examples, cfg.max_train_examples)
    return encode(tokenizer, examples, cfg.max_len)


def training_args(cfg: TrainConfig, out_dir: str | Path, eval_enabled: bool = False, **overrides: Any) -> Any:
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
        save_steps=cfg.save_steps,
        save_total_limit=2,
        eval_strategy="epoch" if eval_enabled else "no",
        logging_strategy="steps",
        logging_steps=50,
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        ddp_backend="gloo" if _distributed() and not torch.cuda.is_available() else None,
        dataloader_num_workers=0,
        disable_tqdm=bool(os.environ.get("SLIMFORMER_QUIET")),
        save_only_model=False,
    )
    args.update(overrides)
    return TrainingArguments(**args)


def metrics_fn(task: TaskData) -> Any:
    def fn(eval_pred: Any) -> dict[str, float]:
        logits, labels = eval_pred
        logits = logits[0] if isinstance(logits, tuple) else logits
        return compute(task.metrics, labels.tolist(), np.asarray(logits).argmax(-1).tolist())

    return fn


def make_trainer(model: torch.nn.Module, tokenizer: Any, task: TaskData, cfg: TrainConfig, out_dir: str | Path,
                 trainer_cls: Any = None, train_ds: Any = None, **trainer_kwargs: Any) -> Any:
    """A Trainer on the task's train split (dev split evaluated each epoch when cfg.eval_each_epoch)."""
    from transformers import Trainer

    set_seed(cfg.seed)
    train_ds = train_ds if train_ds is not None else train_dataset(tokenizer, task, cfg)
    eval_ds = None
    if cfg.eval_each_epoch:
        eval_ds = encode(tokenizer, task.split(task.eval_split()), cfg.max_len)
    cls = trainer_cls or Trainer
    return cls(
        model=model,
        args=training_args(cfg, out_dir, eval_ds is not None),
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collator(tokenizer),
        compute_metrics=metrics_fn(task) if eval_ds is not None else None,
        **trainer_kwargs,
    )


def last_checkpoint(out_dir: str | Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    ck = Path(out_dir) / "checkpoints"
    return get_last_checkpoint(str(ck)) if ck.is_dir() else None


def run_training(trainer: Any, out_dir: str | Path, resume: bool) -> dict[str, Any]:
    """Train, resuming from the newest checkpoint under out_dir when asked and one exists."""
    ck = last_checkpoint(out_dir) if resume else None
    result = trainer.train(resume_from_checkpoint=ck)
    return {"train_runtime_s": result.metrics.get("train_runtime"),
            "train_samples_per_second": result.metrics.get("train_samples_per_second"),
            "train_loss": result.metrics.get("train_loss"), "resumed_from": ck}


def finetune(model: torch.nn.Module, tokenizer: Any, task: TaskData, cfg: TrainConfig, work_dir: str | Path,
             resume: bool = False, callbacks: list[Any] | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Fine-tune model in place on the task; returns (model, training stats)."""
    check(task.kind == "classification", f"finetune supports classification tasks, not {task.kind}")
    num_labels = getattr(model.config, "num_labels", None)
    check(num_labels == len(task.labels),
          f"the model has {num_labels} labels but task {task.name} has {len(task.labels)}")
    trainer = make_trainer(model, tokenizer, task, cfg, work_dir, callbacks=callbacks)
    stats = run_training(trainer, work_dir, resume)
    model.eval()
    return model, stats


def _distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
