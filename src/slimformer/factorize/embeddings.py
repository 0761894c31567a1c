"""ALBERT-style factorized token embeddings: the V x H table becomes V x E (Embedding) + E x H (projection).

Built from the trained table by truncated SVD (W = U S V^T: the Embedding holds U_E S_E = W V_E, the
projection V_E^T), so at E = H the outputs are unchanged. Installed by the replayable op `factorize_embeddings`.

Token-weighted SVD (`weighting: frequency`): the plain SVD spends the rank equally on all V rows, most of
which a task never uses. Weighting row i by w_i = (count_i + 1) ** power (counts from the task's train split)
and taking V_E from the SVD of diag(sqrt(w)) W minimises sum_i w_i ||W_i - W_i V_E V_E^T||^2: the subspace
is chosen for the tokens the task uses, and every row (seen or not) is still projected onto it (W_i V_E).
power 1 is the expected error per token occurrence. Measured on MiniLM SST-2 at E = 128 (BENCHMARKS.md 5):
it matters before recovery (85.3 vs 78.8 plain); after 3 epochs of distillation both are at the teacher.

Limitations (the factorized module is not an nn.Embedding and has no `.weight`):
- models whose output layer is tied to the input embeddings (masked-LM heads) are refused;
- `resize_token_embeddings` does not work on it, `quantize_embeddings` skips it (its two inner layers are
  still found by Linear/Embedding-based steps), and QAT's embedding fake-quantization must be off
  (`embeddings: false`).
Unlike ALBERT, the position and token-type tables stay H wide and the LayerNorm stays after the sum.
"""
from __future__ import annotations

from typing import Any, ClassVar, Iterable, Literal

import torch
from pydantic import Field, model_validator
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
    def from_embedding(cls, emb: nn.Embedding, size: int,
                       row_weights: torch.Tensor | None = None) -> "FactorizedEmbedding":
        v, h = emb.weight.shape
        check(1 <= size <= min(v, h), f"factorize_embeddings: size {size} is outside 1..{min(v, h)}")
        w = emb.weight.detach()
        basis = subspace(w, size, row_weights)
        mod = cls(v, h, size, emb.padding_idx).to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            mod.embed.weight.copy_((w.double() @ basis).to(w.dtype))
            mod.project.weight.copy_(basis.to(w.dtype))
        return mod

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.size} -> {self.embedding_dim}"


def subspace(w: torch.Tensor, size: int, row_weights: torch.Tensor | None = None) -> torch.Tensor:
    """H x size orthonormal basis of the best rank-`size` row space of w (rows weighted by row_weights)."""
    x = w.detach().double()
    if row_weights is not None:
        check(row_weights.shape == (w.shape[0],) and bool((row_weights >= 0).all()),
              f"factorize_embeddings: need {w.shape[0]} non-negative row weights")
        x = x * row_weights.double().sqrt()[:, None]
    return torch.linalg.svd(x, full_matrices=False)[2][:size].T


def token_weights(tokenizer: Any, texts: Iterable[str], vocab_size: int, power: float = 1.0) -> torch.Tensor:
    """(count + 1) ** power for every token id, counting the tokenizer's ids over texts (special tokens too)."""
    counts = torch.zeros(vocab_size, dtype=torch.float64)
    ids = [i for enc in tokenizer(list(texts), add_special_tokens=True)["input_ids"] for i in enc]
    check(len(ids) > 0, "factorize_embeddings: no text to count tokens on")
    t = torch.tensor(ids, dtype=torch.long)
    check(int(t.max()) < vocab_size, "factorize_embeddings: the tokenizer's ids exceed the embedding table")
    counts.index_add_(0, t, torch.ones_like(t, dtype=torch.float64))
    return (counts + 1.0) ** power


def task_token_weights(tokenizer: Any, task: Any, vocab_size: int, power: float = 1.0,
                       examples: int = 20000) -> torch.Tensor:
    """token_weights over the texts (and text pairs) of the first `examples` examples of the train split."""
    rows = task.split("train")[:examples]
    return token_weights(tokenizer, [t for ex in rows for t in (ex.text, ex.text_pair) if t], vocab_size, power)


@register_op("factorize_embeddings")
def _factorize_embeddings(model: nn.Module, size: int) -> None:
    adapter = get_adapter(model)
    emb = adapter.word_embeddings(model)
    check(isinstance(emb, nn.Embedding),
          f"factorize_embeddings: the word embeddings are {type(emb).__name__}, not an nn.Embedding")
    v, h = emb.weight.shape
    new = FactorizedEmbedding(v, h, size, emb.padding_idx).to(device=emb.weight.device, dtype=emb.weight.dtype)
    adapter.set_word_embeddings(model, new)


def _tied_output(model: nn.Module) -> bool:
    """The word-embedding table is also used elsewhere: an output layer, or a second stack's embeddings."""
    emb = get_adapter(model).word_embeddings(model)
    users = [n for n, m in model.named_modules(remove_duplicate=False) if m is emb]
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = out is not None and getattr(out, "weight", None) is getattr(emb, "weight", None)
    return tied or len(users) > 1


def factorize_embeddings(model: nn.Module, size: int, row_weights: torch.Tensor | None = None) -> nn.Module:
    """Replace the word embeddings by the rank-`size` SVD factorization (recorded so the model reloads).

    row_weights (one per token, e.g. from `token_weights`) make it a token-weighted SVD."""
    check(not _tied_output(model), "factorize_embeddings: the word-embedding table is tied to an output layer "
          "or shared by another stack; only a model that uses it once (an encoder with a task head) is supported")
    emb = get_adapter(model).word_embeddings(model)
    check(isinstance(emb, nn.Embedding),
          f"factorize_embeddings: the word embeddings are {type(emb).__name__}, not an nn.Embedding "
          "(already factorized or quantized?)")
    v, h = emb.weight.shape
    check(isinstance(size, int) and 1 <= size <= min(v, h),
          f"factorize_embeddings: size {size} is outside 1..{min(v, h)} (the table is {v} x {h})")
    factors = FactorizedEmbedding.from_embedding(emb, size, row_weights)
    apply_op(model, "factorize_embeddings", size=size)  # the op installs the shapes (it replays on reload)
    get_adapter(model).word_embeddings(model).load_state_dict(factors.state_dict())
    return model


class FactorizeEmbeddings(StepConfig):
    """ALBERT-style V x E + E x H word embeddings from the trained table; give `size` (E) or `energy`.

    weighting 'frequency' weights the SVD by how often the task's train split uses each token
    ((count + 1) ** power); 'none' is the plain SVD. `energy` is measured on the (weighted) spectrum."""

    step: ClassVar[str] = "factorize_embeddings"
    size: int | None = None
    energy: float | None = None
    weighting: Literal["none", "frequency"] = Field("none", description="frequency: token-weighted SVD "
                                                    "(needs task data); none: plain SVD")
    power: float = Field(1.0, description="frequency weighting: w = (count + 1) ** power, in (0, 2]")
    count_examples: int = Field(20000, description="frequency weighting: train examples to count tokens on")

    @model_validator(mode="after")
    def _one_rule(self) -> "FactorizeEmbeddings":
        check((self.size is None) != (self.energy is None), "factorize_embeddings: give exactly one of size, energy")
        check(self.size is None or self.size >= 1, f"factorize_embeddings: size must be >= 1, got {self.size}")
        check(self.energy is None or 0 < self.energy <= 1,
              f"factorize_embeddings: energy must be in (0, 1], got {self.energy}")
        check(0 < self.power <= 2, f"factorize_embeddings: power must be in (0, 2], got {self.power}")
        check(self.count_examples >= 1, "factorize_embeddings: count_examples must be >= 1")
        return self

    def preflight(self, model: nn.Module, task: Any) -> None:
        check(not _tied_output(model), "the word-embedding table is tied to an output layer or shared by another "
              "stack; only a model that uses it once (an encoder with a task head) is supported")


@implements(FactorizeEmbeddings)
def factorize_embeddings_step(model: nn.Module, cfg: FactorizeEmbeddings, ctx: Context) -> nn.Module:
    emb = get_adapter(model).word_embeddings(model)
    if not isinstance(emb, nn.Embedding):
        raise SlimformerError(f"factorize_embeddings: the word embeddings are {type(emb).__name__}, "
                              "not an nn.Embedding (already factorized or quantized?)")
    v, h = emb.weight.shape
    weights = None
    if cfg.weighting == "frequency":
        weights = task_token_weights(ctx.tokenizer, ctx.require_task(cfg.step), v, cfg.power, cfg.count_examples)
        ctx.note("counted_tokens_seen", int((weights > 1.0).sum()))
    table = emb.weight.detach().double()
    if weights is not None:
        table = table * weights.sqrt()[:, None]
    size = cfg.size if cfg.size is not None else energy_rank(torch.linalg.svdvals(table), cfg.energy or 1.0)
    if size * (v + h) >= v * h:
        console.print(f"[yellow]factorize_embeddings: E={size} does not save parameters ({v}x{size} + "
                      f"{size}x{h} >= {v}x{h})")
    before = num_params(model)
    factorize_embeddings(model, size, weights)
    ctx.note("embedding_size", size)
    ctx.note("weighting", cfg.weighting)
    ctx.note("params_before_after", [before, num_params(model)])
    return model
