"""ALBERT-style cross-layer parameter sharing: the layers of a group use the very same parameter tensors.

Groups are all layers (default), every `group_size` consecutive layers, or an explicit partition. The shared
weights start from one layer of the group (first / middle / last) or the group average. The layer modules
stay distinct (hooks and per-layer attributes keep working); each of their parameters is the same
nn.Parameter object as in the group's first layer, so the optimizer, `num_params` and
`safetensors.torch.save_model` (used by `slimformer.save`) see and store it once. The op `share_layers`
records the groups, so the model reloads with `slimformer.load`.
"""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from ..errors import check
from ..models import apply_op, get_adapter, num_params, register_op
from ..prune.layers import stack_of
from ..steps import Context, StepConfig, implements

Init = Literal["first", "middle", "last", "average"]


def make_groups(n: int, group_size: int | None = None, groups: list[list[int]] | None = None) -> list[list[int]]:
    """A validated partition of layers 0..n-1 (every layer exactly once; groups in the given order)."""
    if groups is None:
        k = n if group_size is None else group_size
        check(isinstance(k, int) and k >= 1, f"share_layers: group_size must be >= 1, got {group_size}")
        return [list(range(i, min(i + k, n))) for i in range(0, n, k)]
    check(len(groups) > 0 and all(len(g) > 0 for g in groups), "share_layers: groups must be non-empty lists")
    seen: set[int] = set()
    for g in groups:
        for i in g:
            check(isinstance(i, int) and 0 <= i < n,
                  f"share_layers: unknown layer index {i} (the model has layers 0..{n - 1})")
            check(i not in seen, f"share_layers: layer {i} is in more than one group")
            seen.add(i)
    missing = sorted(set(range(n)) - seen)
    check(not missing, f"share_layers: layers {missing} are in no group (list every layer, singletons included)")
    return [list(g) for g in groups]


def _source_index(group: list[int], init: str) -> int:
    return {"first": group[0], "middle": group[len(group) // 2], "last": group[-1]}.get(init, group[0])


@register_op("share_layers")
def _share_layers(model: nn.Module, groups: list[list[int]], init: str = "first", stack: str | None = None) -> None:
    layers = get_adapter(model).layers(model, stack)
    for group in groups:
        if len(group) < 2:
            continue
        mods = [dict(layers[i].named_modules()) for i in group]
        shapes = [[(n, p.shape) for n, p in layers[i].named_parameters()] for i in group]
        check(all(s == shapes[0] for s in shapes),
              f"share_layers: layers {group} differ in structure or shape (pruned differently?) and cannot share")
        src = mods[group.index(_source_index(group, init))]
        for mname, smod in src.items():
            for pname, p in list(smod._parameters.items()):
                if p is None:
                    continue
                if init == "average":
                    with torch.no_grad():
                        avg = torch.stack([m[mname]._parameters[pname].detach() for m in mods]).mean(0)
                    p = nn.Parameter(avg.to(p.dtype), requires_grad=p.requires_grad)
                for m in mods:
                    m[mname]._parameters[pname] = p
        for i in group[1:]:
            # declare the aliases so transformers' save_pretrained (Trainer checkpoints) keeps one copy: a regex
            # over every parameter under the layer (also after later ops rename them, e.g. factorize); a
            # pattern that matches too much is harmless, save_pretrained always keeps one name per tensor
            layers[i]._tied_weights_keys = {".*": ".*"}


def share_layers(model: nn.Module, groups: list[list[int]], init: Init = "first", stack: str | None = None
                 ) -> nn.Module:
    """Tie the parameters of each group of layers of a stack (validated partition; recorded for reload)."""
    stack = stack_of(model, stack, "share_layers")
    n = len(get_adapter(model).layers(model, stack))
    groups = make_groups(n, groups=groups)
    check(init in ("first", "middle", "last", "average"), f"share_layers: unknown init {init!r}")
    extra = {"stack": stack} if get_adapter(model).is_multi_stack(model) else {}
    apply_op(model, "share_layers", groups=groups, init=init, **extra)
    return model


def sharing_groups(model: nn.Module, stack: str | None = None) -> list[list[int]]:
    """The current partition of a stack's layers into groups that share every parameter (singletons included)."""
    layers = get_adapter(model).layers(model, stack)
    keys = [tuple(id(p) for p in layer.parameters()) for layer in layers]
    out: dict[tuple[int, ...], list[int]] = {}
    for i, k in enumerate(keys):
        out.setdefault(k, []).append(i)
    return list(out.values())


class ShareLayers(StepConfig):
    """Cross-layer sharing: all layers (default), groups of `group_size` consecutive layers, or `groups`."""

    step: ClassVar[str] = "share_layers"
    group_size: int | None = None
    groups: list[list[int]] | None = None
    init: Init = "first"
    stack: str | None = Field(None, description="encoder or decoder (required for an encoder-decoder model)")

    def preflight(self, model: nn.Module, task: object) -> None:
        n = len(get_adapter(model).layers(model, stack_of(model, self.stack, self.step)))
        make_groups(n, self.group_size, self.groups)

    @model_validator(mode="after")
    def _one_rule(self) -> "ShareLayers":
        check(self.group_size is None or self.groups is None, "share_layers: give at most one of group_size, groups")
        check(self.group_size is None or self.group_size >= 1,
              f"share_layers: group_size must be >= 1, got {self.group_size}")
        return self


@implements(ShareLayers)
def share_layers_step(model: nn.Module, cfg: ShareLayers, ctx: Context) -> nn.Module:
    stack = stack_of(model, cfg.stack, cfg.step)
    n = len(get_adapter(model).layers(model, stack))
    groups = make_groups(n, cfg.group_size, cfg.groups)
    before = num_params(model)
    share_layers(model, groups, cfg.init, stack)
    ctx.note("groups", groups)
    ctx.note("params_before_after", [before, num_params(model)])
    return model
