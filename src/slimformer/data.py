"""Tokenised datasets and padding collators for the training engine and evaluation."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .tasks.base import Example


class EncodedDataset(torch.utils.data.Dataset):
    """Tokenised examples (unpadded); pad per batch with `collator(tokenizer)`."""

    def __init__(self, features: list[dict[str, Any]]):
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.features[i]


def encode(tokenizer: Any, examples: Sequence[Example], max_len: int = 128, with_labels: bool = True) -> EncodedDataset:
    texts = [ex.text for ex in examples]
    pairs = [ex.text_pair for ex in examples] if any(ex.text_pair is not None for ex in examples) else None
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_len)
    keys = list(enc.keys())
    feats = []
    for i, ex in enumerate(examples):
        f = {k: enc[k][i] for k in keys}
        if with_labels:
            f["labels"] = ex.label
        feats.append(f)
    return EncodedDataset(feats)


def collator(tokenizer: Any) -> Any:
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)


def dummy_inputs(tokenizer: Any, batch: int, seq_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch of random token ids of exactly seq_len (for latency and profiling)."""
    g = torch.Generator().manual_seed(seed)
    n = len(tokenizer) if tokenizer is not None else 30000
    ids = torch.randint(1000 if n > 2000 else 0, n, (batch, seq_len), generator=g)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if tokenizer is None or "token_type_ids" in getattr(tokenizer, "model_input_names", ["token_type_ids"]):
        out["token_type_ids"] = torch.zeros_like(ids)
    return out
