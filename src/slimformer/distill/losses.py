"""Distillation loss terms, each a plain function of tensors (tested against direct computations).

- `kd_loss`: Hinton et al. soft targets, KL(teacher_T || student_T) * T^2 (gradient scale independent of T).
- `hard_ce`: cross-entropy on the gold labels (optionally label-smoothed, Szegedy et al.).
- `cosine_loss`: DistilBERT's 1 - cos(h_s, h_t), averaged over real (non-padding) tokens.
- `hidden_mse`: TinyBERT's MSE between hidden states (the student's projected to the teacher's width).
- `attention_loss`: KL between teacher and student attention distributions, over real query rows.
- `pkd_loss`: Patient KD: MSE between L2-normalised [CLS] states.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) * T^2, mean over rows (rows where mask is True if given)."""
    s = student_logits.reshape(-1, student_logits.shape[-1]).float()
    t = teacher_logits.reshape(-1, teacher_logits.shape[-1]).float()
    if mask is not None:
        keep = mask.reshape(-1).bool()
        s, t = s[keep], t[keep]
    if s.shape[0] == 0:
        return student_logits.sum() * 0.0
    log_ps = F.log_softmax(s / temperature, dim=-1)
    log_pt = F.log_softmax(t / temperature, dim=-1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean()
    return kl * temperature ** 2


def hard_ce(student_logits: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against gold labels (-100 ignored); `smoothing` eps puts eps / vocab on every class."""
    return F.cross_entropy(student_logits.reshape(-1, student_logits.shape[-1]).float(), labels.reshape(-1),
                           ignore_index=-100, label_smoothing=smoothing)


def _token_mean(per_token: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of a [batch, seq] tensor over positions where mask is 1."""
    if mask is None:
        return per_token.mean()
    m = mask.to(per_token.dtype)
    return (per_token * m).sum() / m.sum().clamp_min(1.0)


def cosine_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """1 - cosine similarity per token [batch, seq, dim], averaged over real tokens."""
    cos = F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)
    return _token_mean(1.0 - cos, mask)


def hidden_mse(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error per element over real tokens (hidden states of equal width)."""
    per_token = ((student_hidden.float() - teacher_hidden.float()) ** 2).mean(-1)
    return _token_mean(per_token, mask)


def attention_loss(student_attn: torch.Tensor, teacher_attn: torch.Tensor,
                   mask: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """KL(teacher || student) of attention rows [batch, heads, q, k], mean over heads and real query rows.

    When head counts differ, both sides are averaged over heads first.
    """
    s, t = student_attn.float(), teacher_attn.float()
    if s.shape[1] != t.shape[1]:
        s, t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
    kl = (t * (torch.log(t + eps) - torch.log(s + eps))).sum(-1).mean(1)  # [batch, q]
    return _token_mean(kl, mask)


def pkd_loss(student_cls: torch.Tensor, teacher_cls: torch.Tensor) -> torch.Tensor:
    """Patient KD: sum over features of the squared difference of L2-normalised [CLS] vectors, mean over batch."""
    s = F.normalize(student_cls.float(), dim=-1)
    t = F.normalize(teacher_cls.float(), dim=-1)
    return ((s - t) ** 2).sum(-1).mean()
