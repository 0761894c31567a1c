"""PET's warm-up: before distillation, the student learns a simpler task derived from the teacher.

Every target token gets one of four labels from the teacher's teacher-forced prediction (p its softmax):

    0 confidently correct   argmax p == gold and max p >= correct_threshold (PET: 0.9)
    1 correct but unsure    argmax p == gold and max p <  correct_threshold
    2 confidently wrong     argmax p != gold and max p >= wrong_threshold   (PET: 0.7)
    3 wrong but unsure      argmax p != gold and max p <  wrong_threshold

Probability mapping (no new head): with m the student's top probability and g its probability of the gold
token, the four class probabilities are m*g, (1-m)*g, m*(1-g), (1-m)*(1-g) (they sum to 1); the loss is their
negative log-likelihood of the teacher's label. The ablation replaces the mapping with a separate 4-way
Linear head on the decoder's last hidden state (`head: linear`), trained with cross-entropy and discarded
after the warm-up. Padding positions (label -100) are ignored throughout.
"""
from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from transformers import Trainer

from ..checkpoints import AtomicCheckpoints
from ..steps import StepConfig

HEAD = "sf_warmup_head"
CLASSES = ("confidently correct", "correct but unsure", "confidently wrong", "wrong but unsure")


def warmup_labels(teacher_logits: torch.Tensor, labels: torch.Tensor, correct_threshold: float = 0.9,
                  wrong_threshold: float = 0.7) -> torch.Tensor:
    """The 4-class label [batch, seq] of every target token from the teacher's logits [batch, seq, vocab];
    -100 where labels is -100."""
    probs = teacher_logits.float().softmax(-1)
    top, pred = probs.max(-1)
    correct = pred.eq(labels)
    out = torch.where(correct, torch.where(top >= correct_threshold, 0, 1),
                      torch.where(top >= wrong_threshold, 2, 3))
    return out.masked_fill(labels.eq(-100), -100)


def mapped_log_probs(student_logits: torch.Tensor, labels: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """log of [m*g, (1-m)*g, m*(1-g), (1-m)*(1-g)] per token [batch, seq, 4] (m: top probability, g: the gold
    token's probability; padding positions get the gold index 0, masked out by the loss)."""
    logp = student_logits.float().log_softmax(-1)
    log_m = logp.max(-1).values
    log_g = logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)

    def log1m(x: torch.Tensor) -> torch.Tensor:  # log(1 - e^x), kept finite when e^x reaches 1
        return torch.log1p(-x.exp().clamp(max=1 - eps))

    return torch.stack([log_m + log_g, log1m(log_m) + log_g, log_m + log1m(log_g), log1m(log_m) + log1m(log_g)], -1)


def mapped_probs(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The four class probabilities of the mapping [batch, seq, 4]."""
    return mapped_log_probs(student_logits, labels).exp()


def mapping_loss(student_logits: torch.Tensor, classes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the teacher's classes under the probability mapping (-100 ignored)."""
    return F.nll_loss(mapped_log_probs(student_logits, labels).reshape(-1, 4), classes.reshape(-1), ignore_index=-100)


def head_loss(class_logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of a separate 4-way head's logits [batch, seq, 4] (-100 ignored)."""
    return F.cross_entropy(class_logits.float().reshape(-1, 4), classes.reshape(-1), ignore_index=-100)


class PetWarmup(StepConfig):
    """PET's warm-up settings (a part of the `pet` step)."""

    epochs: float = Field(3.0, gt=0, description="warm-up epochs on the 4-class task")
    head: Literal["mapping", "linear"] = Field("mapping", description="mapping: the vocabulary softmax predicts "
                                               "the classes (PET); linear: a separate 4-way head (ablation)")
    correct_threshold: float = Field(0.9, gt=0, le=1, description="teacher top probability of a confident correct")
    wrong_threshold: float = Field(0.7, gt=0, le=1, description="teacher top probability of a confident wrong")
    lr: float = Field(5e-4, gt=0)
    max_steps: int = -1


def attach_head(student: nn.Module, width: int, seed: int) -> None:
    """A 4-way Linear on the decoder's last hidden state, applied in the student's forward (a hook, so DDP and
    the optimizer see it); `detach_head` removes it."""
    rng = torch.random.get_rng_state()
    torch.manual_seed(seed)
    head = nn.Linear(width, 4)
    torch.random.set_rng_state(rng)
    student.add_module(HEAD, head)
    head.sf_hook = student.register_forward_hook(_head_hook)


def _head_hook(module: nn.Module, args: Any, output: Any) -> Any:
    hidden = getattr(output, "decoder_hidden_states", None)
    head = getattr(module, HEAD, None)
    if hidden is None or head is None:
        return output
    return {**dict(output), HEAD: head(hidden[-1])}


def detach_head(student: nn.Module) -> None:
    head = getattr(student, HEAD, None)
    if head is not None:
        head.sf_hook.remove()
        delattr(student, HEAD)


class WarmupTrainer(AtomicCheckpoints, Trainer):
    """Trains the student on the teacher's 4-class token labels (probability mapping or a separate head)."""

    def __init__(self, *args: Any, teacher: nn.Module, cfg: PetWarmup, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.eval()
        self.cfg = cfg
        self.model_accepts_loss_kwargs = False

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        inputs.pop("sf_index", None)
        self.teacher.to(labels.device)
        with torch.no_grad():
            t_logits = self.teacher(**inputs).logits
        classes = warmup_labels(t_logits, labels, self.cfg.correct_threshold, self.cfg.wrong_threshold)
        linear = self.cfg.head == "linear"
        out = model(**inputs, output_hidden_states=linear)
        loss = head_loss(out[HEAD], classes) if linear else mapping_loss(out["logits"], classes, labels)
        return (loss, out) if return_outputs else loss


def warm_up(student: nn.Module, teacher: nn.Module, train_ds: Any, collate: Any, cfg: PetWarmup, out_dir: Any,
            batch_size: int, max_len: int, seed: int = 42, resume: bool = False) -> dict[str, Any]:
    """Run the warm-up on train_ds (student trained in place); returns the training stats and label counts."""
    from pathlib import Path

    from ..train import TrainConfig, run_training, set_seed, training_args

    set_seed(seed)
    if cfg.head == "linear":
        attach_head(student, student.config.hidden_size, seed)
    tcfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=batch_size, max_len=max_len, seed=seed,
                       max_steps=cfg.max_steps)
    args = training_args(tcfg, Path(out_dir), len(train_ds))
    args.remove_unused_columns = False
    trainer = WarmupTrainer(model=student, args=args, train_dataset=train_ds, data_collator=collate,
                            teacher=teacher, cfg=cfg)
    try:
        stats = run_training(trainer, out_dir, resume)
    finally:
        detach_head(student)
    student.eval()
    stats["label_shares"] = label_shares(teacher, train_ds, collate, cfg)
    return stats


def label_shares(teacher: nn.Module, ds: Any, collate: Any, cfg: PetWarmup, n: int = 256) -> dict[str, float]:
    """How the teacher's labels split over the four classes on the first n examples (a sanity check: PET's
    released code produced class 0 only)."""
    counts = torch.zeros(4)
    teacher.eval()
    with torch.no_grad():
        for s in range(0, min(n, len(ds)), 32):
            batch = collate([{k: v for k, v in ds[i].items() if k != "sf_index"}
                             for i in range(s, min(s + 32, n, len(ds)))])
            labels = batch.pop("labels")
            classes = warmup_labels(teacher(**batch).logits, labels, cfg.correct_threshold, cfg.wrong_threshold)
            counts += torch.bincount(classes[classes.ge(0)], minlength=4)[:4].float()
    total = float(counts.sum()) or 1.0
    return {name: round(float(c) / total, 4) for name, c in zip(CLASSES, counts)}
