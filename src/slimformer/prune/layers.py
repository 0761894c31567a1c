"""Drop whole Transformer layers: fixed strategies (Sajjad et al.: top / bottom / alternate), an explicit list, or
`block_influence` (ShortGPT, Men et al. 2024): drop the layers whose output is most like their input, BI =
1 - mean cos(x_in, x_out) over the calibration tokens, measured once on the unpruned model."""
from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from ..errors import check
from ..models import apply_op, get_adapter, register_op
from ..steps import Context, StepConfig, implements


class DropLayers(StepConfig):
    """Remove whole layers. `keep` is a count (>= 1) or a ratio in (0, 1); or name `drop` explicitly."""

    step: ClassVar[str] = "drop_layers"
    keep: float | None = Field(None, gt=0, description="layers to keep: a count >= 1 or a ratio in (0, 1)")
    drop: list[int] | None = Field(None, description="explicit layer indices to drop (0-based)")
    strategy: Literal["top", "bottom", "alternate", "block_influence"] = "top"
    stack: str | None = Field(None, description="encoder or decoder (required for an encoder-decoder model)")
    calib_examples: int = Field(64, ge=1, description="block_influence: train examples it is measured on")

    @property
    def needs_data(self) -> bool:  # type: ignore[override]
        return self.strategy == "block_influence" and self.drop is None

    def preflight(self, model: nn.Module, task: object) -> None:
        stack = stack_of(model, self.stack, self.step)
        n = len(get_adapter(model).layers(model, stack))
        if self.keep is not None and self.keep >= 1:
            check(int(self.keep) <= n, f"keep={int(self.keep)} but the {stack} has only {n} layers")
        bad = [i for i in self.drop or [] if not 0 <= i < n]
        check(not bad, f"unknown layer index {bad[0] if bad else ''} (the {stack} has layers 0..{n - 1})")

    @model_validator(mode="after")
    def _one_target(self) -> "DropLayers":
        check((self.keep is None) != (self.drop is None), "drop_layers: give exactly one of keep or drop")
        check(self.keep is None or self.keep < 1 or float(self.keep).is_integer(),
              "drop_layers: keep must be a whole count >= 1 or a ratio below 1")
        return self


def layers_to_keep(n: int, keep: int, strategy: str) -> list[int]:
    """Indices kept by a fixed strategy: top drops the last layers, bottom the first, alternate every other."""
    check(1 <= keep <= n, f"cannot keep {keep} of {n} layers")
    if strategy == "top":
        return list(range(keep))
    if strategy == "bottom":
        return list(range(n - keep, n))
    drop_n = n - keep  # alternate: drop odd-position layers from the top down, as in Sajjad et al.
    odd = [i for i in range(n - 1, -1, -1) if i % 2 == 1][:drop_n]
    rest = [i for i in range(n - 1, -1, -1) if i % 2 == 0][: drop_n - len(odd)]
    dropped = set(odd) | set(rest)
    return [i for i in range(n) if i not in dropped]


def most_influential(bi: list[float], count: int) -> list[int]:
    """The `count` layers of highest block influence, in model order (what drop_layers keeps)."""
    return sorted(sorted(range(len(bi)), key=lambda i: -bi[i])[:count])


@register_op("keep_layers")
def _keep_layers(model: nn.Module, keep: list[int], stack: str | None = None) -> None:
    adapter = get_adapter(model)
    adapter.set_layers(model, adapter.stack(model, stack).name, list(keep))


def stack_of(model: nn.Module, stack: str | None, step: str) -> str:
    """The stack a layer step works on: the named one, or the only one."""
    adapter = get_adapter(model)
    names = [s.name for s in adapter.stacks(model)]
    if stack is None:
        check(len(names) == 1, f"{step}: the model has stacks {' and '.join(names)}; name one with stack:")
        return names[0]
    check(stack in names, f"{step}: the model has no {stack} stack (it has {', '.join(names)})")
    return stack


def keep_layers(model: nn.Module, keep: list[int], stack: str | None = None) -> nn.Module:
    """Keep only the given layer indices of a stack (in order); recorded so the model reloads."""
    stack = stack_of(model, stack, "keep_layers")
    n = len(get_adapter(model).layers(model, stack))
    bad = [i for i in keep if not isinstance(i, int) or not 0 <= i < n]
    check(not bad, f"unknown layer index {bad[0] if bad else ''}: the {stack} has layers 0..{n - 1}")
    check(len(keep) > 0, f"cannot drop every layer of the {stack}")
    check(len(set(keep)) == len(keep), "layer indices to keep must be distinct")
    args = {"keep": sorted(keep)} if len(get_adapter(model).stacks(model)) == 1 else {"keep": sorted(keep),
                                                                                       "stack": stack}
    apply_op(model, "keep_layers", **args)
    return model


@implements(DropLayers)
def drop_layers(model: nn.Module, cfg: DropLayers, ctx: Context) -> nn.Module:
    stack = stack_of(model, cfg.stack, "drop_layers")
    n = len(get_adapter(model).layers(model, stack))
    if cfg.drop is not None:
        bad = [i for i in cfg.drop if not 0 <= i < n]
        check(not bad, f"drop_layers: unknown layer index {bad[0] if bad else ''} (the {stack} has layers 0..{n - 1})")
        keep = [i for i in range(n) if i not in set(cfg.drop)]
    else:
        assert cfg.keep is not None
        count = int(cfg.keep) if cfg.keep >= 1 else max(1, round(cfg.keep * n))
        check(count <= n, f"drop_layers: keep={count} but the {stack} has only {n} layers")
        if cfg.strategy == "block_influence":
            from ..quantize.guard import calibration_batches

            batches = calibration_batches(ctx.tokenizer, ctx.require_task(cfg.step), cfg.calib_examples,
                                          ctx.max_len, seed=ctx.seed, model=model)
            bi = block_influence(model, batches, stack)
            ctx.note("block_influence", [round(b, 5) for b in bi])
            keep = most_influential(bi, count)
        else:
            keep = layers_to_keep(n, count, cfg.strategy)
    ctx.note("kept_layers", keep)
    return keep_layers(model, keep, stack)


@torch.no_grad()
def block_influence(model: nn.Module, batches: list[dict[str, torch.Tensor]], stack: str | None = None) -> list[float]:
    """ShortGPT's Block Influence of each layer of a stack: 1 - mean cosine of its input and output hidden states
    over the non-padding tokens (low: the layer changes little and is the first to drop)."""
    layers = list(get_adapter(model).layers(model, stack_of(model, stack, "block_influence")))
    sums = [0.0] * len(layers)
    count = [0] * len(layers)
    state: dict[str, Any] = {}

    def hooks(i: int) -> tuple[Any, Any]:
        def pre(mod: nn.Module, args: tuple, kwargs: dict) -> None:
            state[i] = args[0] if args else kwargs["hidden_states"]

        def post(mod: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            y = out[0] if isinstance(out, (tuple, list)) else out
            cos = torch.nn.functional.cosine_similarity(state.pop(i).float(), y.float(), dim=-1)
            mask = state.get("mask")
            cos = cos[mask] if mask is not None and mask.shape == cos.shape else cos.reshape(-1)
            sums[i] += float(cos.sum())
            count[i] += cos.numel()
        return pre, post

    handles = []
    for i, layer in enumerate(layers):
        pre, post = hooks(i)
        handles += [layer.register_forward_pre_hook(pre, with_kwargs=True),
                    layer.register_forward_hook(post, with_kwargs=True)]
    try:
        model.eval()
        for b in batches:
            m = b.get("attention_mask")
            state["mask"] = m.bool() if m is not None else None
            model(**b)
    finally:
        for h in handles:
            h.remove()
    return [1.0 - s / max(c, 1) for s, c in zip(sums, count)]
