"""Language modelling: raw text, a causal LM, perplexity with a sliding window.

Perplexity follows the Hugging Face perplexity guide: the split's text is tokenized as one stream; windows of
`context` tokens advance by `stride`, and only the tokens not scored by an earlier window count (each scored
token sees up to context - stride tokens of history). ppl = exp(total NLL / scored tokens). `max_eval_tokens`
cuts the stream for quick runs; final figures use the whole split.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch

from ..errors import SlimformerError, check

from .base import Task

SPLITS = {"train": "train", "valid": "dev", "validation": "dev", "val": "dev", "dev": "dev", "test": "test"}


@dataclass(frozen=True)
class Text:
    text: str
    text_pair: None = None


@dataclass
class LanguageModelingTask(Task):
    name: str
    splits: dict[str, list[Text]]
    context: int = 1024
    stride: int = 512
    max_eval_tokens: int | None = None
    metrics: list[str] = field(default_factory=lambda: ["perplexity"])
    kind: ClassVar[str] = "language_modeling"
    head: ClassVar[str] = "AutoModelForCausalLM"
    distill_target: ClassVar[str] = "token_logits"
    generative: ClassVar[bool] = True

    @property
    def default_split(self) -> str:
        return "test" if "test" in self.splits else "dev"

    def stream(self, tokenizer: Any, split: str, max_documents: int | None = None) -> list[int]:
        """The split's text as one token stream (documents joined by blank lines, as the HF guide does)."""
        docs = self.split(split)[:max_documents] if max_documents else self.split(split)
        text = "\n\n".join(t.text for t in docs)
        return list(tokenizer(text)["input_ids"])

    def encode(self, tokenizer: Any, examples: Sequence[Text], max_len: int = 128, with_labels: bool = True) -> Any:
        """Blocks of max_len tokens cut from the concatenated examples (labels = inputs; the model shifts)."""
        from ..data import EncodedDataset

        check(max_len >= 8, f"language modelling needs blocks of at least 8 tokens, got {max_len}")
        ids: list[int] = []
        for t in examples:
            ids.extend(tokenizer(t.text + "\n\n")["input_ids"])
        feats = []
        for s in range(0, len(ids) - max_len + 1, max_len):
            block = ids[s:s + max_len]
            f = {"input_ids": block, "attention_mask": [1] * len(block)}
            if with_labels:
                f["labels"] = list(block)
            feats.append(f)
        check(bool(feats), f"{self.name}: not enough text for one block of {max_len} tokens")
        return EncodedDataset(feats)

    def collator(self, tokenizer: Any, model: Any = None) -> Any:
        return BlockCollator()

    def evaluate(self, model: Any, tokenizer: Any, split: str = "test", max_len: int = 128,
                 max_examples: int | None = None) -> dict[str, float]:
        ids = self.stream(tokenizer, split, max_examples)  # an example is a document (a line of the file)
        if self.max_eval_tokens:
            ids = ids[: self.max_eval_tokens]
        return {"perplexity": perplexity(model, ids, self.context, self.stride)}

    def describe(self) -> str:
        return super().describe() + f", context {self.context}, stride {self.stride}"


class BlockCollator:
    """Stacks equal-length blocks; pads with the first token and masks padding out of the labels."""

    def __call__(self, feats: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        n = max(len(f["input_ids"]) for f in feats)
        out: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
        for f in feats:
            pad = n - len(f["input_ids"])
            out["input_ids"].append(list(f["input_ids"]) + [f["input_ids"][0]] * pad)
            out["attention_mask"].append(list(f["attention_mask"]) + [0] * pad)
            out["labels"].append(list(f.get("labels", f["input_ids"])) + [-100] * pad)
        if "labels" not in feats[0]:
            out.pop("labels")
        return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}


def perplexity(model: Any, ids: Sequence[int], context: int = 1024, stride: int = 512) -> float:
    """Sliding-window perplexity of a token stream (HF guide); each token is scored once."""
    from ..progress import track

    check(len(ids) >= 2, "perplexity needs at least 2 tokens")
    check(0 < stride <= context, f"stride must be in (0, context={context}], got {stride}")
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    check(limit is None or context <= limit, f"context {context} exceeds the model's {limit} positions")
    data = torch.tensor(ids, dtype=torch.long)[None]
    nll, count, prev_end = 0.0, 0, 0
    starts = range(0, data.shape[1], stride)
    for begin in track(starts, desc="perplexity", total=len(starts)):
        end = min(begin + context, data.shape[1])
        target_len = end - prev_end  # tokens not scored before
        window = data[:, begin:end]
        labels = window.clone()
        labels[:, :-target_len] = -100
        with torch.inference_mode():
            logits = model(input_ids=window).logits.float()
        # position t predicts token t + 1
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        tgt = labels[:, 1:]
        mask = tgt.ne(-100)
        if mask.any():
            nll -= float(logp.gather(-1, tgt.clamp_min(0)[..., None])[..., 0][mask].sum())
            count += int(mask.sum())
        prev_end = end
        if end == data.shape[1]:
            break
    return math.exp(nll / max(count, 1))


def load_text(data: str | Path, name: str = "language_modeling", context: int = 1024, stride: int = 512,
              max_eval_tokens: int | None = None, **_: Any) -> LanguageModelingTask:
    """A directory of train/valid/test .txt files (WikiText style), or one text file of any name (used as train
    and test).

    Without a train file, the valid text is the training/calibration text (WikiText-2 as shipped here)."""
    p = Path(data).expanduser()
    check(p.exists(), f"{name}: data path not found: {p}")
    files = sorted(p.iterdir()) if p.is_dir() else [p]
    splits: dict[str, list[Text]] = {}
    for f in files:
        split = SPLITS.get(f.stem.lower().replace("wiki.", "").split(".")[0])
        if p.is_file():
            split = "train"
        if split and (p.is_file() or f.suffix.lower() in (".txt", ".raw", ".tokens", "")):  # a named file: any name
            splits[split] = _read(f)
    check(bool(splits), f"{p}: no train/valid/test .txt files")
    if "train" not in splits:
        splits["train"] = splits.get("dev") or next(iter(splits.values()))
    if p.is_file():
        splits["test"] = splits["train"]
    check(stride <= context, f"stride {stride} must not exceed context {context}")
    return LanguageModelingTask(name=name, splits=splits, context=context, stride=stride,
                                max_eval_tokens=max_eval_tokens)


def _read(path: Path) -> list[Text]:
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SlimformerError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    docs = [d.strip() for d in raw.split("\n") if d.strip()]
    check(bool(docs), f"{path}: no text")
    return [Text(d) for d in docs]
