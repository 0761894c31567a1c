"""Tokenised datasets, padding collators and the dummy inputs latency is measured on."""
from __future__ import annotations

from typing import Any, Sequence

import torch


class EncodedDataset(torch.utils.data.Dataset):
    """Tokenised examples (unpadded); pad per batch with the task's collator."""

    def __init__(self, features: list[dict[str, Any]]):
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.features[i]


def encode_texts(tokenizer: Any, examples: Sequence[Any], max_len: int = 128,
                 labels: Sequence[Any] | None = None) -> EncodedDataset:
    """Tokenise examples' text (and text_pair) into features, with `labels` when given."""
    texts = [ex.text for ex in examples]
    pairs = [ex.text_pair for ex in examples] if any(ex.text_pair is not None for ex in examples) else None
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_len)
    keys = list(enc.keys())
    feats = []
    for i in range(len(examples)):
        f = {k: enc[k][i] for k in keys}
        if labels is not None:
            f["labels"] = labels[i]
        feats.append(f)
    return EncodedDataset(feats)


def encode(tokenizer: Any, examples: Sequence[Any], max_len: int = 128, with_labels: bool = True) -> EncodedDataset:
    """Classification-style encoding (kept for callers that have no task object)."""
    return encode_texts(tokenizer, examples, max_len, [ex.label for ex in examples] if with_labels else None)


def collator(tokenizer: Any) -> Any:
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)


def dummy_inputs(tokenizer: Any, batch: int, seq_len: int, seed: int = 0, model: Any = None) -> dict[str, torch.Tensor]:
    """A batch of random token ids of exactly seq_len (for latency and profiling). An encoder-decoder also gets
    decoder inputs of the same length (a teacher-forced forward)."""
    g = torch.Generator().manual_seed(seed)
    n = len(tokenizer) if tokenizer is not None else 30000
    config = getattr(model, "config", None)
    if config is not None:
        n = min(n, int(getattr(config, "vocab_size", n) or n))
    ids = torch.randint(1000 if n > 2000 else 0, n, (batch, seq_len), generator=g)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if "token_type_ids" in _accepted_inputs(model, tokenizer):
        out["token_type_ids"] = torch.zeros_like(ids)
    if getattr(config, "is_encoder_decoder", False):
        dec = torch.randint(1000 if n > 2000 else 0, n, (batch, seq_len), generator=g)
        out["decoder_input_ids"] = dec
    return out


def _accepted_inputs(model: Any, tokenizer: Any) -> set[str]:
    """Input names the model's forward takes (a module), else those the tokenizer produces."""
    import inspect

    if isinstance(model, torch.nn.Module):
        return set(inspect.signature(model.forward).parameters)
    names = getattr(tokenizer, "model_input_names", None) if tokenizer is not None else None
    return set(names) if names else {"input_ids", "attention_mask", "token_type_ids"}
