"""Translation: parallel text, an encoder-decoder model, beam-search generation scored by sacreBLEU.

Data: a directory of parallel plain-text files `{split}.{lang}` (Multi30k: train, val, test_2016_flickr, ...),
or tables (.tsv/.csv/.jsonl) with one column per language (or `source`/`target`, or HF's `translation`
dict). The direction is chosen with `src`/`tgt`. BLEU and chrF are computed by sacreBLEU on detokenized
(decoded) output against the raw references; the signature is kept in `last_signature`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch

from ..errors import SlimformerError, check
from .base import Task
from .files import _records, require_file

SPLITS = {"train": "train", "val": "dev", "valid": "dev", "validation": "dev", "dev": "dev", "test": "test"}


@dataclass(frozen=True)
class Pair:
    text: str      # source sentence
    target: str


@dataclass
class TranslationTask(Task):
    name: str
    splits: dict[str, list[Pair]]
    src: str = "src"
    tgt: str = "tgt"
    beams: int = 5
    max_new_tokens: int = 128
    metrics: list[str] = field(default_factory=lambda: ["bleu", "chrf"])
    kind: ClassVar[str] = "translation"
    head: ClassVar[str] = "AutoModelForSeq2SeqLM"
    distill_target: ClassVar[str] = "token_logits"
    generative: ClassVar[bool] = True
    last_signature: str = ""

    def texts(self, split: str = "train") -> list[str]:
        return [p.text for p in self.split(split)]

    def encode(self, tokenizer: Any, examples: Sequence[Pair], max_len: int = 128, with_labels: bool = True) -> Any:
        from ..data import EncodedDataset

        src = [p.text for p in examples]
        enc = tokenizer(src, text_target=[p.target for p in examples] if with_labels else None,
                        truncation=True, max_length=max_len)
        keys = [k for k in enc.keys() if k != "token_type_ids"]
        return EncodedDataset([{k: enc[k][i] for k in keys} for i in range(len(examples))])

    def collator(self, tokenizer: Any, model: Any = None) -> Any:
        from transformers import DataCollatorForSeq2Seq

        return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100, pad_to_multiple_of=8)

    def translate(self, model: Any, tokenizer: Any, sources: Sequence[str], max_len: int = 128,
                  beams: int | None = None, batch_size: int = 32, max_new_tokens: int | None = None) -> list[str]:
        """Decoded translations, in input order (length-sorted batches)."""
        from ..progress import track

        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        out: list[str] = [""] * len(sources)
        gen_kw = dict(num_beams=beams or self.beams, max_new_tokens=max_new_tokens or self.max_new_tokens,
                      do_sample=False)
        for s in track(range(0, len(order), batch_size), desc="translate", total=math.ceil(len(order) / batch_size)):
            idx = order[s:s + batch_size]
            enc = tokenizer([sources[i] for i in idx], truncation=True, max_length=max_len, padding=True,
                            return_tensors="pt")
            enc.pop("token_type_ids", None)
            with torch.inference_mode():
                ids = model.generate(**enc, **gen_kw)
            for i, text in zip(idx, tokenizer.batch_decode(ids, skip_special_tokens=True)):
                out[i] = text.strip()
        return out

    def evaluate(self, model: Any, tokenizer: Any, split: str = "dev", max_len: int = 128,
                 max_examples: int | None = None) -> dict[str, float]:
        check(hasattr(model, "generate"), "translation evaluation needs a PyTorch encoder-decoder model "
              "(generation); an exported graph cannot be scored here")
        pairs = self.split(split)[:max_examples] if max_examples else self.split(split)
        hyps = self.translate(model, tokenizer, [p.text for p in pairs], max_len)
        return bleu_chrf(hyps, [p.target for p in pairs], self)


def bleu_chrf(hyps: list[str], refs: list[str], task: TranslationTask | None = None) -> dict[str, float]:
    """sacreBLEU corpus BLEU and chrF (default settings: 13a tokenization of detokenized text)."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(), CHRF()
    out = {"bleu": float(bleu.corpus_score(hyps, [refs]).score), "chrf": float(chrf.corpus_score(hyps, [refs]).score)}
    if task is not None:
        task.last_signature = f"{bleu.get_signature()} | {chrf.get_signature()}"
    return out


def load_translation(data: str | Path, src: str | None = None, tgt: str | None = None, name: str = "translation",
                     beams: int = 5, max_new_tokens: int = 128, **_: Any) -> TranslationTask:
    """Parallel files `{split}.{lang}` in a directory, or tables with a column per side."""
    p = Path(data).expanduser()
    check(p.exists(), f"{name}: data path not found: {p}")
    splits: dict[str, list[Pair]] = {}
    if p.is_dir() and not any(f.suffix.lower() in (".tsv", ".csv", ".jsonl") for f in p.iterdir()):
        langs = sorted({f.suffix[1:] for f in p.iterdir() if f.is_file() and f.suffix})
        check(len(langs) >= 2, f"{p}: expected parallel files like train.en / train.de")
        src = src or langs[0]
        tgt = tgt or next(lang for lang in langs if lang != src)
        check(src in langs and tgt in langs, f"{p}: no files for languages {src!r} and {tgt!r} (found {langs})")
        for f in sorted(p.glob(f"*.{src}")):
            other = f.with_suffix(f".{tgt}")
            if other.is_file():
                splits[SPLITS.get(f.stem, f.stem)] = _parallel(f, other)
    else:
        files = sorted(p.iterdir()) if p.is_dir() else [p]
        for f in files:
            if f.suffix.lower() in (".tsv", ".csv", ".jsonl"):
                rows, src, tgt = _table(f, src, tgt)
                splits[SPLITS.get(f.stem.lower(), f.stem.lower())] = rows
    check("train" in splits or len(splits) > 0, f"{p}: no parallel data found")
    return TranslationTask(name=name, splits=splits, src=str(src), tgt=str(tgt), beams=beams,
                           max_new_tokens=max_new_tokens)


def _lines(path: Path) -> list[str]:
    try:
        return require_file(path).read_text(encoding="utf-8").rstrip("\n").split("\n")
    except UnicodeDecodeError as e:
        raise SlimformerError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e


def _parallel(a: Path, b: Path) -> list[Pair]:
    sa, sb = _lines(a), _lines(b)
    check(len(sa) == len(sb), f"{a.name} has {len(sa)} lines but {b.name} has {len(sb)}: not parallel")
    out = [Pair(x.strip(), y.strip()) for x, y in zip(sa, sb)]
    empty = [i for i, q in enumerate(out) if not q.text or not q.target]
    check(not empty, f"{a.name}:{empty[0] + 1 if empty else 0}: empty sentence in a parallel pair")
    return out


def _table(path: Path, src: str | None, tgt: str | None) -> tuple[list[Pair], str, str]:
    records = list(_records(require_file(path)))
    check(bool(records), f"{path}: no rows")
    first = records[0]
    if "translation" in first and isinstance(first["translation"], dict):
        records = [r["translation"] for r in records]
        first = records[0]
    cols = list(first)
    src = src or ("source" if "source" in cols else cols[0])
    tgt = tgt or ("target" if "target" in cols else next((c for c in cols if c != src), None))
    check(tgt is not None, f"{path}: need a column per language (found only {', '.join(cols)})")
    check(src in cols and tgt in cols, f"{path}: no columns {src!r} and {tgt!r} (found {', '.join(cols)})")
    out = []
    for i, r in enumerate(records):
        a, b = r.get(src), r.get(tgt)
        check(isinstance(a, str) and isinstance(b, str) and a.strip() != "" and b.strip() != "",
              f"{path}: row {i + 1} needs a non-empty {src} and {tgt} text")
        out.append(Pair(a.strip(), b.strip()))
    return out, src, tgt
