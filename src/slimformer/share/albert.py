"""Save a layer-shared BERT classifier as a stock ALBERT checkpoint (`AutoModel*.from_pretrained` loads it).

ALBERT's layer is BERT's post-LayerNorm layer with renamed modules, and its encoder runs
`num_hidden_layers` layers taken from `num_hidden_groups` equal consecutive groups: exactly
`share_layers` with equal consecutive groups. The conversion is exact when the embeddings are not
factorized: ALBERT's embedding size is then H and its `embedding_hidden_mapping_in` is the identity
(H*H extra parameters).

Not convertible (refused with an error): factorized word embeddings (ALBERT sums word, position and
token-type vectors and applies LayerNorm in E dimensions *before* projecting to H, whereas a factorized
BERT projects the word vector to H and normalises the H-wide sum; no weight mapping makes these equal),
groups that are not equal consecutive blocks, any other structural change (pruned heads or FFN,
factorized Linear layers, quantized modules, dropped pooler or token types), non-BERT models (RoBERTa's
position ids are offset by the padding index) and non-absolute position embeddings.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import check
from ..fsutil import atomic_dir
from ..models import get_adapter
from ..factorize.embeddings import FactorizedEmbedding
from .layers import sharing_groups

_LAYER_MAP = {  # ALBERT layer module -> BERT layer module
    "attention.query": "attention.self.query", "attention.key": "attention.self.key",
    "attention.value": "attention.self.value", "attention.dense": "attention.output.dense",
    "attention.LayerNorm": "attention.output.LayerNorm", "ffn": "intermediate.dense",
    "ffn_output": "output.dense", "full_layer_layer_norm": "output.LayerNorm",
}


def albert_groups(model: nn.Module) -> list[list[int]]:
    """The sharing groups if they fit ALBERT (equal consecutive blocks), else a SlimformerError."""
    groups = sharing_groups(model)
    n = sum(len(g) for g in groups)
    k = len(groups[0])
    ok = all(g == list(range(i * k, (i + 1) * k)) for i, g in enumerate(groups)) and len(groups) * k == n
    check(ok, f"to_albert: ALBERT needs equal groups of consecutive shared layers, the model has {groups}")
    return groups


def _check_plain_bert(model: nn.Module) -> None:
    from transformers import BertForSequenceClassification

    check(getattr(model.config, "model_type", None) == "bert" and isinstance(model, BertForSequenceClassification),
          f"to_albert: only BERT sequence classifiers convert to ALBERT, not {type(model).__name__}")
    emb = get_adapter(model).word_embeddings(model)
    check(not isinstance(emb, FactorizedEmbedding),
          "to_albert: factorized word embeddings cannot be expressed exactly in ALBERT (it normalises the "
          "E-wide embedding sum before projecting to H); save with slimformer.save instead")
    check(getattr(model.config, "position_embedding_type", "absolute") == "absolute",
          "to_albert: ALBERT has absolute position embeddings only")
    with torch.device("meta"):
        fresh = BertForSequenceClassification(model.config)
    want = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check(want == have, "to_albert: the model's structure was changed by another step (pruning, factorized "
          "layers, quantization, dropped pooler/token types); only shared layers convert to ALBERT")


def albert_config(model: nn.Module, num_groups: int) -> Any:
    from transformers import AlbertConfig

    c = model.config
    return AlbertConfig(
        vocab_size=c.vocab_size, embedding_size=c.hidden_size, hidden_size=c.hidden_size,
        num_hidden_layers=c.num_hidden_layers, num_hidden_groups=num_groups, inner_group_num=1,
        num_attention_heads=c.num_attention_heads, intermediate_size=c.intermediate_size, hidden_act=c.hidden_act,
        hidden_dropout_prob=c.hidden_dropout_prob, attention_probs_dropout_prob=c.attention_probs_dropout_prob,
        classifier_dropout_prob=getattr(c, "classifier_dropout", None) or c.hidden_dropout_prob,
        max_position_embeddings=c.max_position_embeddings, type_vocab_size=c.type_vocab_size,
        initializer_range=c.initializer_range, layer_norm_eps=c.layer_norm_eps, pad_token_id=c.pad_token_id,
        num_labels=c.num_labels, id2label=c.id2label, label2id=c.label2id, problem_type=c.problem_type,
        architectures=["AlbertForSequenceClassification"],
    )


def to_albert_model(model: nn.Module) -> nn.Module:
    """An AlbertForSequenceClassification computing the same function as the (layer-shared) BERT model."""
    from transformers import AlbertForSequenceClassification

    _check_plain_bert(model)
    groups = albert_groups(model)
    albert = AlbertForSequenceClassification(albert_config(model, len(groups))).eval()
    src = model.state_dict()
    h = model.config.hidden_size
    new: dict[str, torch.Tensor] = {}
    for k in ("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight",
              "LayerNorm.weight", "LayerNorm.bias"):
        new[f"albert.embeddings.{k}"] = src[f"bert.embeddings.{k}"]
    new["albert.encoder.embedding_hidden_mapping_in.weight"] = torch.eye(h, dtype=src["classifier.weight"].dtype)
    new["albert.encoder.embedding_hidden_mapping_in.bias"] = torch.zeros(h, dtype=src["classifier.weight"].dtype)
    for g, group in enumerate(groups):
        for a, b in _LAYER_MAP.items():
            for p in ("weight", "bias"):
                new[f"albert.encoder.albert_layer_groups.{g}.albert_layers.0.{a}.{p}"] = \
                    src[f"bert.encoder.layer.{group[0]}.{b}.{p}"]
    for p in ("weight", "bias"):
        new[f"albert.pooler.{p}"] = src[f"bert.pooler.dense.{p}"]
        new[f"classifier.{p}"] = src[f"classifier.{p}"]
    missing, unexpected = albert.load_state_dict(new, strict=False)
    check(not unexpected and not [m for m in missing if "position_ids" not in m and "token_type_ids" not in m],
          f"to_albert: weight mapping incomplete ({missing[:3]} {unexpected[:3]})")
    return albert


def to_albert(model: nn.Module, out_dir: str | os.PathLike, tokenizer: Any = None) -> Path:
    """Write model as a stock ALBERT checkpoint (config, safetensors, tokenizer) to out_dir, atomically."""
    albert = to_albert_model(model)
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        albert.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return out
