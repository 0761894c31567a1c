"""Structural operations that can be replayed, so that any reshaped model reloads in a fresh process.

A compression technique that changes module shapes or types (slicing heads, replacing a Linear by two,
tying layers, swapping in quantized modules) does it through `apply_op(model, "name", **args)`. The op is
a pure function of (model, args) that changes structure; it is recorded in `model.config.slimformer["ops"]`,
saved inside config.json. Loading builds the original architecture from the config, replays the ops in
order on the freshly initialised model, and then loads the saved tensors, strictly. The args must be
JSON-serialisable.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

from torch import nn

from ..errors import SlimformerError

OpFn = Callable[..., None]
_OPS: dict[str, OpFn] = {}


def register_op(name: str) -> Callable[[OpFn], OpFn]:
    """Register a structural op `fn(model, **args) -> None` under a stable name."""

    def deco(fn: OpFn) -> OpFn:
        if name in _OPS and _OPS[name] is not fn:
            raise ValueError(f"structural op '{name}' registered twice")
        _OPS[name] = fn
        return fn

    return deco


def recorded_ops(model_or_config: Any) -> list[dict[str, Any]]:
    config = getattr(model_or_config, "config", model_or_config)
    meta = getattr(config, "slimformer", None) or {}
    if not isinstance(meta, dict):
        raise SlimformerError("config.json 'slimformer' must be a mapping")
    ops = meta.get("ops", [])
    if not isinstance(ops, list):
        raise SlimformerError("config.json 'slimformer.ops' must be a list of ops")
    return list(ops)


def apply_op(model: nn.Module, name: str, **args: Any) -> None:
    """Apply a registered structural op to model and record it for reload."""
    _ensure_registered()
    if name not in _OPS:
        raise SlimformerError(f"unknown structural op '{name}'")
    meta = dict(getattr(model.config, "slimformer", None) or {})
    if "base_config" not in meta:  # the architecture the ops replay on, as it was before the first op
        meta["base_config"] = {k: v for k, v in model.config.to_dict().items() if k != "slimformer"}
    _OPS[name](model, **copy.deepcopy(args))
    meta["ops"] = recorded_ops(model) + [{"op": name, "args": args}]
    model.config.slimformer = meta


def replay_ops(model: nn.Module, ops: list[dict[str, Any]]) -> None:
    """Replay recorded ops on a freshly built model (weights are loaded afterwards)."""
    _ensure_registered()
    for i, rec in enumerate(ops):
        name = rec.get("op") if isinstance(rec, dict) else None
        if name not in _OPS:
            raise SlimformerError(
                f"saved model needs structural op {name!r} (op {i + 1}) which this slimformer does not know"
            )
        args = rec.get("args", {})
        if not isinstance(args, dict):
            raise SlimformerError(f"saved structural op {i + 1} ({name}): args must be a mapping")
        try:
            _OPS[name](model, **copy.deepcopy(args))
        except SlimformerError as e:
            raise SlimformerError(f"saved structural op {i + 1} ({name}) does not apply: {e}") from e
        except (TypeError, KeyError, IndexError, ValueError, AttributeError, RuntimeError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise SlimformerError(f"saved structural op {i + 1} ({name}) does not apply: {first[:200]}") from e
    meta = dict(getattr(model.config, "slimformer", None) or {})
    meta["ops"] = list(ops)
    model.config.slimformer = meta


def _ensure_registered() -> None:
    """Import the technique modules so that their ops are registered before a replay."""
    from .. import techniques  # noqa: F401
