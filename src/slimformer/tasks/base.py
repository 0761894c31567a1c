"""The Task interface: what a task kind brings to training, evaluation, distillation and timing.

A task kind (classification, similarity, translation, language modelling) owns its data splits, the model
head it needs (an `AutoModelFor...` class name), how examples become tensors, its training loss, its
evaluation and metrics (with their direction), and the inputs latency is measured on. train, evaluate,
distill, the accuracy guard, importance scoring and the report go through this interface only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch

from ..errors import SlimformerError
from .metrics import info as metric_info


@dataclass(frozen=True)
class Example:
    """A classification example (label id) or a scored pair (float label)."""

    text: str
    label: Any
    text_pair: str | None = None


class Task:
    """Base of every task kind. Subclasses set `kind`, `head` and implement encode / evaluate."""

    kind: ClassVar[str] = ""
    head: ClassVar[str] = "AutoModel"        # the transformers auto class of the model this task trains
    distill_target: ClassVar[str] = "logits"  # logits | token_logits | regression | embedding
    generative: ClassVar[bool] = False
    name: str
    splits: dict[str, list[Any]]
    metrics: list[str]

    # --- data -------------------------------------------------------------------------------------
    @property
    def default_split(self) -> str:
        """The split figures are reported on when none is named."""
        return "dev"

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    def split(self, name: str) -> list[Any]:
        if name not in self.splits:
            raise SlimformerError(f"task {self.name} has no split '{name}' (has: {', '.join(self.splits)})")
        return self.splits[name]

    def eval_split(self, preferred: str = "dev") -> str:
        """The split to evaluate on: `preferred`, or for "dev" a validation/val split; never silently test."""
        if preferred in self.splits:
            return preferred
        if preferred == "dev":
            for name in ("validation", "val", "valid"):
                if name in self.splits:
                    return name
        raise SlimformerError(f"task {self.name} has no split '{preferred}' (has: {', '.join(self.splits)}); "
                              f"name one that exists")

    def texts(self, split: str = "train") -> list[str]:
        """Plain input texts of a split (calibration, vocabulary statistics)."""
        out: list[str] = []
        for ex in self.split(split):
            out.append(ex.text)
            if getattr(ex, "text_pair", None):
                out.append(ex.text_pair)
        return out

    # --- model ------------------------------------------------------------------------------------
    def model_kwargs(self) -> dict[str, Any]:
        """Config overrides for a newly created head (num_labels, problem_type)."""
        return {}

    def check_model(self, model: torch.nn.Module, fresh_head: bool = False) -> None:
        """Raise a one-line error when the model cannot serve this task (wrong head size)."""

    # --- training ---------------------------------------------------------------------------------
    def encode(self, tokenizer: Any, examples: Sequence[Any], max_len: int = 128, with_labels: bool = True) -> Any:
        raise NotImplementedError

    def collator(self, tokenizer: Any, model: torch.nn.Module | None = None) -> Any:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """The training loss of one collated batch (the model's own loss from its labels by default)."""
        out = model(**batch)
        if getattr(out, "loss", None) is None:
            raise SlimformerError(f"task {self.name}: the model returned no loss for a labelled batch")
        return out.loss

    def uses_custom_loss(self) -> bool:
        return type(self).loss is not Task.loss

    # --- evaluation -------------------------------------------------------------------------------
    def evaluate(self, model: Any, tokenizer: Any, split: str = "dev", max_len: int = 128,
                 max_examples: int | None = None) -> dict[str, float]:
        raise NotImplementedError

    def details(self, model: Any, tokenizer: Any, split: str = "dev", max_len: int = 128,
                max_examples: int | None = None) -> dict[str, Any]:
        """Extra diagnostics for the accuracy guard (per-class recall for classification)."""
        return {}

    def higher_is_better(self, metric: str | None = None) -> bool:
        return metric_info(metric or self.main_metric).higher_is_better

    # --- timing -----------------------------------------------------------------------------------
    def latency_inputs(self, model: Any, tokenizer: Any, batch: int, seq_len: int) -> dict[str, torch.Tensor]:
        from ..data import dummy_inputs

        return dummy_inputs(tokenizer, batch, seq_len, model=model)

    def describe(self) -> str:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        return f"{self.name} ({self.kind}; {sizes}; metrics {', '.join(self.metrics)})"
