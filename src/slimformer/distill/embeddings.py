"""The `distill_embeddings` step: a student learns to reproduce the teacher's sentence embeddings.

    - {step: make_student, every: 2}
    - {step: distill_embeddings, texts: [../shared/data/multi30k/train.en], epochs: 1, dim: 256}

Model distillation as sentence-transformers does it (Reimers & Gurevych 2020): no labels, any sentences;
the loss is the MSE between the student's and the teacher's mean-pooled embeddings and/or 1 - their cosine.
The teacher's embeddings are computed once (length-sorted batches) and cached in the work folder. With `dim`,
the student gets an output projection to `dim` dimensions initialised from the teacher embeddings' principal
directions (uncentred PCA), and the targets are the teacher's embeddings projected the same way (fixed); the
projection is trained with the student and saved in it (`distill/projection.py`). Training runs on the HF
Trainer (checkpoints, resume, torchrun), like `distill`.
"""
from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn
from transformers import Trainer

from ..checkpoints import AtomicCheckpoints
from ..errors import check
from ..models import get_adapter
from ..steps import Context, StepConfig, implements
from ..tasks.base import Task
from .projection import add_projection, pca_directions, projection

INDEX = "sf_index"


class DistillEmbeddings(StepConfig):
    """Train the current model (a sentence encoder) to reproduce the teacher's mean-pooled embeddings."""

    step: ClassVar[str] = "distill_embeddings"
    texts: list[str] | None = Field(None, description="sentence sources: text files (a line each), folders of "
                                    ".txt, CSV/TSV/JSONL tables; default: the task's train sentences")
    text_column: str | None = Field(None, description="the table column holding sentences (default: text, "
                                    "sentence, sentence1, sentence2, ...)")
    max_sentences: int | None = Field(None, ge=1, description="a seeded sample of at most N distinct sentences")
    teacher: str | None = Field(None, description="teacher model directory; default: the model before the recipe")
    mse: float = Field(1.0, ge=0, description="weight of the MSE between embeddings")
    cos: float = Field(1.0, ge=0, description="weight of 1 - cosine between embeddings")
    dim: int | None = Field(None, ge=1, description="add an output projection to dim dimensions (PCA-initialised)")
    epochs: float = Field(1.0, gt=0)
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(64, ge=1)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    max_steps: int = -1
    save_steps: int | None = Field(None, ge=1, description="checkpoint every N optimizer steps (for resume); "
                                   "default: about every 10% of the run, 1 to 200")

    @property
    def needs_data(self) -> bool:  # type: ignore[override]
        return not self.texts

    @model_validator(mode="after")
    def _some_term(self) -> "DistillEmbeddings":
        check(bool(self.mse or self.cos), "distill_embeddings: mse and cos are both 0; set at least one")
        return self

    def preflight(self, model: nn.Module, task: Any) -> None:
        check_sentence_encoder(model, task, self.step)
        if self.texts:  # a missing or empty source is refused before any work
            from ..tasks.sentences import read_sentences

            read_sentences(self.texts, self.text_column, 1)
        check(self.dim is None or projection(model) is None,
              "distill_embeddings: dim: the model already has an output projection")
        check(self.dim is None or self.dim <= model.config.hidden_size,
              f"distill_embeddings: dim {self.dim} is above the model's width {model.config.hidden_size}")


def check_sentence_encoder(model: nn.Module, task: Task | None, step: str) -> None:
    """One-line refusals: embedding steps need a bare encoder used as a sentence encoder."""
    ad = get_adapter(model)
    check(not ad.is_multi_stack(model) and ad.stacks(model)[0].name == "encoder",
          f"{step}: sentence embeddings are mean-pooled encoder states; {type(model).__name__} is not an encoder")
    check(getattr(model, "base_model", model) is model,
          f"{step}: needs a bare sentence encoder (a similarity task in embedding mode, e.g. --task stsb); "
          f"{type(model).__name__} has a task head")
    check(task is None or task.distill_target == "embedding",
          f"{step}: the task must be a similarity task in embedding mode, not {task.kind if task else ''}")


def sentences_for(texts: list[str] | None, column: str | None, limit: int | None, task: Task | None,
                  step: str, seed: int) -> list[str]:
    """Sentences from the `texts` sources, else the task's training sentences (a seeded sample of limit)."""
    import random

    from ..tasks.sentences import read_sentences

    if texts:
        return read_sentences(texts, column, limit, seed)
    check(task is not None, f"{step}: give texts (sentence files) or task data")
    assert task is not None
    out = list(dict.fromkeys(t for t in task.texts("train") if t.strip()))
    check(bool(out), f"{step}: the task's train split has no text")
    return random.Random(seed).sample(out, limit) if limit and limit < len(out) else out


def teacher_embeddings(teacher: nn.Module, tokenizer: Any, texts: list[str], max_len: int, path: Path
                       ) -> torch.Tensor:
    """The teacher's mean-pooled embeddings [n, d], computed once and cached in path (safetensors)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from ..tasks.similarity import embed
    from ..train import is_main_process

    h = hashlib.sha256(f"{max_len}\n".encode())
    for t in texts:
        h.update(t.encode() + b"\0")
    fp = h.hexdigest()[:16]
    if path.is_file():
        try:
            with safe_open(str(path), "pt") as f:
                if (f.metadata() or {}).get("fingerprint") == fp:
                    return f.get_tensor("embeddings")
        except Exception:  # a torn cache file is computed again
            pass
    emb = embed(teacher, tokenizer, texts, max_len, batch_size=64)
    if is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"embeddings": emb.contiguous()}, str(tmp), metadata={"fingerprint": fp})
        tmp.replace(path)
    return emb


class SentenceCollator:
    """Pads token ids per batch (dynamic padding) and keeps each sentence's index (its target row)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def __call__(self, feats: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer.pad([{"input_ids": f["input_ids"]} for f in feats], return_tensors="pt",
                                 pad_to_multiple_of=8)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                INDEX: torch.tensor([f[INDEX] for f in feats])}


class EmbeddingDistillTrainer(AtomicCheckpoints, Trainer):
    """Trainer whose loss is mse * MSE(student, target) + cos * (1 - cos(student, target)) per sentence."""

    def __init__(self, *args: Any, targets: torch.Tensor, mse: float, cos: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.targets, self.w_mse, self.w_cos = targets, mse, cos
        self.model_accepts_loss_kwargs = False
        self._terms: dict[str, float] = defaultdict(float)
        self._steps = 0

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        from ..tasks.similarity import mean_pool

        mask = inputs["attention_mask"]
        s = mean_pool(model(input_ids=inputs["input_ids"], attention_mask=mask), mask).float()
        t = self.targets[inputs[INDEX].cpu()].to(s.device)
        terms = {"mse": F.mse_loss(s, t), "cos": (1 - F.cosine_similarity(s, t)).mean()}
        loss = self.w_mse * terms["mse"] + self.w_cos * terms["cos"]
        for k, v in terms.items():
            self._terms[k] += float(v.detach())
        self._steps += 1
        return (loss, {"embedding": s}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._steps and "loss" in logs:
            for k, v in self._terms.items():
                logs[f"loss_{k}"] = round(v / self._steps, 6)
            self._terms.clear()
            self._steps = 0
        super().log(logs, start_time)


def distill_embeddings(student: nn.Module, teacher: nn.Module, tokenizer: Any, texts: list[str],
                       cfg: DistillEmbeddings, work_dir: str | Path, seed: int = 42, max_len: int = 128,
                       resume: bool = False, teacher_tokenizer: Any = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train student (in place) on the teacher's embeddings of texts; returns (student, stats).
    `teacher_tokenizer`: the teacher's, when it differs from the student's (after prune_vocab)."""
    from ..data import EncodedDataset
    from ..train import TrainConfig, run_training, set_seed, training_args

    work_dir = Path(work_dir)
    check_sentence_encoder(student, None, cfg.step)
    check_sentence_encoder(teacher, None, cfg.step)
    t0 = time.perf_counter()
    targets = teacher_embeddings(teacher, teacher_tokenizer or tokenizer, texts, max_len,
                                 work_dir / "teacher_embeddings.safetensors")
    cache_s = time.perf_counter() - t0
    if cfg.dim is not None:
        check(projection(student) is None, "distill_embeddings: dim: the model already has an output projection")
        pca = pca_directions(targets, cfg.dim)  # [dim, teacher width]; the targets are projected with it
        if student.config.hidden_size == targets.shape[1]:
            directions = pca
        else:  # a student of another width: a learned projection from random orthogonal directions
            directions = torch.nn.init.orthogonal_(torch.empty(cfg.dim, student.config.hidden_size),
                                                   generator=torch.Generator().manual_seed(seed))
        targets = targets @ pca.T
        add_projection(student, directions)
    width = student.config.hidden_size if projection(student) is None else projection(student).out_features
    check(width == targets.shape[1], f"distill_embeddings: the student's embeddings have {width} dimensions and "
          f"the teacher's {targets.shape[1]}; set dim: {targets.shape[1]} (a projection) or use a student of "
          f"the teacher's width")
    enc = tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]
    ds = EncodedDataset([{"input_ids": ids, INDEX: i} for i, ids in enumerate(enc)])
    set_seed(seed)
    tcfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, max_len=max_len, seed=seed,
                       warmup_ratio=cfg.warmup_ratio, max_steps=cfg.max_steps, save_steps=cfg.save_steps)
    args = training_args(tcfg, work_dir, len(ds))
    args.remove_unused_columns = False
    trainer = EmbeddingDistillTrainer(model=student, args=args, train_dataset=ds,
                                      data_collator=SentenceCollator(tokenizer), targets=targets,
                                      mse=cfg.mse, cos=cfg.cos)
    student.train()
    stats = run_training(trainer, work_dir, resume)
    student.eval()
    stats.update({"sentences": len(texts), "dim": int(targets.shape[1]), "teacher_embed_s": round(cache_s, 2),
                  "wall_s": round(time.perf_counter() - t0, 2), "weights": {"mse": cfg.mse, "cos": cfg.cos}})
    return student, stats


@implements(DistillEmbeddings)
def distill_embeddings_step(model: nn.Module, cfg: DistillEmbeddings, ctx: Context) -> nn.Module:
    from ..models import load

    texts = sentences_for(cfg.texts, cfg.text_column, cfg.max_sentences, ctx.task, cfg.step, ctx.seed)
    teacher, teacher_tok = load(cfg.teacher) if cfg.teacher else (ctx.original(), ctx.original_tokenizer())
    model, stats = distill_embeddings(model, teacher, ctx.tokenizer, texts, cfg, ctx.work_dir / "distill_embeddings",
                                      ctx.seed, ctx.max_len, ctx.resume, teacher_tok)
    ctx.note("distill_embeddings", stats)
    return model
