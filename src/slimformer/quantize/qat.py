"""Quantization-aware training (Q8BERT-style): fine-tune with fake-quantized weights (int8 per channel) and
activations (uint8 per tensor, dynamic range, as the INT8 kernel does), straight-through gradients; then
convert to the real INT8 model of `quantize_dynamic`. Optionally distil from the FP32 model (ctx.teacher)."""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from transformers import Trainer

from ..models import get_adapter
from ..steps import Context, implements
from ..train import TrainConfig, make_trainer, run_training
from .common import QuantStep, run_guard, summary
from .ops import _parent, embedding_shared, quantize_embeddings, quantize_linears


def _ste(x: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
    return x + (xq - x).detach()


def fake_weight(w: torch.Tensor) -> torch.Tensor:
    """Symmetric per-row int8 fake quantization (the grid of QLinear act='dynamic')."""
    scale = (w.detach().abs().amax(dim=1, keepdim=True) / 127).clamp(min=1e-12)
    return _ste(w, torch.clamp(torch.round(w / scale), -127, 127) * scale)


def fake_act(x: torch.Tensor) -> torch.Tensor:
    """Asymmetric per-tensor uint8 fake quantization from the tensor's own range (as fbgemm's dynamic GEMM)."""
    lo, hi = x.detach().min().clamp(max=0), x.detach().max().clamp(min=0)
    scale = ((hi - lo) / 255).clamp(min=1e-8)
    zero = torch.clamp(torch.round(-lo / scale), 0, 255)
    return _ste(x, (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale)


def fake_rows(w: torch.Tensor) -> torch.Tensor:
    """Asymmetric per-row 8-bit fake quantization (the grid of QEmbedding)."""
    lo, hi = w.detach().amin(1, keepdim=True).clamp(max=0), w.detach().amax(1, keepdim=True).clamp(min=0)
    scale = ((hi - lo) / 255 * (1 + 2 ** -10)).clamp(min=1e-6).half().float()
    zero = torch.clamp(torch.round(-lo / scale), 0, 255)
    return _ste(w, (torch.clamp(torch.round(w / scale) + zero, 0, 255) - zero) * scale)


class FakeQuantLinear(nn.Linear):
    """nn.Linear whose forward sees fake-quantized weights and inputs (same parameters, same state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(fake_act(x), fake_weight(self.weight), self.bias)


class FakeQuantEmbedding(nn.Embedding):
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, fake_rows(self.weight), self.padding_idx)


def prepare_qat(model: nn.Module, names: list[str], embeddings: bool = True) -> nn.Module:
    """Switch the named Linears (and the word embeddings) to fake quantization, in place."""
    for n in names:
        parent, child = _parent(model, n)
        getattr(parent, child).__class__ = FakeQuantLinear
    if embeddings and not embedding_shared(model):
        get_adapter(model).word_embeddings(model).__class__ = FakeQuantEmbedding
    return model


def convert_qat(model: nn.Module) -> nn.Module:
    """Back to plain modules, then the real INT8 swap of quantize_dynamic (recorded for reload)."""
    names, emb = [], False
    for n, m in model.named_modules():
        if isinstance(m, FakeQuantLinear):
            m.__class__ = nn.Linear
            names.append(n)
        elif isinstance(m, FakeQuantEmbedding):
            m.__class__ = nn.Embedding
            emb = True
    quantize_linears(model, names, bits=8, act="dynamic")
    if emb:
        quantize_embeddings(model, bits=8)
    return model


class QATTrainer(Trainer):
    """Cross-entropy, optionally mixed with KL distillation from a frozen FP32 teacher."""

    def __init__(self, *args: Any, teacher: nn.Module | None = None, alpha: float = 0.5, temperature: float = 2.0,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.teacher, self.alpha, self.temperature = teacher, alpha, temperature

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        out = model(**inputs)
        loss = out.loss
        if self.teacher is not None:
            with torch.no_grad():
                t_logits = self.teacher(**{k: v for k, v in inputs.items() if k != "labels"}).logits
            t = self.temperature
            kd = F.kl_div(F.log_softmax(out.logits / t, -1), F.softmax(t_logits / t, -1), reduction="batchmean") * t * t
            loss = self.alpha * kd + (1 - self.alpha) * loss
        return (loss, out) if return_outputs else loss


class QuantizeQAT(QuantStep):
    """Fine-tune with fake quantization, then convert to real INT8 (the model of quantize_dynamic)."""

    step: ClassVar[str] = "quantize_qat"
    needs_data: ClassVar[bool] = True
    epochs: float = Field(1.0, gt=0)
    lr: float = Field(2e-5, gt=0)
    batch_size: int = Field(32, ge=1)
    max_len: int | None = Field(None, ge=8, description="training sequence length (default: the recipe's)")
    max_train_examples: int | None = Field(None, ge=1)
    max_steps: int = -1
    save_steps: int | None = Field(None, ge=1, description="checkpoint every N optimizer steps (for resume); "
                                   "default: about every 10% of the run, 1 to 200")
    distill: bool = Field(False, description="distil from the FP32 model that entered the recipe")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the distillation loss")
    temperature: float = Field(2.0, gt=0)
    embeddings: bool = Field(True, description="fake-quantize and store the word embeddings as int8")


@implements(QuantizeQAT)
def quantize_qat_step(model: nn.Module, cfg: QuantizeQAT, ctx: Context) -> nn.Module:
    import copy

    task = ctx.require_task(cfg.step)
    before = copy.deepcopy(model) if cfg.guard else None
    prepare_qat(model, cfg.targets(model), cfg.embeddings)
    tcfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, max_len=cfg.max_len or ctx.max_len,
                       seed=ctx.seed, max_train_examples=cfg.max_train_examples, max_steps=cfg.max_steps,
                       save_steps=cfg.save_steps)
    teacher = ctx.original().eval() if cfg.distill else None
    trainer = make_trainer(model, ctx.tokenizer, task, tcfg, ctx.work_dir / "qat", trainer_cls=QATTrainer,
                           teacher=teacher, alpha=cfg.alpha, temperature=cfg.temperature)
    ctx.note("train", run_training(trainer, ctx.work_dir / "qat", ctx.resume))
    model.eval()
    convert_qat(model)
    ctx.note("quantized", summary(model))
    if before is not None:
        run_guard(before, model, cfg, ctx)
    return model
