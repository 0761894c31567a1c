"""Recipe steps: one pydantic config class and one function `apply(model, cfg, ctx) -> model` per technique.

    class DropLayers(StepConfig):
        step: ClassVar[str] = "drop_layers"
        keep: int = Field(..., ge=1)

    @implements(DropLayers)
    def drop_layers(model, cfg: DropLayers, ctx: Context) -> nn.Module: ...

The config class is also the Python API (`sf.DropLayers(keep=4)`); YAML recipes name it by `step:`.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import SlimformerError
from .tasks.base import Task

ApplyFn = Callable[..., torch.nn.Module]
REGISTRY: dict[str, tuple[type["StepConfig"], ApplyFn]] = {}


class StepConfig(BaseModel):
    """Base of every recipe step's config: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    step: ClassVar[str] = ""
    needs_data: ClassVar[bool] = False  # the step needs task data (training, calibration, importance)
    quantizes: ClassVar[bool] = False  # a quantization step: nothing structural or trained may follow it

    def preflight(self, model: torch.nn.Module, task: Any) -> None:
        """Raise a one-line SlimformerError when this step cannot apply to `model` / `task` (checked before
        any work starts). Steps override it where a shape or task can make them impossible."""

    def describe(self) -> str:
        fields = self.model_dump(exclude_defaults=True)
        return self.step + (" " + json.dumps(fields, default=str) if fields else "")


def regexes(values: list[str] | None, field: str) -> list[str] | None:
    """Validate a list of regular expressions (a field validator's body): one line naming the bad pattern."""
    import re

    for p in values or []:
        try:
            re.compile(p)
        except (re.error, TypeError) as e:
            raise SlimformerError(f"{field}: {p!r} is not a valid regex ({e})") from e
    return values


def implements(cfg_cls: type[StepConfig]) -> Callable[[ApplyFn], ApplyFn]:
    """Register fn as the implementation of the recipe step cfg_cls.step."""

    def deco(fn: ApplyFn) -> ApplyFn:
        if not cfg_cls.step:
            raise ValueError(f"{cfg_cls.__name__} has no step name")
        REGISTRY[cfg_cls.step] = (cfg_cls, fn)
        return fn

    return deco


@dataclass
class Context:
    """What a step may use besides the model: tokenizer, task data, the original model, a work directory."""

    tokenizer: Any
    task: Task | None
    work_dir: Path  # the runner gives each step its own scratch directory (checkpoints, caches)
    teacher: torch.nn.Module | None = None  # the model as it entered the recipe (never modified)
    teacher_tokenizer: Any = None  # its tokenizer (a step such as prune_vocab may replace `tokenizer`)
    seed: int = 42
    max_len: int = 128
    resume: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # what the step wants recorded in the ledger

    def require_task(self, step: str) -> Task:
        if self.task is None:
            raise SlimformerError(f"step '{step}' needs task data: pass --task and --data (or task/data in the recipe)")
        return self.task

    def original_tokenizer(self) -> Any:
        return self.teacher_tokenizer if self.teacher_tokenizer is not None else self.tokenizer

    def original(self) -> torch.nn.Module:
        """A frozen copy of the model as it entered the recipe (for distillation or comparisons)."""
        if self.teacher is None:
            raise SlimformerError("no original model in this context")
        return self.teacher

    def step_dir(self, index: int, name: str) -> Path:
        d = self.work_dir / f"step-{index:02d}-{name}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def note(self, key: str, value: Any) -> None:
        self.info[key] = value


def known_steps() -> list[str]:
    _ensure_registered()
    return sorted(REGISTRY)


def parse_step(raw: Any, index: int) -> StepConfig:
    """Validate one recipe entry {step: name, ...fields}; errors name the step and the field."""
    _ensure_registered()
    if isinstance(raw, StepConfig):
        return raw
    if isinstance(raw, str):
        raw = {"step": raw}
    if not isinstance(raw, dict) or "step" not in raw:
        raise SlimformerError(f"recipe step {index + 1}: expected a mapping with a 'step' key, got {raw!r}")
    raw = dict(raw)
    name = raw.pop("step")
    if not isinstance(name, str) or name not in REGISTRY:
        raise SlimformerError(f"recipe step {index + 1}: unknown step '{name}' (known: {', '.join(known_steps())})")
    cfg_cls = REGISTRY[name][0]
    try:
        return cfg_cls(**raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(step)"
        msg = err["msg"].replace("Extra inputs are not permitted", "unknown field")
        raise SlimformerError(f"recipe step {index + 1} ({name}): {loc}: {msg}") from e


def apply_step(model: torch.nn.Module, cfg: StepConfig, ctx: Context) -> torch.nn.Module:
    _ensure_registered()
    if cfg.step not in REGISTRY:
        raise SlimformerError(f"unknown step '{cfg.step}'")
    if cfg.needs_data:
        ctx.require_task(cfg.step)
    return REGISTRY[cfg.step][1](model, copy.deepcopy(cfg), ctx)


def _ensure_registered() -> None:
    from . import techniques  # noqa: F401
