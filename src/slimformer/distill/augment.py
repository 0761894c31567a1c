"""Data augmentation for task-specific distillation: altered copies of the training examples, labelled by the
teacher, so a small student sees many more inputs than the task's training split holds.

Rules (Tang et al. 2019, "Distilling Task-Specific Knowledge from BERT into Simple Neural Networks", section
3.3; TinyBERT's augmentation serves the same purpose with word replacement by a masked LM): every copy alters
each word of a text independently, with probability P_MASK into the tokenizer's mask token and with
probability P_SWAP into a word drawn from the training texts' own word frequencies (our stand-in for the
paper's same-part-of-speech replacement: no tagger needed, any language); then, with probability P_NGRAM, a
single-text example is cut to a random n-gram of 1 to 5 of its words (pairs keep their full texts: a cut
sentence changes what a pair means). Augmented copies carry no gold label: the teacher's prediction (argmax
for classification, its value for regression) becomes their label, and the soft targets their KD term.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from itertools import accumulate
from typing import Any, Sequence

import torch

from ..tasks.base import Example

P_MASK, P_SWAP, P_NGRAM, MAX_NGRAM = 0.1, 0.1, 0.25, 5


def _alter(words: list[str], rng: random.Random, mask: str | None, vocab: list[str], cum: list[int]
           ) -> list[str]:
    out = []
    for w in words:
        r = rng.random()
        if r < P_MASK:
            if mask is not None:
                out.append(mask)
        elif r < P_MASK + P_SWAP:
            out.append(rng.choices(vocab, cum_weights=cum)[0])
        else:
            out.append(w)
    return out or words


def _ngram(words: list[str], rng: random.Random) -> list[str]:
    n = min(len(words), rng.randint(1, MAX_NGRAM))
    start = rng.randint(0, len(words) - n)
    return words[start:start + n]


def augment_examples(examples: Sequence[Example], copies: int, seed: int, mask_token: str | None
                     ) -> list[Example]:
    """`copies` altered copies of every example (in order: all of copy 1, then copy 2, ...), deterministic in
    seed. `mask_token` None drops masked words instead. Labels are the originals' until `relabel`."""
    counts = Counter(w for ex in examples for t in (ex.text, ex.text_pair) if t for w in t.split())
    vocab, cum = list(counts), list(accumulate(counts.values()))
    rng = random.Random(seed)
    out = []
    for _ in range(copies):
        for ex in examples:
            words = _alter(ex.text.split(), rng, mask_token, vocab, cum)
            pair = None if ex.text_pair is None else " ".join(
                _alter(ex.text_pair.split(), rng, mask_token, vocab, cum))
            if pair is None and rng.random() < P_NGRAM:
                words = _ngram(words, rng)
            out.append(replace(ex, text=" ".join(words), text_pair=pair))
    return out


def relabel(dataset: Any, logits: torch.Tensor, first: int, target: str) -> int:
    """Give the features from index `first` on the teacher's label: argmax of its logits, or its output for a
    regression head (`target` 'regression'). Returns how many were relabelled."""
    labels = logits[first:, 0].tolist() if target == "regression" else logits[first:].argmax(-1).tolist()
    for i, lab in enumerate(labels):
        dataset[first + i]["labels"] = lab
    return len(labels)


def agreement(dataset: Any, logits: torch.Tensor, n: int, target: str) -> float | None:
    """How often the teacher agrees with the gold labels of the first n (original) examples (classification)."""
    if target == "regression" or n == 0:
        return None
    gold = torch.tensor([dataset[i]["labels"] for i in range(n)])
    return round(float((logits[:n].argmax(-1) == gold).float().mean()), 4)
