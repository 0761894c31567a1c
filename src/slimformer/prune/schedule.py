"""Shared machinery of head and FFN pruning: the step config fields, target arithmetic and the round loop.

A target is a keep ratio in (0, 1] or an absolute count, over the whole model (`scope: global`, units
compete across layers on the chosen importance) or within each layer (`scope: per_layer`). With `rounds: N`
the kept count shrinks geometrically (ratio r reached as r^(k/N) after round k), the model is re-scored every
round, and an optional short recovery fine-tune runs between rounds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from ..errors import check
from ..fsutil import work_or_temp
from ..models import iter_units
from ..steps import StepConfig
from ..tasks.base import Task
from .importance import importance, importance_batches


class StructuredPrune(StepConfig):
    """Fields shared by prune_heads and prune_ffn (give exactly one of keep and keep_count)."""

    unit: ClassVar[str] = ""  # "heads" or "ffn"
    keep: float | None = Field(None, description="fraction of units to keep, in (0, 1]")
    keep_count: int | None = Field(None, description="units to keep: in the whole model (global) or per layer")
    scope: Literal["global", "per_layer"] = "global"
    criterion: Literal["gradient", "activation", "magnitude", "embedding"] = Field(
        "gradient", description="gradient (of the task loss) | activation (forward only: each unit's mean "
        "contribution to its block's output, Minitron) | magnitude (no data) | embedding (a sentence encoder: "
        "how far removing a unit moves its embeddings, no labels)")
    texts: list[str] | None = Field(None, description="criterion embedding: sentence sources (text files, "
                                    "tables); default: the task's train sentences")
    rounds: int = Field(1, ge=1, le=50, description="iterative pruning in N rounds, re-scoring each round")
    recovery_epochs: float | None = Field(None, gt=0, description="fine-tune between rounds (not after the last)")
    recovery_examples: int | None = Field(None, ge=1, description="train examples per recovery fine-tune")
    recovery_lr: float = Field(5e-5, gt=0)
    importance_examples: int = Field(512, ge=1, description="train examples scored (gradient / activation)")
    batch_size: int = Field(32, ge=1)
    normalize: bool = Field(False, description="divide each layer's scores by their L2 norm first (Michel et al.); "
                            "off: units of all layers compete on raw gate sensitivity")
    min_per_layer: int = Field(1, ge=1, description="global scope: units every layer keeps at least")

    @property
    def needs_data(self) -> bool:  # type: ignore[override]
        return self.criterion in ("gradient", "activation") or self.recovery_epochs is not None or \
            (self.criterion == "embedding" and not self.texts)

    def preflight(self, model: nn.Module, task: Any) -> None:
        if self.criterion == "embedding":
            from ..distill.embeddings import check_sentence_encoder

            check_sentence_encoder(model, task, self.step)
            if self.texts:
                from ..tasks.sentences import read_sentences

                read_sentences(self.texts, None, 1)

    @model_validator(mode="after")
    def _target(self) -> "StructuredPrune":
        s = self.step
        check((self.keep is None) != (self.keep_count is None), f"{s}: give exactly one of keep (ratio) or keep_count")
        check(self.keep is None or 0 < self.keep <= 1, f"{s}: keep must be a ratio in (0, 1], got {self.keep}")
        check(self.keep_count is None or self.keep_count >= 1, f"{s}: keep_count must be >= 1, got {self.keep_count}")
        return self


def unit_counts(model: nn.Module, unit: str) -> dict[str, int]:
    """{unit name: prunable count} in model order: heads (or KV groups) per attention block, or neurons per FFN."""
    return dict(iter_units(model, unit))


def final_targets(cfg: StructuredPrune, counts: list[int]) -> list[int] | int:
    """Per-layer kept counts (per_layer scope) or the model-wide kept count (global scope)."""
    s, what = cfg.step, "heads" if cfg.unit == "heads" else "FFN neurons"
    if cfg.scope == "per_layer":
        if cfg.keep_count is not None:
            bad = [i for i, n in enumerate(counts) if cfg.keep_count > n]
            check(not bad, f"{s}: keep_count {cfg.keep_count} exceeds the {counts[bad[0] if bad else 0]} {what} of "
                  f"layer {bad[0] if bad else 0}")
            return [cfg.keep_count] * len(counts)
        return [max(1, round(float(cfg.keep) * n)) for n in counts]
    total = sum(counts)
    target = cfg.keep_count if cfg.keep_count is not None else max(1, round(float(cfg.keep) * total))
    check(target <= total, f"{s}: keep_count {target} exceeds the {total} {what} of the model")
    floor = cfg.min_per_layer * len(counts)
    check(target >= floor, f"{s}: keeping {target} {what} is below min_per_layer={cfg.min_per_layer} for each of "
          f"{len(counts)} layers; removing every unit of a layer is not supported (drop the layer instead)")
    return target


def round_target(final: list[int] | int, start: list[int] | int, k: int, rounds: int) -> list[int] | int:
    """Geometric schedule: the count after round k of rounds, from start to final."""
    def one(f: int, s0: int) -> int:
        return f if k == rounds else max(f, round(s0 * (f / s0) ** (k / rounds)))

    if isinstance(final, list):
        return [one(f, s0) for f, s0 in zip(final, start)]  # type: ignore[arg-type]
    return one(final, start)  # type: ignore[arg-type]


def select(scores: dict[Any, torch.Tensor], target: list[int] | int, min_per_layer: int = 1) -> dict[Any, list[int]]:
    """Indices to keep per layer: top-k per layer, or top target globally with min_per_layer in every layer."""
    layers = list(scores)
    if isinstance(target, list):
        return {i: sorted(torch.topk(scores[i], min(t, scores[i].numel())).indices.tolist())
                for i, t in zip(layers, target)}
    keep: dict[Any, set[int]] = {i: set(torch.topk(scores[i], min(min_per_layer, scores[i].numel())).indices.tolist())
                                 for i in layers}
    rest = [(float(scores[i][j]), i, j) for i in layers for j in range(scores[i].numel()) if j not in keep[i]]
    rest.sort(key=lambda t: (-t[0], t[1], t[2]))
    for _, i, j in rest[: max(0, target - sum(len(v) for v in keep.values()))]:
        keep[i].add(j)
    return {i: sorted(keep[i]) for i in layers}


def run_rounds(model: nn.Module, cfg: StructuredPrune, apply_keep: Callable[[nn.Module, dict[str, list[int]]], None],
               tokenizer: Any = None, task: Task | None = None, work_dir: str | Path | None = None,
               seed: int = 42, max_len: int = 128) -> dict[str, Any]:
    """Score, select and physically prune in cfg.rounds rounds; returns what was kept (original indices).
    Recovery checkpoints between rounds go to work_dir, or to a temporary folder removed on return."""
    with work_or_temp(work_dir, "slimformer-prune-") as base:
        return _run_rounds(model, cfg, apply_keep, tokenizer, task, base, seed, max_len)


def _run_rounds(model: nn.Module, cfg: StructuredPrune, apply_keep: Callable[[nn.Module, dict[str, list[int]]], None],
                tokenizer: Any, task: Task | None, base: Path, seed: int, max_len: int) -> dict[str, Any]:
    from ..train import TrainConfig, finetune

    if cfg.needs_data:
        check(task is not None and tokenizer is not None,
              f"{cfg.step}: criterion '{cfg.criterion}' / recovery needs a tokenizer and task data")
    counts = unit_counts(model, cfg.unit)
    counts0 = list(counts.values())
    final = final_targets(cfg, counts0)
    start: list[int] | int = counts0 if isinstance(final, list) else sum(counts0)
    origin = {u: list(range(n)) for u, n in counts.items()}
    history = []
    batches, reference = None, None
    if cfg.criterion in ("gradient", "activation"):  # the same examples every round (re-scored each round)
        assert task is not None
        batches = importance_batches(tokenizer, task, cfg.importance_examples, max_len, cfg.batch_size, seed, model)
    elif cfg.criterion == "embedding":  # the same sentences every round, against the unpruned embeddings
        from ..distill.embeddings import check_sentence_encoder, sentences_for
        from .embedding_importance import reference_embeddings, sentence_batches

        check_sentence_encoder(model, task, cfg.step)
        texts = sentences_for(cfg.texts, None, cfg.importance_examples, task, cfg.step, seed)
        batches = sentence_batches(tokenizer, texts, max_len, cfg.batch_size)
        reference = reference_embeddings(model, batches)
    for k in range(1, cfg.rounds + 1):
        scores = importance(model, cfg.unit, cfg.criterion, batches, cfg.normalize, task, reference, seed + k)
        keep = select(scores, round_target(final, start, k, cfg.rounds), cfg.min_per_layer)
        changed = {i: kept for i, kept in keep.items() if len(kept) < len(origin[i])}
        if changed:
            apply_keep(model, changed)
        origin = {i: [origin[i][j] for j in keep[i]] for i in origin}
        history.append({"round": k, "kept_per_layer": [len(v) for v in origin.values()]})
        if cfg.recovery_epochs and k < cfg.rounds:
            assert task is not None
            tcfg = TrainConfig(epochs=cfg.recovery_epochs, lr=cfg.recovery_lr, batch_size=cfg.batch_size,
                               max_len=max_len, seed=seed, max_train_examples=cfg.recovery_examples)
            model, stats = finetune(model, tokenizer, task, tcfg, base / f"recovery-{k}")
            history[-1]["recovery_train_loss"] = stats.get("train_loss")
    return {"unit": cfg.unit, "kept": dict(origin), "units": list(origin),
            "kept_per_layer": [len(v) for v in origin.values()], "original_per_layer": counts0,
            "kept_total": sum(len(v) for v in origin.values()), "original_total": sum(counts0), "rounds": history}
