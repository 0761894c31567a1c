"""Build a student from a teacher: DistilBERT-style layer selection, or a fresh smaller config.

DistilBERT (Sanh et al. 2019) initialises the student from every other teacher layer and drops the
token-type embeddings and the pooler. Layer selection reuses the replayable `keep_layers` op; dropping
token types and the pooler are ops here, so every student reloads with `slimformer.load` in a fresh process.

Dropping token types folds the segment-0 embedding into the position table (exact for single-sentence
inputs; sentence pairs lose the segment signal, as in DistilBERT). Dropping the pooler feeds the raw
[CLS] state to the classifier, so the student must then be trained (distilled) again.
"""
from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from pydantic import Field, model_validator
from torch import nn

from ..errors import SlimformerError, check
from ..models import apply_op, get_adapter, register_op
from ..prune.layers import keep_layers
from ..steps import Context, StepConfig, implements



class NoTokenTypes(nn.Module):
    """Stands in for the token-type embedding table: adds nothing (no parameters)."""

    def forward(self, token_type_ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(1, device=token_type_ids.device)


class ClsPooler(nn.Module):
    """Stands in for the pooler: the classifier reads the raw [CLS] hidden state."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states[:, 0]


@register_op("drop_token_type_embeddings")
def _drop_token_types(model: nn.Module) -> None:
    get_adapter(model).set_token_type_embeddings(model, NoTokenTypes())


@register_op("drop_pooler")
def _drop_pooler(model: nn.Module) -> None:
    get_adapter(model).set_pooler(model, ClsPooler())


class MakeStudent(StepConfig):
    """Turn the current model into a smaller student (DistilBERT init by default: every 2nd layer)."""

    step: ClassVar[str] = "make_student"
    every: int | None = Field(None, ge=1, description="keep layers 0, k, 2k, ... (DistilBERT: 2)")
    layers: list[int] | None = Field(None, description="explicit teacher layers to keep (0-based)")
    stack: str | None = Field(None, description="encoder or decoder: select layers of that stack only "
                              "(default: every stack)")
    fresh: dict[str, int] | None = Field(None, description="random init with a smaller config: integer config "
                                         "fields, e.g. {num_hidden_layers: 4, hidden_size: 256, ...}")
    drop_token_type: bool = False
    drop_pooler: bool = False

    def preflight(self, model: nn.Module, task: Any) -> None:
        _preflight(self, model)

    @model_validator(mode="after")
    def _one_choice(self) -> "MakeStudent":
        chosen = [x for x in (self.every, self.layers, self.fresh) if x is not None]
        check(len(chosen) <= 1, "make_student: give at most one of every, layers, fresh")
        if not chosen and not (self.drop_token_type or self.drop_pooler):
            self.every = 2
        return self


def _preflight(cfg: "MakeStudent", model: nn.Module) -> None:
    adapter = get_adapter(model)
    names = [s.name for s in adapter.stacks(model)]
    check(cfg.stack is None or cfg.stack in names, f"the model has no {cfg.stack} stack (it has {', '.join(names)})")
    check(cfg.layers is None or cfg.stack is not None or len(names) == 1,
          f"layers: name the stack ({' or '.join(names)}) these indices belong to with stack:")
    if cfg.fresh is not None:
        for k, v in cfg.fresh.items():
            cur = getattr(model.config, k, None)
            check(isinstance(cur, int) and not isinstance(cur, bool),
                  f"fresh: {k!r} is not an integer field of the {model.config.model_type} config")
    if cfg.drop_token_type:
        check(adapter.token_type_embeddings(model) is not None,
              f"{type(model).__name__} has no token-type embeddings to drop")
    if cfg.drop_pooler:
        check(adapter.pooler(model) is not None, f"{type(model).__name__} has no pooler to drop")


def check_fits_in_memory(cls: Any, cfg: Any, what: str) -> None:
    """Refuse (one line) a model whose fp32 weights would not fit in the memory this machine has free: the
    parameters are counted on the meta device, without allocating them."""
    from ..bench import available_memory

    with torch.device("meta"):
        n = sum(p.numel() for p in cls(cfg).parameters())
    need, free = 4 * n, available_memory()
    check(free is None or need < 0.8 * free, f"{what}: the model would have {n / 1e9:.2f}B parameters "
          f"({need / 2**30:.1f} GiB in fp32); this machine has {((free or 0) / 2**30):.1f} GiB free")


def _fresh(model: nn.Module, sizes: dict[str, int]) -> nn.Module:
    """A randomly initialised model of the same class with a smaller config; embeddings copied if widths match."""
    cfg = copy.deepcopy(model.config)
    for k, v in sizes.items():
        current = getattr(cfg, k, None)
        check(isinstance(current, int) and not isinstance(current, bool),
              f"make_student: fresh: {k!r} is not an integer field of the {cfg.model_type} config")
        check(isinstance(v, int) and v >= 1, f"make_student: fresh: {k} must be an integer >= 1")
        setattr(cfg, k, v)
    check(cfg.hidden_size % cfg.num_attention_heads == 0,
          f"make_student: hidden_size {cfg.hidden_size} is not divisible by num_attention_heads "
          f"{cfg.num_attention_heads}")
    cfg.slimformer = {}  # a fresh student has no structural ops: its config describes it fully
    check_fits_in_memory(type(model), cfg, "make_student: fresh")
    torch.manual_seed(0)
    student = type(model)(cfg)
    adapter = get_adapter(model)
    for s_emb, t_emb in zip(adapter.embedding_modules(student), adapter.embedding_modules(model)):
        t_state = t_emb.state_dict()
        s_state = {k: v for k, v in t_state.items() if k in s_emb.state_dict()
                   and s_emb.state_dict()[k].shape == v.shape}
        s_emb.load_state_dict(s_state, strict=False)  # tables of matching width start from the teacher's
    return student.eval()


def make_student(model: nn.Module, every: int | None = None, layers: list[int] | None = None,
                 fresh: dict[str, int] | None = None, drop_token_type: bool = False, drop_pooler: bool = False,
                 inplace: bool = False) -> nn.Module:
    """A student built from `model` (a copy unless inplace). Returns the student; the teacher is untouched."""
    cfg = MakeStudent(every=every, layers=layers, fresh=fresh, drop_token_type=drop_token_type,
                      drop_pooler=drop_pooler)
    return _build(model if inplace else copy.deepcopy(model), cfg)


def student_layers(n: int, every: int) -> list[int]:
    """DistilBERT selection: layers 0, k, 2k, ... of n."""
    check(every <= n, f"make_student: every={every} but the model has only {n} layers")
    return list(range(0, n, every))


def _build(model: nn.Module, cfg: MakeStudent) -> nn.Module:
    adapter = get_adapter(model)
    if cfg.fresh is not None:
        model = _fresh(model, cfg.fresh)
    elif cfg.every is not None or cfg.layers is not None:
        stacks = [cfg.stack] if cfg.stack else [s.name for s in adapter.stacks(model)]
        check(cfg.layers is None or len(stacks) == 1,
              f"make_student: layers: name the stack ({' or '.join(stacks)}) these indices belong to with stack:")
        for st in stacks:
            n = len(adapter.layers(model, st))
            keep = cfg.layers if cfg.layers is not None else student_layers(n, cfg.every or 2)
            check(sorted(keep) == list(keep), f"make_student: layers must be increasing, got {keep}")
            try:
                keep_layers(model, list(keep), st)
            except SlimformerError as e:
                raise SlimformerError(f"make_student: {e}") from e
    if cfg.drop_token_type:
        tt = adapter.token_type_embeddings(model)
        pos = adapter.position_embeddings(model)
        check(isinstance(tt, nn.Embedding) and isinstance(pos, nn.Embedding),
              f"make_student: {type(model).__name__} has no token-type embeddings to drop")
        with torch.no_grad():
            pos.weight += tt.weight[0]
        apply_op(model, "drop_token_type_embeddings")
        model.config.type_vocab_size = 1
    if cfg.drop_pooler:
        check(adapter.pooler(model) is not None and not isinstance(adapter.pooler(model), ClsPooler),
              f"make_student: {type(model).__name__} has no pooler to drop")
        apply_op(model, "drop_pooler")
    return model


def layer_origin(model: nn.Module, stack: str | None = None) -> list[int] | None:
    """Which original layers of a stack (default: the first) a student kept (from its keep_layers ops), or None."""
    stack = stack or get_adapter(model).stacks(model)[0].name
    idx: list[int] | None = None
    for op in (getattr(model.config, "slimformer", None) or {}).get("ops", []):
        if op.get("op") == "keep_layers" and op["args"].get("stack", stack) == stack:
            keep = op["args"]["keep"]
            idx = keep if idx is None else [idx[i] for i in keep]
    return idx


@implements(MakeStudent)
def make_student_step(model: nn.Module, cfg: MakeStudent, ctx: Context) -> nn.Module:
    student = _build(model, cfg)
    ad = get_adapter(student)
    info: dict[str, Any] = {"layers": {s.name: len(s.layers) for s in ad.stacks(student)}
                            if ad.is_multi_stack(student) else len(ad.layers(student))}
    origin = layer_origin(student)
    if origin is not None:
        info["from_teacher_layers"] = origin
    ctx.note("student", info)
    return student
