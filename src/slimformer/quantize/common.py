"""Fields and helpers shared by the quantization steps: which layers, embeddings, and the accuracy guard."""
from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator
from torch import nn

from ..steps import Context, StepConfig, regexes
from .guard import check_accuracy
from .modules import QEmbedding, QLinear
from .ops import linearize, select_linears


class QuantStep(StepConfig):
    """Base of the quantization step configs (not a step itself)."""

    quantizes: ClassVar[bool] = True
    include: list[str] | None = Field(None, description="regexes of Linear names to quantize (default: all)")
    exclude: list[str] = Field(default_factory=list, description="regexes of Linear names to keep in fp32")
    skip_head: bool = Field(True, description="leave the task head (pooler, classifier) in fp32")
    guard: bool = Field(True, description="evaluate on the dev split and warn when the metric drops")
    tolerance: float = Field(1.0, ge=0, description="allowed drop of the main metric, in points")
    guard_examples: int | None = Field(None, ge=1, description="evaluate the guard on the first N dev examples")

    @field_validator("include", "exclude")
    @classmethod
    def _patterns(cls, v: list[str] | None, info: Any) -> list[str] | None:
        return regexes(v, info.field_name)

    def targets(self, model: nn.Module) -> list[str]:
        """Names of the Linear layers this step quantizes (GPT-2's Conv1D layers become nn.Linear first)."""
        linearize(model)
        return select_linears(model, self.include, self.exclude, self.skip_head)


def run_guard(before: nn.Module, after: nn.Module, cfg: QuantStep, ctx: Context) -> dict[str, Any] | None:
    """Evaluate before/after on the dev split when the context has a task; record and return the report."""
    if not cfg.guard or ctx.task is None:
        return None
    report = check_accuracy(before, after, ctx.tokenizer, ctx.task, cfg.tolerance, ctx.max_len, cfg.guard_examples)
    ctx.note("guard", report)
    return report


def summary(model: nn.Module) -> dict[str, Any]:
    """Counts of quantized modules by kind and bits (for the ledger)."""
    out: dict[str, int] = {}
    for m in model.modules():
        if isinstance(m, QLinear):
            key = f"linear_{m.bits}bit_{m.act}"
        elif isinstance(m, QEmbedding):
            key = f"embedding_{m.bits}bit"
        else:
            continue
        out[key] = out.get(key, 0) + 1
    return out


def record_meta(model: nn.Module, key: str, value: Any) -> None:
    """Keep `value` under `key` in model.config.slimformer (saved with the model; read back by steps' notes)."""
    meta = dict(getattr(model.config, "slimformer", None) or {})
    meta[key] = value
    model.config.slimformer = meta
