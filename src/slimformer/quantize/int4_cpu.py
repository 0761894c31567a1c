"""Weight-only 4-bit (and 3-bit) Linears run by PyTorch's own CPU int4 kernel, without dequantizing.

`torch.ops.aten._weight_int4pack_mm_for_cpu` multiplies bf16 activations by int4 codes packed two per byte,
with one (scale, float zero) pair per group of 32, 64, 128 or 256 input columns: w = (q - 8) * scale + zero.
slimformer's asymmetric codes w = (q - z) * s map onto it exactly (zero = (8 - z) * s), so a GPTQ / AWQ / RTN
layer keeps its codes; 3-bit codes (0..7) fit the same kernel. What changes is arithmetic: the activations,
scales and zeros are rounded to bf16 (about 0.3% relative output error on a random layer, far below the 4-bit
rounding itself), and nothing is dequantized to fp32, so decoding reads half the weight bytes of an INT8 layer
and an eighth of fp32's. Used by `QLinear(kernel="int4")`; training and non-CPU tensors fall back to the
dequantized fp32 weight.
"""
from __future__ import annotations

import torch

GROUPS = (32, 64, 128, 256)


def available() -> bool:
    """This torch build has the CPU int4 kernel (torch >= 2.6)."""
    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and hasattr(
        torch.ops.aten, "_convert_weight_to_int4pack_for_cpu")


def missing() -> str | None:
    """Why this torch cannot run the kernel at all, or None when it can."""
    return None if available() else f"torch {torch.__version__} has no CPU int4 kernel"


def unsupported(out_features: int, in_features: int, bits: int, group_size: int | None) -> str | None:
    """Why a weight-only layer of this shape cannot run on the kernel, or None when it can."""
    if missing():
        return missing()
    if bits not in (3, 4):
        return f"{bits}-bit codes (the kernel takes 4-bit and 3-bit ones)"
    g = group_size or in_features
    if g not in GROUPS or in_features % g:
        return f"group size {g} (the kernel takes 32, 64, 128 or 256 dividing the {in_features} inputs)"
    if out_features % 16:
        return f"{out_features} outputs (the kernel needs a multiple of 16)"
    return None


def pack(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed codes, bf16 scales_and_zeros [groups, out, 2]) from codes [out, in] (values 0..15) and the
    per-group scale and integer zero [out, groups] of slimformer's grid."""
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32).contiguous(), 1)
    s = scale.float()
    sz = torch.stack([s.t(), ((8 - zero.float()) * s).t()], dim=-1)
    return packed, sz.to(torch.bfloat16).contiguous()


def matmul(x: torch.Tensor, packed: torch.Tensor, scales_zeros: torch.Tensor, group: int,
           bias: torch.Tensor | None) -> torch.Tensor:
    """x @ W.T (+ bias) on the int4 kernel, in x's dtype."""
    rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16).contiguous()
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, packed, group, scales_zeros).to(x.dtype)
    if bias is not None:
        y = y + bias.to(x.dtype)
    return y.reshape(*x.shape[:-1], y.shape[-1])
