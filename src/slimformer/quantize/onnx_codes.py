"""A weight-only 4-bit model's own codes (RTN, GPTQ or AWQ from `quantize_weights`) on ONNX Runtime's
`MatMulNBits` kernel, instead of ONNX Runtime re-quantizing float weights by rounding.

The model is exported as its float twin (every weight-only layer holding its dequantized weight, bit for bit);
each MatMul of the graph whose constant weight equals a 4-bit layer's dequantized weight then becomes a
MatMulNBits node fed with that layer's codes, fp32 scales and packed zero points. The layouts agree: our codes
are packed two per byte along the input dimension, low nibble first, one (scale, zero) per group of
`group_size` inputs, which is MatMulNBits' [N, blocks, block/2] blob with asymmetric zero points. A group size
that is not a power of two >= 16 (or one scale per row over a width that is not) has no MatMulNBits form: those
layers stay fp32 MatMuls, and the report says how many.
"""
from __future__ import annotations

import copy
import hashlib
import os
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .modules import QEmbedding, QLinear, unpack
from .onnx_int4 import OwnCodes, _fold_weight_transposes, input_users, pack_zero_points, write_rewritten


def _block(q: QLinear) -> int | None:
    """The MatMulNBits block size of a weight-only 4-bit layer, or None when it has none."""
    if q.act != "none" or q.bits != 4:
        return None
    b = q.group_size or q.in_features
    return b if b >= 16 and b & (b - 1) == 0 else None


def carried_layers(model: nn.Module) -> list[QLinear]:
    """The weight-only 4-bit layers whose codes MatMulNBits can take as they are (shared layers once)."""
    seen: dict[int, QLinear] = {}
    for m in model.modules():
        if isinstance(m, QLinear) and _block(m) is not None:
            seen.setdefault(id(m), m)
    return list(seen.values())


def table_codes(model: nn.Module) -> Callable[[np.ndarray], OwnCodes | None] | None:
    """For quantize_gathers_4bit: a table's own 4-bit codes when it is the dequantized weight of one of the
    model's 4-bit QEmbeddings whose group is a GatherBlockQuantized block (a power of two >= 16); None when the
    model has no such table."""
    mine: dict[str, OwnCodes] = {}
    for m in model.modules():
        block = (m.group_size or m.embedding_dim) if isinstance(m, QEmbedding) and m.bits == 4 else 0
        if block >= 16 and block & (block - 1) == 0:
            with torch.no_grad():
                mine[_key(m.weight.numpy())] = (unpack(m.qweight, 4, m.embedding_dim), m.scale.float(), m.zero,
                                                block)
    return (lambda table: mine.get(_key(table))) if mine else None


def dequantized_twin(model: nn.Module) -> nn.Module:
    """A copy of `model` with every weight-only QLinear / QEmbedding replaced by the float module holding its
    dequantized weight (shared modules stay shared), for the torch exporter."""
    twin = copy.deepcopy(model)
    made: dict[int, nn.Module] = {}
    for name, mod in list(twin.named_modules()):
        if isinstance(mod, QLinear) and mod.act == "none":
            new = made.get(id(mod))
            if new is None:
                new = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None)
                new.weight.data.copy_(mod.dequantized_weight())
                if mod.bias is not None:
                    new.bias.data.copy_(mod.bias.data.float())
        elif isinstance(mod, QEmbedding):
            new = made.get(id(mod)) or nn.Embedding(mod.num_embeddings, mod.embedding_dim, mod.padding_idx,
                                                    _weight=mod.weight.detach().clone())
        else:
            continue
        made[id(mod)] = new
        parent_name, _, child = name.rpartition(".")
        setattr(twin.get_submodule(parent_name) if parent_name else twin, child, new)
    return twin.eval()


def _key(weight_kn: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(weight_kn, dtype=np.float32).tobytes()).hexdigest()


def _nbits_tensors(q: QLinear) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(B [N, blocks, block/2] uint8, scales [N, blocks] fp32, zero points [N, ceil(blocks/2)] uint8, block)."""
    block = _block(q)
    assert block is not None
    n, k = q.out_features, q.in_features
    blocks = k // block
    b = q.qweight.detach().numpy().reshape(n, blocks, block // 2)
    scales = q.scale.detach().float().numpy().reshape(n, blocks)
    zp = pack_zero_points(q.zero.detach().numpy().reshape(n, blocks))
    return np.ascontiguousarray(b), np.ascontiguousarray(scales), zp, block


def carry_codes(path: str | os.PathLike, layers: list[QLinear], accuracy_level: int = 4) -> dict[str, Any]:
    """Rewrite the ONNX graph at `path` in place: every MatMul whose constant weight is one of `layers`'
    dequantized weights becomes MatMulNBits with that layer's codes. Returns counts for the export report."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    _fold_weight_transposes(model)
    by_key: dict[str, QLinear] = {}
    with torch.no_grad():
        for q in layers:
            by_key[_key(q.dequantized_weight().t().numpy())] = q
    inits = {i.name: i for i in model.graph.initializer}
    users = input_users(model)
    replaced, dropped, nodes = 0, set(), []
    for node in model.graph.node:
        w = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        arr = numpy_helper.to_array(w) if w is not None and len(w.dims) == 2 else None
        q = by_key.get(_key(arr)) if arr is not None and arr.dtype == np.float32 else None
        if q is None:
            nodes.append(node)
            continue
        b, scales, zp, block = _nbits_tensors(q)
        stem = f"{w.name}_nbits{replaced}"
        model.graph.initializer.extend([numpy_helper.from_array(b, f"{stem}_B"),
                                        numpy_helper.from_array(scales, f"{stem}_scales"),
                                        numpy_helper.from_array(zp, f"{stem}_zero_points")])
        attrs = {"K": q.in_features, "N": q.out_features, "bits": 4, "block_size": block}
        if accuracy_level:
            attrs["accuracy_level"] = accuracy_level
        nodes.append(helper.make_node("MatMulNBits", [node.input[0], f"{stem}_B", f"{stem}_scales", f"{stem}_zero_points"],
                                      list(node.output), name=f"{node.name or stem}_Q4", domain="com.microsoft", **attrs))
        users[w.name] -= 1
        if users[w.name] == 0:
            dropped.add(w.name)
        replaced += 1
    write_rewritten(model, nodes, dropped, path)
    return {"carried_matmuls": replaced, "layers_with_codes": len(layers), "accuracy_level": accuracy_level}
