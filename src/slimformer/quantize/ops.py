"""Replayable structural ops that swap nn.Linear / nn.Embedding for their quantized versions, and selection.

The op quantizes whatever float weights the module holds (round to nearest). On reload, `models.load`
replays it on a freshly initialised model (giving buffers of the right shape and dtype) and then loads the
saved integer tensors strictly, so GPTQ codes or calibrated activation ranges come back exactly.
"""
from __future__ import annotations

import copy
import re
import sys
from typing import Any, Sequence

from torch import nn

from ..errors import SlimformerError
from ..models import apply_op, get_adapter, register_op
from ..models.linear import conv1d_as_linear, is_conv1d
from . import int4_cpu
from .modules import Act, QEmbedding, QLinear


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


@register_op("quantize_linear")
def _quantize_linear(model: nn.Module, modules: list[str], bits: int = 8, group_size: int | None = None,
                     act: Act = "dynamic") -> None:
    done: dict[tuple[int, int], QLinear] = {}
    for name in modules:
        parent, child = _parent(model, name)
        lin = getattr(parent, child)
        if not isinstance(lin, nn.Linear):
            raise SlimformerError(f"quantize_linear: {name} is {type(lin).__name__}, not a Linear")
        # Linears holding the same weight and bias (shared layers) get one QLinear, stored once; not under static
        # activations, whose calibrated input ranges belong to one call site
        key = (id(lin.weight), id(lin.bias))
        q = done.get(key) if act != "static" else None
        q = q if q is not None else QLinear.from_linear(lin, bits, group_size, act)
        done[key] = q
        setattr(parent, child, q)


@register_op("quantize_embedding")
def _quantize_embedding(model: nn.Module, modules: list[str], bits: int = 8, group_size: int | None = None) -> None:
    for name in modules:
        parent, child = _parent(model, name)
        emb = getattr(parent, child)
        if not isinstance(emb, nn.Embedding):
            raise SlimformerError(f"quantize_embedding: {name} is {type(emb).__name__}, not an Embedding")
        setattr(parent, child, QEmbedding.from_embedding(emb, bits, group_size))


@register_op("untie_lm_head")
def _untie_lm_head(model: nn.Module) -> None:
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if not isinstance(head, nn.Linear):
        raise SlimformerError("quantize_weights: lm_head applies to models whose output layer is a Linear "
                              f"(this one has {type(head).__name__})")
    if emb is not None and head.weight is getattr(emb, "weight", None):
        head.weight = nn.Parameter(emb.weight.detach().clone())
    for cfg in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        cfg.tie_word_embeddings = False


@register_op("share_head_codes")
def _share_head_codes(model: nn.Module) -> None:
    head, emb = model.get_output_embeddings(), get_adapter(model).word_embeddings(model)
    if not isinstance(head, QLinear) or head.act != "none":
        raise SlimformerError("share_head_codes: the LM head is not a weight-only quantized layer")
    q = QEmbedding(head.out_features, head.in_features, getattr(emb, "padding_idx", None), head.bits,
                   head.group_size)
    q.qweight, q.scale, q.zero = head.qweight, head.scale, head.zero  # the same tensors: stored once
    parent, child = _parent(model, next(n for n, m in model.named_modules() if m is emb))
    setattr(parent, child, q)


def head_tied(model: nn.Module) -> bool:
    """The model's output layer shares its weight with the input embeddings (a tied LM head)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return head is not None and _ties_embedding(model, head)


def untie_lm_head(model: nn.Module) -> str:
    """Give a tied LM head its own copy of the embedding table (recorded for reload), so the head and the
    table can be quantized each on its own; returns the head's module name."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        raise SlimformerError("quantize_weights: lm_head needs a model with an output layer (a language model)")
    apply_op(model, "untie_lm_head")
    head = model.get_output_embeddings()
    return next(n for n, m in model.named_modules() if m is head)


def quantize_linears(model: nn.Module, names: Sequence[str], bits: int = 8, group_size: int | None = None,
                     act: Act = "dynamic") -> None:
    """Swap the named Linear modules for QLinear (recorded for reload)."""
    if names:
        apply_op(model, "quantize_linear", modules=list(names), bits=bits, group_size=group_size, act=act)


def quantize_embeddings(model: nn.Module, bits: int = 8, group_size: int | None = None) -> list[str]:
    """Quantize the word-embedding table (the largest tensor of a small encoder). A table shared with an output
    layer (tied LM head) or used by several modules is left alone: quantizing one use would untie them."""
    adapter = get_adapter(model)
    emb = adapter.word_embeddings(model)
    if not isinstance(emb, nn.Embedding) or embedding_shared(model):
        return []
    name = next(n for n, m in model.named_modules() if m is emb)
    d = emb.embedding_dim
    group_size = group_size if group_size and group_size < d and d % group_size == 0 else None
    apply_op(model, "quantize_embedding", modules=[name], bits=bits, group_size=group_size)
    return [name]


@register_op("weight_kernel")
def _weight_kernel(model: nn.Module, modules: list[str], kernel: str) -> None:
    if kernel == "int4" and int4_cpu.missing():  # saved where torch had the kernel, loaded where it has not
        print(f"{len(modules)} layers saved to run on torch's CPU int4 kernel dequantize instead: "
              f"{int4_cpu.missing()}", file=sys.stderr, flush=True)
        return
    for name in modules:
        model.get_submodule(name).kernel = kernel


def use_weight_kernel(model: nn.Module, kernel: str = "int4") -> dict[str, Any]:
    """Run the model's weight-only QLinears on `kernel` ("int4": torch's CPU int4 kernel, "dequant": fp32
    weights dequantized once), recorded so a reload runs the same way; layers the kernel cannot take keep
    dequantizing. Returns {"kernel", "layers": [names switched], "kept": {name: why not}}."""
    switched, kept = [], {}
    for name, m in model.named_modules():
        if isinstance(m, QLinear) and m.act == "none" and m.kernel != kernel:
            why = kernel == "int4" and int4_cpu.unsupported(m.out_features, m.in_features, m.bits, m.group_size)
            if why:
                kept[name] = why
            else:
                switched.append(name)
    if switched:
        apply_op(model, "weight_kernel", modules=switched, kernel=kernel)
    return {"kernel": kernel, "layers": switched, "kept": kept}


def dequantizing(model: nn.Module) -> nn.Module:
    """`model` itself, or when some layers run on the int4 kernel a copy whose layers all dequantize (what the
    ONNX exporters trace and check against: the kernel's bf16 arithmetic has no ONNX form)."""
    if not any(isinstance(m, QLinear) and m.kernel != "dequant" for m in model.modules()):
        return model
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if isinstance(m, QLinear):
            m.kernel = "dequant"
    return twin


@register_op("conv1d_to_linear")
def _conv1d_to_linear(model: nn.Module) -> None:
    for name, mod in list(model.named_modules()):
        if is_conv1d(mod):
            parent, child = _parent(model, name)
            setattr(parent, child, conv1d_as_linear(mod))


def linearize(model: nn.Module) -> nn.Module:
    """Swap transformers' Conv1D layers (GPT-2) for nn.Linear computing the same map, so the INT8 and low-rank
    paths that work on nn.Linear see them (recorded so the model reloads)."""
    if any(is_conv1d(m) for m in model.modules()):
        apply_op(model, "conv1d_to_linear")
    return model


def embedding_shared(model: nn.Module) -> bool:
    """The word-embedding table is tied to an output layer or reached from more than one module path."""
    emb = get_adapter(model).word_embeddings(model)
    users = [n for n, m in model.named_modules(remove_duplicate=False) if m is emb]
    w = getattr(emb, "weight", None)
    tied = any(getattr(m, "weight", None) is w for m in model.modules() if m is not emb)
    return tied or len(users) > 1


def select_linears(model: nn.Module, include: Sequence[str] | None = None, exclude: Sequence[str] = (),
                   skip_head: bool = True) -> list[str]:
    """Names of nn.Linear modules matching any `include` regex (all when None), none of `exclude`, and
    (when skip_head) outside the task head named by the adapter."""
    heads = get_adapter(model).head_modules(model) if skip_head else []
    out = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear) or _ties_embedding(model, mod):
            continue
        if any(name == h or name.startswith(h + ".") for h in heads):
            continue
        if include is not None and not any(re.search(p, name) for p in include):
            continue
        if any(re.search(p, name) for p in exclude):
            continue
        out.append(name)
    return out


def _ties_embedding(model: nn.Module, mod: nn.Module) -> bool:
    """An output projection sharing its weight with the word embeddings (a tied LM head)."""
    emb = get_adapter(model).word_embeddings(model)
    return getattr(emb, "weight", None) is not None and getattr(mod, "weight", None) is emb.weight
