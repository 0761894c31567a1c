"""The data an architecture family is described by (specs) and the parts an adapter resolves on a model."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .linear import in_features, weight_oi


@dataclass(frozen=True)
class AttnSpec:
    """One attention block of a layer; paths are relative to the layer module."""

    kind: str                       # "self" or "cross"
    path: str                       # the module that splits heads (holds head-count attributes)
    q: str = ""
    k: str = ""
    v: str = ""
    o: str = ""
    qkv: str = ""                   # a fused [q | k | v] projection (GPT-2's c_attn) instead of q, k, v
    block: str = ""                 # the whole sub-block timed by the profile (default: path)
    head_attrs: tuple[str, ...] = ()   # attributes set to the new head count
    width_attrs: tuple[str, ...] = ()  # attributes set to heads * head_dim (all_head_size, split_size, ...)
    head_dim_attrs: tuple[str, ...] = ("head_dim", "attention_head_size", "key_value_proj_dim")
    norm: str = ""                  # pre-norm whose output feeds only q, k, v (pre-LN layers; "" when none)


@dataclass(frozen=True)
class FFNSpec:
    """The feed-forward block: input projections (those present of `up`; gated FFNs have two), one output."""

    up: tuple[str, ...]
    down: str
    blocks: tuple[str, ...] = ()    # modules the profile times as "ffn" (default: the projections)
    norm: str = ""                  # pre-norm whose output feeds only the `up` projections ("" when none)
    linear_up: str = ""             # gated FFN: the up projection whose output multiplies linearly into down's input


@dataclass(frozen=True)
class StackSpec:
    name: str                       # "encoder" or "decoder"
    layers: str                     # the ModuleList, relative to the backbone
    attention: tuple[AttnSpec, ...]
    ffn: FFNSpec
    count_keys: tuple[str, ...]     # config keys holding this stack's layer count
    ffn_keys: tuple[str, ...] = ()  # config keys holding this stack's FFN width (a fresh config of new size)
    head_keys: tuple[str, ...] = () # config keys holding this stack's attention head count


@dataclass(frozen=True)
class Family:
    """Where one architecture family keeps everything; paths are relative to the backbone unless noted."""

    model_types: tuple[str, ...]
    stacks: tuple[StackSpec, ...]
    word_embeddings: str
    backbones: tuple[str, ...] = ()    # attributes of task models that hold the backbone; the model itself last
    embeddings: tuple[str, ...] = ()   # every embedding-side module (timed as "embeddings"); default word emb.
    position_embeddings: str = ""
    token_type_embeddings: str = ""
    pooler: str = ""
    heads: tuple[str, ...] = ()        # task-head modules, relative to the task model (classifier, lm_head)
    hooks: dict[str, Callable[..., Any]] = field(default_factory=dict)  # "keep_heads", "keep_layers" extras
    width_keys: tuple[str, ...] = ()     # config keys holding the model width (d_model)
    head_dim_keys: tuple[str, ...] = ()  # config keys holding a head size set apart from the width (T5's d_kv)


@dataclass
class AttentionParts:
    """One attention block, resolved on a model: projections, head geometry and its unit name."""

    unit: str                       # "encoder.3.self"
    kind: str
    module: nn.Module
    q: nn.Module
    k: nn.Module
    v: nn.Module
    o: nn.Module
    heads: int
    kv_heads: int
    head_dim: int
    fused: bool = False             # q, k, v are one module (q is k is v)
    spec: AttnSpec | None = None
    norm: nn.Module | None = None   # the pre-norm feeding q, k, v only (None: post-LN or unknown)

    @property
    def units(self) -> int:
        """Prunable units: heads, or whole key/value groups under grouped-query attention."""
        return self.kv_heads

    @property
    def group(self) -> int:
        """Query heads per unit (1 without grouped-query attention)."""
        return self.heads // self.kv_heads

    def weight(self, role: str) -> torch.Tensor:
        """The [out, in] weight of projection role q/k/v/o (a slice of the fused matrix when fused)."""
        if role == "o":
            return weight_oi(self.o)
        w = weight_oi(getattr(self, role))
        if not self.fused:
            return w
        width = self.heads * self.head_dim
        start = {"q": 0, "k": width, "v": 2 * width}[role]
        return w[start:start + width]


@dataclass
class FFNParts:
    unit: str                       # "encoder.3"
    up: list[nn.Module]             # [up] or [gate, up]
    down: nn.Module
    blocks: list[nn.Module]
    norm: nn.Module | None = None       # the pre-norm feeding the up projections only
    linear_up: nn.Module | None = None  # gated FFN: down's input is linear in this projection's output

    @property
    def width(self) -> int:
        return in_features(self.down)


@dataclass
class Stack:
    name: str
    spec: StackSpec
    layers: nn.ModuleList
