"""ONNX Runtime transformer fusions on a float graph, checked against PyTorch before they are used.

ORT's optimizer (`onnxruntime.transformers.optimizer`, model type `bert`) turns the graph of the fusable
export (`to_onnx(fusable=True)`) into a few fused kernels per layer: Attention (QKV projection, scores,
mask, softmax and context in one op, which `quantize_dynamic` turns into QAttention), EmbedLayerNormalization,
SkipLayerNormalization and BiasGelu. On this kind of CPU that is what makes ORT INT8 ~3x faster than
PyTorch FP32 at batch 1 (docs/BENCHMARKS.md, section 4).

The optimizer takes one head count for the whole model; a head-pruned model has a different count per
layer, so each fused Attention node gets its own count back from its weight shape and the model's head size.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from torch import nn

from ..errors import SlimformerError, check
from ..export import parity
from ..models import get_adapter


@contextlib.contextmanager
def root_log_level(level: int) -> Iterator[None]:
    """Raise the root logger's level for the block (ORT's tools log through the root logger)."""
    root = logging.getLogger()
    before = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(before)


def fuse(path: Path, model: nn.Module, tokenizer: Any, atol: float = 1e-3) -> dict[str, Any]:
    """Fuse the float ONNX graph at `path` in place; returns the fused-op counts and the parity with torch.

    Raises SlimformerError (and leaves `path` untouched) when the model has no adapter or the fused graph's
    logits differ from PyTorch's by more than atol."""
    from onnx import helper
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    adapter = get_adapter(model)
    check(not adapter.is_multi_stack(model) and not getattr(model.config, "is_decoder", False)
          and adapter.stacks(model)[0].name == "encoder",
          "ORT fusion covers encoder models (BERT-style graphs) only")
    blocks = adapter.attention(model)
    heads = [a.heads for a in blocks]
    head_dim = blocks[0].head_dim
    first = next((h for h in heads if h > 0), 1)
    try:
        with root_log_level(logging.ERROR):  # the optimizer logs every pattern it did not find
            opt = optimize_model(str(path), model_type="bert", num_heads=first, hidden_size=first * head_dim,
                                 opt_level=0, optimization_options=FusionOptions("bert"))
    except Exception as e:  # an unfamiliar graph
        raise SlimformerError(f"ORT fusion failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    graph = opt.model
    fixed = 0
    for node in graph.graph.node:
        if node.op_type != "Attention":
            continue
        q_width = _qkv_widths(graph, node)[0]
        n = q_width // head_dim
        for attr in node.attribute:
            if attr.name == "num_heads" and attr.i != n:
                attr.CopyFrom(helper.make_attribute("num_heads", n))
                fixed += 1
    stats = {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}
    candidate = path.with_name(path.stem + ".fused.onnx")
    opt.save_model_to_file(str(candidate))  # adds the com.microsoft opset import
    diff = parity(candidate, model, tokenizer, seq_len=19)
    if diff > atol:
        candidate.unlink(missing_ok=True)
        raise SlimformerError(f"the ORT-fused graph differs from PyTorch by {diff:.2e} (> {atol:g})")
    candidate.replace(path)
    return {"fused": stats, "num_heads_fixed": fixed, "max_abs_diff": round(diff, 7)}


def _qkv_widths(graph: Any, node: Any) -> list[int]:
    """Output widths of the query, key and value projections packed into a fused Attention node."""
    for attr in node.attribute:
        if attr.name == "qkv_hidden_sizes":
            return list(attr.ints)
    weight = next(i for i in graph.graph.initializer if i.name == node.input[1])
    return [int(weight.dims[1]) // 3] * 3


def attention_modules(onnx_model: Any, torch_model: nn.Module) -> dict[str, list[str]]:
    """Fused Attention node name -> the names of the torch Linear layers packed into it (matched by value)."""
    from onnx import numpy_helper

    by_shape: dict[tuple, list[tuple[str, np.ndarray]]] = {}
    for name, mod in torch_model.named_modules():
        if isinstance(mod, nn.Linear):
            w = mod.weight.detach().float().numpy().T
            by_shape.setdefault(w.shape, []).append((name, w))
    inits = {i.name: i for i in onnx_model.graph.initializer}
    out: dict[str, list[str]] = {}
    for node in onnx_model.graph.node:
        if node.op_type != "Attention" or node.input[1] not in inits:
            continue
        packed = numpy_helper.to_array(inits[node.input[1]])
        names, start = [], 0
        for width in _qkv_widths(onnx_model, node):
            part = packed[:, start:start + width]
            start += width
            names += [n for n, w in by_shape.get(part.shape, []) if np.array_equal(part, w)][:1]
        out[node.name] = names
    return out
