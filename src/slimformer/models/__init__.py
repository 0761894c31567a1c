"""Models: load/save, architecture adapters and replayable structural ops."""
from . import bert, distilbert  # noqa: F401  (register the adapters)
from .adapters import Adapter, AttentionParts, FFNParts, get_adapter, register_adapter, supported_model_types
from .io import clone, load, num_params, resolve, save
from .surgery import apply_op, recorded_ops, register_op, replay_ops

__all__ = [
    "Adapter", "AttentionParts", "FFNParts", "get_adapter", "register_adapter", "supported_model_types",
    "clone", "load", "num_params", "resolve", "save", "apply_op", "recorded_ops", "register_op", "replay_ops",
]
