"""slimformer: make Transformer NLP models small and fast, and say honestly what each choice costs."""
from __future__ import annotations

from . import tasks
from .distill import Distill, DistillGeneral, MakeStudent, distill, distill_general, make_student
from .errors import SlimformerError
from .models import load, save
from .prune.layers import DropLayers
from .quantize import QuantizeDynamic, QuantizeMixed, QuantizeQAT, QuantizeStatic, QuantizeWeights
from .train_steps import Finetune

__version__ = "0.1.0"
__all__ = ["tasks", "load", "save", "SlimformerError", "DropLayers", "Finetune", "__version__",
           "Distill", "DistillGeneral", "MakeStudent", "distill", "distill_general", "make_student",
           "QuantizeDynamic", "QuantizeStatic", "QuantizeQAT", "QuantizeWeights", "QuantizeMixed"]

from .prune.ffn import PruneFFN, prune_ffn  # noqa: E402
from .prune.heads import PruneHeads, prune_heads  # noqa: E402
from .prune.unstructured import PruneUnstructured, prune_unstructured, sparse_size  # noqa: E402

__all__ += ["PruneHeads", "PruneFFN", "prune_heads", "prune_ffn", "PruneUnstructured", "prune_unstructured",
            "sparse_size"]

from .factorize import Factorize, FactorizeEmbeddings  # noqa: E402
from .share import ShareLayers, to_albert  # noqa: E402

__all__ += ["Factorize", "FactorizeEmbeddings", "ShareLayers", "to_albert"]
