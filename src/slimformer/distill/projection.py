"""An output projection of a sentence encoder to a smaller dimension, stored in the model and replayed on load.

Mean pooling is linear, so projecting every token state and then pooling equals pooling then projecting:
the projection is applied to `last_hidden_state` in a forward hook, and everything that mean-pools the
model's output (evaluation, `embed`, ONNX export, latency) sees the smaller embedding with no other change.
The Linear lives at `model.sf_embed_proj` (saved with the weights); the op `embedding_projection` re-creates
it and the hook when the model is loaded.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import check
from ..models import apply_op, register_op

PROJ = "sf_embed_proj"


def _project(model: nn.Module, args: Any, output: Any) -> Any:
    lin = getattr(model, PROJ, None)
    if lin is None:  # the body became an ONNX Runtime graph, which already holds the projection
        return output
    if isinstance(output, (tuple, list)):
        return (lin(output[0]), *output[1:])
    output["last_hidden_state"] = lin(output["last_hidden_state"])
    return output


@register_op("embedding_projection")
def _embedding_projection(model: nn.Module, dim: int, bias: bool = False) -> None:
    check(not hasattr(model, PROJ), "the model already has an embedding projection")
    model.add_module(PROJ, nn.Linear(model.config.hidden_size, int(dim), bias=bool(bias)))
    model.register_forward_hook(_project)  # a module-level function: deep copies call their own Linear


def add_projection(model: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Module:
    """Give model (a bare encoder) an output projection initialised to weight [dim, hidden] (and bias)."""
    apply_op(model, "embedding_projection", dim=int(weight.shape[0]), bias=bias is not None)
    lin = getattr(model, PROJ)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return model


def projection(model: nn.Module) -> nn.Linear | None:
    return getattr(model, PROJ, None)


def pca_directions(embeddings: torch.Tensor, dim: int) -> torch.Tensor:
    """The top `dim` right singular vectors [dim, d] of the (uncentred) embedding matrix: the projection
    that best preserves the embeddings' dot products (so their cosines) in the least-squares sense."""
    check(0 < dim <= embeddings.shape[1], f"dim must be in 1..{embeddings.shape[1]}, got {dim}")
    check(embeddings.shape[0] >= dim, f"a projection to {dim} dimensions needs at least {dim} sentences "
          f"(got {embeddings.shape[0]})")
    _, _, vh = torch.linalg.svd(embeddings.double(), full_matrices=False)
    return vh[:dim].float()
