"""Imports every technique module so its recipe steps and structural ops are registered."""
from .prune import layers as _prune_layers  # noqa: F401
from .train_steps import finetune_step as _finetune  # noqa: F401
from . import distill as _distill  # noqa: F401
from . import quantize as _quantize  # noqa: F401
from .prune import heads as _prune_heads  # noqa: F401
from .prune import ffn as _prune_ffn  # noqa: F401
from .prune import vocab as _prune_vocab  # noqa: F401
from .prune import unstructured as _prune_unstructured  # noqa: F401
from .prune import oneshot as _prune_oneshot  # noqa: F401
from .prune import movement as _prune_movement  # noqa: F401
from . import factorize as _factorize  # noqa: F401
from . import share as _share  # noqa: F401
