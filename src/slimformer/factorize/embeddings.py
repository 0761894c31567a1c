"""ALBERT-style factorized token embeddings: the V x H table becomes V x E (Embedding) + E x H (projection).

Built from the trained table by truncated SVD (W = U S V^T: the Embedding holds U_E S_E, the projection
V_E^T), so at E = H the outputs are unchanged. Installed by the replayable op `factorize_embeddings`.

Limitations (the factorized module is not an nn.Embedding and has no `.weight`):
- models whose output layer is tied to the input embeddings (masked-LM heads) are refused;
- `resize_token_embeddings` does not work on it, `quantize_embeddings` skips it (its two inner layers are
  still found by Linear/Embedding-based steps), and QAT's embedding fake-quantization must be off
  (`embeddings: false`).
Unlike ALBERT, the position and token-type tables stay H wide and the LayerNorm stays after the sum.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import model_validator
from torch import nn

from ..errors import SlimformerError, check
from ..models import apply_op, get_adapter, num_params, register_op
from ..progress import console
from ..steps import Context, StepConfig, implements
from .lowrank import energy_rank


class FactorizedEmbedding(nn.Module):
    """Embedding(V, E) followed by Linear(E, H, bias=False); a drop-in for the word-embedding table."""

    def __init__(self, num_embeddings: int, embedding_dim: int, size: int, padding_idx: int | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.size = num_embeddings, embedding_dim, size
        self.padding_idx = padding_idx
        self.embed = nn.Embedding(num_embeddings, size, padding_idx=padding_idx)
        self.project = nn.Linear(size, embedding_dim, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.project(self.embed(input_ids))

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, size: int) -> "FactorizedEmbedding":
        v, h = emb.weight.shape
        check(1 <= size <= min(v, h), f"factorize_embeddings: size {size} is outside 1..{min(v, h)}")
        w = emb.weight.detach()
        u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
        mod = cls(v, h, size, emb.padding_idx).to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            mod.embed.weight.copy_((u[:, :size] * s[:size]).to(w.dtype))
            mod.project.weight.copy_(vh[:size].T.to(w.dtype))
        return mod

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.size} -> {self.embedding_dim}"


@register_op("factorize_embeddings")
def _factorize_embeddings(model: nn.Module, size: int) -> None:
    adapter = get_adapter(model)
    emb = adapter.word_embeddings(model)
    check(isinstance(emb, nn.Embedding),
          f"factorize_embeddings: the word embeddings are {type(emb).__name__}, not an nn.Embedding")
    new = FactorizedEmbedding.from_embedding(emb, size)
    parent = adapter.embeddings(model)
    name = next((n for n, m in parent.named_children() if m is emb), None)
    check(name is not None, "factorize_embeddings: cannot locate the word-embedding module")
    setattr(parent, name, new)  # type: ignore[arg-type]


def _tied_output(model: nn.Module) -> bool:
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return out is not None


def factorize_embeddings(model: nn.Module, size: int) -> nn.Module:
    """Replace the word embeddings by the rank-`size` SVD factorization (recorded so the model reloads)."""
    check(not _tied_output(model), "factorize_embeddings: models whose output layer is tied to the word "
          "embeddings (masked-LM heads) are not supported; use a task model")
    emb = get_adapter(model).word_embeddings(model)
    check(isinstance(emb, nn.Embedding),
          f"factorize_embeddings: the word embeddings are {type(emb).__name__}, not an nn.Embedding "
          "(already factorized or quantized?)")
    v, h = emb.weight.shape
    check(isinstance(size, int) and 1 <= size <= min(v, h),
          f"factorize_embeddings: size {size} is outside 1..{min(v, h)} (the table is {v} x {h})")
    apply_op(model, "factorize_embeddings", size=size)
    return model


class FactorizeEmbeddings(StepConfig):
    """ALBERT-style V x E + E x H word embeddings from the trained table; give `size` (E) or `energy`."""

    step: ClassVar[str] = "factorize_embeddings"
    size: int | None = None
    energy: float | None = None

    @model_validator(mode="after")
    def _one_rule(self) -> "FactorizeEmbeddings":
        check((self.size is None) != (self.energy is None), "factorize_embeddings: give exactly one of size, energy")
        check(self.size is None or self.size >= 1, f"factorize_embeddings: size must be >= 1, got {self.size}")
        check(self.energy is None or 0 < self.energy <= 1,
              f"factorize_embeddings: energy must be in (0, 1], got {self.energy}")
        return self


@implements(FactorizeEmbeddings)
def factorize_embeddings_step(model: nn.Module, cfg: FactorizeEmbeddings, ctx: Context) -> nn.Module:
    emb = get_adapter(model).word_embeddings(model)
    if not isinstance(emb, nn.Embedding):
        raise SlimformerError(f"factorize_embeddings: the word embeddings are {type(emb).__name__}, "
                              "not an nn.Embedding (already factorized or quantized?)")
    v, h = emb.weight.shape
    size = cfg.size if cfg.size is not None else energy_rank(torch.linalg.svdvals(emb.weight.detach().double()),
                                                            cfg.energy or 1.0)
    if size * (v + h) >= v * h:
        console.print(f"[yellow]factorize_embeddings: E={size} does not save parameters ({v}x{size} + "
                      f"{size}x{h} >= {v}x{h})")
    before = num_params(model)
    factorize_embeddings(model, size)
    ctx.note("embedding_size", size)
    ctx.note("params_before_after", [before, num_params(model)])
    return model
