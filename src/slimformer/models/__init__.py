"""Models: load/save, architecture adapters (a table per family) and replayable structural ops."""
from . import families  # noqa: F401  (register the families)
from .arch import (Adapter, AttentionParts, AttnSpec, FFNParts, FFNSpec, Family, StackSpec, get_adapter, iter_units,
                   register_family, submodule, supported_model_types)
from .io import clone, load, num_params, resolve, save
from .surgery import apply_op, recorded_ops, register_op, replay_ops

__all__ = [
    "Adapter", "AttentionParts", "AttnSpec", "FFNParts", "FFNSpec", "Family", "StackSpec", "get_adapter",
    "iter_units", "register_family", "submodule", "supported_model_types",
    "clone", "load", "num_params", "resolve", "save", "apply_op", "recorded_ops", "register_op", "replay_ops",
]
