"""slimformer: make Transformer NLP models small and fast, and say honestly what each choice costs.

The public names are imported on first use (PEP 562), so `import slimformer` and `slimformer --help` stay
fast: torch and transformers load only when a model, a step or a task is touched.
"""
from __future__ import annotations

import importlib
from typing import Any

from .errors import SlimformerError

__version__ = "0.1.0"

_LAZY = {
    "tasks": (".tasks", None),
    "load": (".models", "load"), "save": (".models", "save"),
    "DropLayers": (".prune.layers", "DropLayers"),
    "Finetune": (".train_steps", "Finetune"),
    **{n: (".distill", n) for n in ("Distill", "DistillGeneral", "DistillEmbeddings", "distill_embeddings",
                                    "MakeStudent", "distill", "distill_general", "make_student", "Pet")},
    **{n: (".quantize", n) for n in ("QuantizeDynamic", "QuantizeStatic", "QuantizeQAT", "QuantizeWeights",
                                     "QuantizeMixed", "HalfPrecision", "half_precision")},
    "PruneHeads": (".prune.heads", "PruneHeads"), "prune_heads": (".prune.heads", "prune_heads"),
    "PruneFFN": (".prune.ffn", "PruneFFN"), "prune_ffn": (".prune.ffn", "prune_ffn"),
    "PruneVocab": (".prune.vocab", "PruneVocab"), "prune_vocab": (".prune.vocab", "prune_vocab"),
    **{n: (".prune.unstructured", n) for n in ("PruneUnstructured", "prune_unstructured", "sparse_size")},
    "PruneOneShot": (".prune.oneshot", "PruneOneShot"), "prune_oneshot": (".prune.oneshot", "prune_oneshot"),
    "PruneMovement": (".prune.movement", "PruneMovement"), "prune_movement": (".prune.movement", "prune_movement"),
    "Factorize": (".factorize", "Factorize"), "FactorizeEmbeddings": (".factorize", "FactorizeEmbeddings"),
    "ShareLayers": (".share", "ShareLayers"), "to_albert": (".share", "to_albert"),
    "SharePairs": (".share", "SharePairs"),
}
__all__ = ["SlimformerError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'slimformer' has no attribute '{name}'")
    module, attr = _LAZY[name]
    mod = importlib.import_module(module, __name__)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
