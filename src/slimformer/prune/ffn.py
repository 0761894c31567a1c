"""FFN-neuron pruning (McCarley et al.): score intermediate neurons, then slice the up and down projections.

    model, info = sf.prune_ffn(model, sf.PruneFFN(keep=0.5), tokenizer, task)

Recipe: `- {step: prune_ffn, keep: 0.5, scope: global}`. Layers may end with different FFN widths; the op
`keep_ffn` is recorded so `slimformer.load` rebuilds the same shapes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping

from torch import nn

from ..errors import check
from ..models import apply_op, get_adapter, iter_units, register_op
from ..steps import Context, implements
from ..tasks.base import Task
from .heads import validated_units
from .schedule import StructuredPrune, run_rounds


class PruneFFN(StructuredPrune):
    """Remove FFN neurons: keep a ratio in (0, 1] or keep_count neurons, globally or per layer."""

    step: ClassVar[str] = "prune_ffn"
    unit: ClassVar[str] = "ffn"


@register_op("keep_ffn")
def _keep_ffn(model: nn.Module, keep: Mapping[Any, list[int]]) -> None:
    adapter = get_adapter(model)
    for unit, kept in keep.items():
        adapter.keep_ffn(adapter.ffn_unit(model, unit), [int(j) for j in kept])


def keep_ffn(model: nn.Module, keep: Mapping[Any, list[int]]) -> nn.Module:
    """Keep only the given FFN neurons ({unit: [neuron indices]}, other FFNs untouched). A gated FFN keeps the
    same neurons of its gate and up projections."""
    sizes = dict(iter_units(model, "ffn"))
    clean = validated_units(model, keep, sizes, "ffn", attention=False)
    empty = [u for u, kept in clean.items() if not kept]
    check(not empty, f"keep_ffn: cannot remove every FFN neuron of {empty[0] if empty else ''}; keep at "
          f"least one (or drop the layer with drop_layers)")
    apply_op(model, "keep_ffn", keep=clean)
    return model


def prune_ffn(model: nn.Module, cfg: PruneFFN, tokenizer: Any = None, task: Task | None = None,
              work_dir: str | Path | None = None, seed: int = 42, max_len: int = 128) -> tuple[nn.Module, dict]:
    """Prune model's FFN neurons in place by cfg; returns (model, what was kept per layer)."""
    info = run_rounds(model, cfg, keep_ffn, tokenizer, task, work_dir, seed, max_len)
    return model, info


@implements(PruneFFN)
def prune_ffn_step(model: nn.Module, cfg: PruneFFN, ctx: Context) -> nn.Module:
    model, info = prune_ffn(model, cfg, ctx.tokenizer, ctx.task, ctx.work_dir, ctx.seed, ctx.max_len)
    ctx.note("ffn_per_layer", info["kept_per_layer"])
    ctx.note("ffn", f"{info['kept_total']}/{info['original_total']}")
    if len(info["rounds"]) > 1:
        ctx.note("rounds", info["rounds"])
    return model
