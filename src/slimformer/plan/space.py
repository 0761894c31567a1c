"""The recipes `slimformer plan` tries: a grid over the levers, every candidate made of existing recipe steps.

Levers: depth (drop_layers, every other layer kept first: the DistilBERT choice), width (prune_heads,
prune_ffn with gradient or embedding importance), the vocabulary (prune_vocab to the training text),
INT8 (quantize_dynamic, the faster backend measured here), and the recovery budget (distill from the input
model, or distill_embeddings for a sentence encoder; the full recovery may add teacher-labelled augmented
copies of the training set, `augment`, and TinyBERT's hidden-state term, `hidden`, which the one-epoch proxy
never uses). The order inside a recipe is fixed: vocabulary, depth, width, recovery, INT8, so that recovery
trains the final architecture and INT8 quantizes trained weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import check


class SearchSpace(BaseModel):
    """The grid and the two budgets (proxy and full) of a plan."""

    model_config = ConfigDict(extra="forbid")
    layers: list[float] = Field([1.0, 2 / 3, 1 / 2], description="fractions of the layers to keep")
    heads: list[float] = Field([1.0, 0.5], description="fractions of the attention heads to keep")
    ffn: list[float] = Field([1.0, 0.5], description="fractions of the FFN neurons to keep")
    vocab: list[bool] = Field([True], description="prune the vocabulary to the training text (encoders)")
    int8: list[bool] = Field([True], description="dynamic INT8 last (dropped on a GPU: prefer fp16 there)")
    proxy_examples: int = Field(8000, ge=16, description="training examples of the proxy recovery (1 epoch)")
    epochs: float = Field(3.0, gt=0, description="epochs of the full recovery (all training examples)")
    lr: float = Field(1e-4, gt=0)
    augment: int = Field(0, ge=0, description="full recovery only: teacher-labelled altered copies of every "
                         "training example (distill augment); not for sentence embeddings")
    hidden: float = Field(1.0, ge=0, description="full recovery only: weight of TinyBERT's hidden-state MSE over "
                          "the uniform layer map (the teacher then runs live: about twice the training time; "
                          "+0.3 to +0.5 points on SST-2's 3-layer students, docs/BENCHMARKS.md section 12)")
    importance_examples: int = Field(256, ge=8)


@dataclass(frozen=True)
class Candidate:
    """One point of the grid: its levers and the recipe steps that realise them."""

    layers: int
    heads: float
    ffn: float
    vocab: bool
    int8: bool
    total_layers: int = field(compare=False)

    @property
    def name(self) -> str:
        parts = [f"L{self.layers}", f"h{self.heads:g}", f"f{self.ffn:g}"]
        parts += ["vocab"] if self.vocab else []
        parts += ["int8"] if self.int8 else ["fp32"]
        return "-".join(parts)

    @property
    def levers(self) -> dict[str, Any]:
        return {"layers": self.layers, "heads": self.heads, "ffn": self.ffn, "vocab": self.vocab, "int8": self.int8}

    def steps(self, space: SearchSpace, embedding: bool, proxy: bool) -> list[dict[str, Any]]:
        """The recipe steps; `proxy`: the short recovery of the first round."""
        out: list[dict[str, Any]] = []
        if self.vocab:
            out.append({"step": "prune_vocab"})
        if self.layers < self.total_layers:
            out.append({"step": "drop_layers", "keep": self.layers, "strategy": "alternate"})
        crit = {"criterion": "embedding"} if embedding else {}
        for name, keep in (("prune_heads", self.heads), ("prune_ffn", self.ffn)):
            if keep < 1:
                out.append({"step": name, "keep": keep, "rounds": 2, "importance_examples": space.importance_examples,
                            **crit})
        if self.layers < self.total_layers or self.heads < 1 or self.ffn < 1:  # nothing to recover otherwise
            out.append(_recovery(space, embedding, proxy))
        if self.int8:
            out.append({"step": "quantize_dynamic", "guard": False})
        return out


def _recovery(space: SearchSpace, embedding: bool, proxy: bool) -> dict[str, Any]:
    budget: dict[str, Any] = {"epochs": 1.0 if proxy else space.epochs, "lr": space.lr}
    if embedding:
        return {"step": "distill_embeddings", **budget, **({"max_sentences": space.proxy_examples} if proxy else {})}
    hidden = space.hidden if not proxy else 0.0
    return {"step": "distill", "kd": 1.0, "ce": 0.5, "cache_teacher": not hidden, **budget,
            **({"hidden": hidden} if hidden else {}),
            **({"max_train_examples": space.proxy_examples} if proxy else {}),
            **({"augment": space.augment} if space.augment and not proxy else {})}


def grid(space: SearchSpace, total_layers: int, vocab_ok: bool, int8_ok: bool) -> list[Candidate]:
    """Every distinct candidate of the space for a model of `total_layers` layers (the untouched model is not
    one: it is the reference every candidate is measured against)."""
    check(total_layers >= 1, "plan: the model has no layers")
    for name, values in (("layers", space.layers), ("heads", space.heads), ("ffn", space.ffn)):
        check(bool(values) and all(0 < v <= 1 for v in values), f"plan: {name} fractions must lie in (0, 1]")
    seen: dict[tuple, Candidate] = {}
    for lf in space.layers:
        layers = max(1, round(total_layers * lf))
        for h in space.heads:
            for f in space.ffn:
                for v in space.vocab:
                    for q in space.int8:
                        c = Candidate(layers, h, f, v and vocab_ok, q and int8_ok, total_layers)
                        if (c.layers, c.heads, c.ffn, c.vocab, c.int8) != (total_layers, 1.0, 1.0, False, False):
                            seen.setdefault((c.layers, c.heads, c.ffn, c.vocab, c.int8), c)
    return list(seen.values())
