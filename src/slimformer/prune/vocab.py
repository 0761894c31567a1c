"""The `prune_vocab` step: keep only the tokens a corpus uses, shrinking the embedding table and the tokenizer.

    - {step: prune_vocab, texts: [my_corpus.txt]}

For WordPiece tokenizers (BERT and its relatives). Kept: every token the tokenizer produces on the corpus,
the special tokens and, with `keep_characters` (default), every single-character piece (`a`, `##a`), so that
a word the corpus never had is still split into kept pieces instead of becoming [UNK]. Greedy longest-match
WordPiece on a subset of the vocabulary segments every corpus word exactly as before (each piece it chose is
kept, and no longer prefix appeared), so text made of corpus words gives the same embeddings. Old ids map to
new ones in order; the embedding rows are selected accordingly, `config.vocab_size` and `pad_token_id`
follow, and the op `resize_vocab` rebuilds the smaller table on reload. The step replaces the recipe's
tokenizer (saved with the model).
"""
from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from ..errors import check
from ..models import apply_op, get_adapter, register_op
from ..steps import Context, StepConfig, implements
from ..tasks.base import Task


class PruneVocab(StepConfig):
    """Keep only the vocabulary a corpus uses (plus special tokens and single characters)."""

    step: ClassVar[str] = "prune_vocab"
    texts: list[str] | None = Field(None, description="the corpus: text files, folders of .txt, tables; default: "
                                    "the task's train split")
    text_column: str | None = Field(None, description="the table column holding sentences")
    keep_characters: bool = Field(True, description="also keep every single-character piece, so unseen words "
                                  "split into kept pieces instead of [UNK]")
    min_count: int = Field(1, ge=1, description="keep tokens seen at least this often")

    @property
    def needs_data(self) -> bool:  # type: ignore[override]
        return not self.texts

    def preflight(self, model: nn.Module, task: Any) -> None:
        ad = get_adapter(model)
        check(not ad.lm_head_tied(model), "prune_vocab: the embedding table is tied to the LM head (the output "
              "vocabulary would change); it serves encoders")
        check(not ad.is_multi_stack(model), "prune_vocab: the table is shared by both stacks of an encoder-decoder; "
              "it serves encoders")
        if self.texts:  # a missing or empty corpus is refused before any work
            from ..tasks.sentences import read_sentences

            read_sentences(self.texts, self.text_column, 1)


def _backend(tokenizer: Any) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    check(backend is not None, "prune_vocab: needs a fast (tokenizers) tokenizer")
    spec = json.loads(backend.to_str())
    check(spec.get("model", {}).get("type") == "WordPiece", f"prune_vocab: supports WordPiece tokenizers (BERT "
          f"and relatives), not {spec.get('model', {}).get('type')}")
    return spec


def kept_ids(tokenizer: Any, texts: list[str], keep_characters: bool = True, min_count: int = 1) -> list[int]:
    """Old token ids to keep, sorted: those seen min_count times in texts, the special tokens, single characters."""
    from collections import Counter

    counts: Counter[int] = Counter()
    for s in range(0, len(texts), 1024):
        for ids in tokenizer(texts[s:s + 1024], add_special_tokens=False)["input_ids"]:
            counts.update(ids)
    keep = {i for i, c in counts.items() if c >= min_count}
    keep |= set(tokenizer.all_special_ids)
    if keep_characters:
        keep |= {i for t, i in tokenizer.get_vocab().items() if len(t.removeprefix("##")) == 1}
    return sorted(keep)


def shrink_tokenizer(tokenizer: Any, keep: list[int]) -> Any:
    """The tokenizer with only the tokens `keep` (old ids, new id = position), saved and loaded back."""
    from transformers import AutoTokenizer

    spec = _backend(tokenizer)
    new_id = {old: new for new, old in enumerate(keep)}
    inv = {i: t for t, i in spec["model"]["vocab"].items()}
    spec["model"]["vocab"] = {inv[old]: new for new, old in enumerate(keep)}
    for tok in spec.get("added_tokens", []):
        check(tok["id"] in new_id, f"prune_vocab: added token {tok['content']!r} would be removed")
        tok["id"] = new_id[tok["id"]]
    for special in ((spec.get("post_processor") or {}).get("special_tokens") or {}).values():
        special["ids"] = [new_id[i] for i in special["ids"]]
    with tempfile.TemporaryDirectory() as d:
        tokenizer.save_pretrained(d)
        (Path(d) / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
        vocab = Path(d) / "vocab.txt"
        if vocab.exists():
            vocab.write_text("".join(inv[old] + "\n" for old in keep), encoding="utf-8")
        new = AutoTokenizer.from_pretrained(d)
    check(len(new) == len(keep), f"prune_vocab: the rebuilt tokenizer has {len(new)} tokens, expected {len(keep)}")
    return new


@register_op("resize_vocab")
def _resize_vocab(model: nn.Module, size: int) -> None:
    ad = get_adapter(model)
    old = ad.word_embeddings(model)
    pad = model.config.pad_token_id
    ad.set_word_embeddings(model, nn.Embedding(int(size), old.embedding_dim,
                                               padding_idx=pad if pad is not None and pad < size else None))
    model.config.vocab_size = int(size)


def prune_vocab(model: nn.Module, tokenizer: Any, texts: list[str], cfg: PruneVocab) -> tuple[nn.Module, Any, dict]:
    """Shrink model (in place) and tokenizer to the tokens of texts; returns (model, tokenizer, info)."""
    cfg.preflight(model, None)
    _backend(tokenizer)
    keep = kept_ids(tokenizer, texts, cfg.keep_characters, cfg.min_count)
    ad = get_adapter(model)
    rows = ad.word_embeddings(model).weight.detach()[torch.tensor(keep)].clone()
    pad = model.config.pad_token_id
    check(pad is None or pad in keep, "prune_vocab: the padding token would be removed")
    apply_op(model, "resize_vocab", size=len(keep))
    if pad is not None:
        model.config.pad_token_id = keep.index(pad)
    with torch.no_grad():
        ad.word_embeddings(model).weight.copy_(rows)
    new_tok = shrink_tokenizer(tokenizer, keep)
    return model, new_tok, {"vocab": f"{len(keep)}/{len(tokenizer)}", "kept_tokens": len(keep),
                            "corpus_sentences": len(texts)}


def id_map(student_tokenizer: Any, teacher_tokenizer: Any) -> torch.Tensor | None:
    """The teacher's id of every token of the student's vocabulary ([UNK] where the teacher lacks it); None
    when both vocabularies are the same."""
    sv, tv = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if sv == tv:
        return None
    unk = tv.get(teacher_tokenizer.unk_token, 0)
    out = torch.full((max(sv.values()) + 1,), unk, dtype=torch.long)
    for token, i in sv.items():
        out[i] = tv.get(token, unk)
    return out


@contextmanager
def teacher_reads_student_ids(teacher: nn.Module, student_tokenizer: Any, teacher_tokenizer: Any) -> Iterator[None]:
    """While the block runs, the teacher translates the student's input ids into its own vocabulary (after
    prune_vocab the two differ: without this a distillation teacher would read the wrong tokens)."""
    mapping = id_map(student_tokenizer, teacher_tokenizer)
    if mapping is None:
        yield
        return

    def remap(_m: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if kwargs.get("input_ids") is not None:
            kwargs["input_ids"] = mapping.to(kwargs["input_ids"].device)[kwargs["input_ids"]]
        elif args and isinstance(args[0], torch.Tensor):
            args = (mapping.to(args[0].device)[args[0]], *args[1:])
        return args, kwargs

    handle = teacher.register_forward_pre_hook(remap, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def corpus(cfg: PruneVocab, task: Task | None, seed: int) -> list[str]:
    from ..distill.embeddings import sentences_for

    if cfg.texts or task is None:
        return sentences_for(cfg.texts, cfg.text_column, None, task, cfg.step, seed)
    texts = task.texts("train")  # never the evaluation splits: their words would be kept for free
    check(bool(texts), "prune_vocab: the task's train split has no text")
    return texts


@implements(PruneVocab)
def prune_vocab_step(model: nn.Module, cfg: PruneVocab, ctx: Context) -> nn.Module:
    model, ctx.tokenizer, info = prune_vocab(model, ctx.tokenizer, corpus(cfg, ctx.task, ctx.seed), cfg)
    for k, v in info.items():
        ctx.note(k, v)
    return model
