"""T5 (v1 and v1.1): no biases, relative position bias, ReLU or gated-GELU FFN (wi or wi_0 + wi_1).

T5 computes one relative position bias [1, heads, q, k] in the first layer of a stack and hands it to every
later layer. After head pruning the layers keep different heads, so each pruned attention block selects its
own heads from the full bias (a forward pre-hook; the full bias is passed on unchanged), and the first layer
keeps the full bias table. Dropping the first layer moves the bias table to the new first layer.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..arch import AttentionParts, AttnSpec, FFNSpec, Family, Stack, StackSpec, register_family


def _attn(kind: str, layer: int, name: str) -> AttnSpec:
    p = f"layer.{layer}.{name}"
    return AttnSpec(kind, p, q=f"{p}.q", k=f"{p}.k", v=f"{p}.v", o=f"{p}.o", block=f"layer.{layer}")


def _ffn(layer: int) -> FFNSpec:
    p = f"layer.{layer}.DenseReluDense"
    return FFNSpec(up=(f"{p}.wi", f"{p}.wi_0", f"{p}.wi_1"), down=f"{p}.wo", blocks=(f"layer.{layer}",))


def _select_heads_pre(mod: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Hand the block only its own heads of the stack's full position bias (computed here when it is absent)."""
    bias = kwargs.get("position_bias")
    if bias is None:
        hs = args[0] if args else kwargs["hidden_states"]
        kv, cache = kwargs.get("key_value_states"), kwargs.get("cache")
        past = 0
        if cache is not None and kv is None:
            sa = getattr(cache, "self_attention_cache", cache)
            past = sa.get_seq_length(mod.layer_idx)  # symbolic under torch.export: no int()
        q_len = hs.shape[1]
        k_len = kv.shape[1] if kv is not None else past + q_len
        if mod.has_relative_attention_bias:
            bias = mod.compute_bias(q_len, k_len, device=hs.device, past_seen_tokens=past)
        else:
            bias = torch.zeros((1, mod.n_heads, q_len, k_len), device=hs.device, dtype=hs.dtype)
    mod._sf_full_bias = bias
    kwargs = {**kwargs, "position_bias": bias[:, mod.sf_bias_heads]}
    return args, kwargs


def _restore_full_bias(mod: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
    full = mod.__dict__.pop("_sf_full_bias", None)
    return (output[0], full, *output[2:]) if full is not None else output


def _keep_heads(model: nn.Module, parts: AttentionParts, kept: list[int]) -> None:
    mod = parts.module
    before = getattr(mod, "sf_bias_heads", list(range(mod.n_heads)))
    mod.sf_bias_heads = [before[i] for i in kept]  # indices into the full (unpruned) bias
    if not getattr(mod, "_sf_bias_hooked", False):
        mod.register_forward_pre_hook(_select_heads_pre, with_kwargs=True)
        mod.register_forward_hook(_restore_full_bias, with_kwargs=True)
        mod._sf_bias_hooked = True


def _keep_layers(model: nn.Module, stack: Stack, old: nn.ModuleList, keep: list[int]) -> None:
    first_old = old[0].layer[0].SelfAttention
    first_new = stack_layers(model, stack)[0].layer[0].SelfAttention
    if first_new is not first_old and first_old.has_relative_attention_bias:
        first_new.relative_attention_bias = first_old.relative_attention_bias
        first_new.has_relative_attention_bias = True


def stack_layers(model: nn.Module, stack: Stack) -> nn.ModuleList:
    from ..arch import get_adapter

    return get_adapter(model).layers(model, stack.name)


FAMILY = register_family(Family(
    model_types=("t5",),
    backbones=("transformer",),
    stacks=(StackSpec("encoder", "encoder.block", (_attn("self", 0, "SelfAttention"),), _ffn(1),
                      count_keys=("num_layers",), ffn_keys=("d_ff",), head_keys=("num_heads",)),
            StackSpec("decoder", "decoder.block", (_attn("self", 0, "SelfAttention"),
                                                   _attn("cross", 1, "EncDecAttention")), _ffn(2),
                      count_keys=("num_decoder_layers",), ffn_keys=("d_ff",), head_keys=("num_heads",))),
    word_embeddings="shared",
    embeddings=("shared",),
    heads=("lm_head", "classification_head"),
    hooks={"keep_heads": _keep_heads, "keep_layers": _keep_layers},
    width_keys=("d_model",),
    head_dim_keys=("d_kv",),
))
