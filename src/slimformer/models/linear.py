"""Linear maps of either kind: `nn.Linear` (weight [out, in]) and transformers' `Conv1D` (GPT-2; weight [in, out]).

Structural ops slice output features (rows of a Linear) and input features; these helpers hide the layout.
"""
from __future__ import annotations

import torch
from torch import nn


def is_conv1d(m: nn.Module) -> bool:
    return type(m).__name__ == "Conv1D" and hasattr(m, "nf")


def is_linear(m: nn.Module) -> bool:
    """A module computing x @ W^T + b that structural ops may slice (nn.Linear or Conv1D)."""
    return isinstance(m, nn.Linear) or is_conv1d(m)


def out_features(m: nn.Module) -> int:
    return int(m.nf) if is_conv1d(m) else int(m.out_features)


def in_features(m: nn.Module) -> int:
    return int(m.weight.shape[0]) if is_conv1d(m) else int(m.in_features)


def weight_oi(m: nn.Module) -> torch.Tensor:
    """The weight as [out, in] (a view for Conv1D)."""
    return m.weight.t() if is_conv1d(m) else m.weight


def _param(t: torch.Tensor, like: nn.Parameter) -> nn.Parameter:
    return nn.Parameter(t.detach().clone().contiguous(), requires_grad=like.requires_grad)


def slice_out(m: nn.Module, idx: torch.Tensor) -> None:
    """Keep output features idx of m (in place)."""
    if is_conv1d(m):
        m.weight = _param(m.weight[:, idx], m.weight)
        m.nf = int(idx.numel())
    else:
        m.weight = _param(m.weight[idx], m.weight)
        m.out_features = int(idx.numel())
    if getattr(m, "bias", None) is not None:
        m.bias = _param(m.bias[idx], m.bias)


def slice_in(m: nn.Module, idx: torch.Tensor) -> None:
    """Keep input features idx of m (in place; the bias is unchanged)."""
    if is_conv1d(m):
        m.weight = _param(m.weight[idx], m.weight)
    else:
        m.weight = _param(m.weight[:, idx], m.weight)
        m.in_features = int(idx.numel())


def conv1d_as_linear(m: nn.Module) -> nn.Linear:
    """An nn.Linear computing exactly what the Conv1D m computes (weights copied, transposed)."""
    lin = nn.Linear(in_features(m), out_features(m), bias=m.bias is not None)
    with torch.no_grad():
        lin.weight.copy_(m.weight.t())
        if m.bias is not None:
            lin.bias.copy_(m.bias)
    lin.weight.requires_grad_(m.weight.requires_grad)
    return lin.to(m.weight.dtype)
