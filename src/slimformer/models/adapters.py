"""Architecture adapters: the only place that knows where embeddings, attention heads, FFN and layers live.

A technique asks the adapter for `layers(model)`, `attention(layer)`, `ffn(layer)` and never touches
attribute names of a particular architecture. A new family is one new subclass registered with
`@register_adapter("model_type", ...)`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from torch import nn

from ..errors import SlimformerError

_ADAPTERS: dict[str, type["Adapter"]] = {}


@dataclass
class AttentionParts:
    """The pieces of one self-attention block that head pruning and gating need."""

    module: nn.Module  # the module whose forward splits heads (holds the head count attributes)
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    output: nn.Linear  # projection back to the hidden size
    head_dim: int


@dataclass
class FFNParts:
    """The two linear maps of a feed-forward block: hidden -> intermediate -> hidden."""

    up: nn.Linear
    down: nn.Linear


class Adapter:
    """Base class; subclasses fill in the attribute paths of one architecture family."""

    model_types: tuple[str, ...] = ()
    # regexes on module/parameter names -> profile component; first match wins
    components: tuple[tuple[str, str], ...] = ()

    # --- structure -------------------------------------------------------------------------------
    def backbone(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def embeddings(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def word_embeddings(self, model: nn.Module) -> nn.Embedding:
        raise NotImplementedError

    def layers(self, model: nn.Module) -> nn.ModuleList:
        raise NotImplementedError

    def set_layers(self, model: nn.Module, layers: nn.ModuleList) -> None:
        raise NotImplementedError

    def attention(self, layer: nn.Module) -> AttentionParts:
        raise NotImplementedError

    def set_num_heads(self, layer: nn.Module, n: int) -> None:
        raise NotImplementedError

    def ffn(self, layer: nn.Module) -> FFNParts:
        raise NotImplementedError

    def attention_block(self, layer: nn.Module) -> nn.Module:
        """The whole attention sub-block of a layer (projections, softmax, output), for timing."""
        raise NotImplementedError

    def ffn_blocks(self, layer: nn.Module) -> list[nn.Module]:
        """The modules that together make the FFN sub-block (with activation), for timing."""
        raise NotImplementedError

    def head_modules(self, model: nn.Module) -> list[str]:
        """Names of the task-head modules (classifier, pooler) that compression should leave alone."""
        return []

    def token_type_embeddings(self, model: nn.Module) -> nn.Module | None:
        """The segment (token-type) embedding table, or None when the architecture has none."""
        return None

    def set_token_type_embeddings(self, model: nn.Module, module: nn.Module) -> None:
        raise SlimformerError(f"{type(model).__name__}: token-type embeddings cannot be replaced")

    def position_embeddings(self, model: nn.Module) -> nn.Embedding | None:
        """The learned absolute position embedding table, or None."""
        return None

    def pooler(self, model: nn.Module) -> nn.Module | None:
        """The [CLS] pooler that feeds the classifier, or None when the model has none."""
        return None

    def set_pooler(self, model: nn.Module, module: nn.Module) -> None:
        raise SlimformerError(f"{type(model).__name__}: the pooler cannot be replaced")

    # --- derived helpers -------------------------------------------------------------------------
    def num_heads(self, layer: nn.Module) -> int:
        parts = self.attention(layer)
        return parts.query.out_features // parts.head_dim

    def ffn_width(self, layer: nn.Module) -> int:
        return self.ffn(layer).up.out_features

    def component_of(self, name: str) -> str:
        """Map a module or parameter name to embeddings / attention / ffn / layernorm / head / other."""
        for pattern, comp in self.components:
            if re.search(pattern, name):
                return comp
        return "other"

    def layer_index(self, name: str) -> int | None:
        m = re.search(r"\.layers?\.(\d+)\.", "." + name + ".")
        return int(m.group(1)) if m else None


def register_adapter(cls: type[Adapter]) -> type[Adapter]:
    for t in cls.model_types:
        _ADAPTERS[t] = cls
    return cls


def supported_model_types() -> list[str]:
    return sorted(_ADAPTERS)


def get_adapter(model_or_type: nn.Module | str) -> Adapter:
    """The adapter for a model (by its config.model_type) or a model_type string."""
    mt = model_or_type if isinstance(model_or_type, str) else getattr(model_or_type.config, "model_type", "?")
    if mt not in _ADAPTERS:
        raise SlimformerError(
            f"unsupported architecture '{mt}': slimformer has adapters for {', '.join(supported_model_types())}"
        )
    return _ADAPTERS[mt]()


def submodule(root: nn.Module, path: str) -> nn.Module:
    mod = root
    for part in path.split("."):
        mod = getattr(mod, part)
    return mod
