"""Similarity: sentence pairs with a float score (STS-B and any table with two texts and a score).

Two modes. `regression`: a sequence-regression head reads the pair (cross-encoder), scored by Pearson and
Spearman. `embedding`: the model is a sentence encoder (mean pooling over the attention mask, as
sentence-transformers does); the score is the cosine of the two embeddings, and the metric the Spearman
correlation of those cosines with the gold scores. Training in embedding mode uses the cosine-similarity
loss (MSE between cosine and the gold score scaled to [0, 1]).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import torch
import torch.nn.functional as F

from ..errors import SlimformerError, check
from .base import Example, Task
from .files import PAIR_COLUMNS, TEXT_COLUMNS, _pick, _records, require_file
from .metrics import correlations

SCORE_COLUMNS = ("score", "similarity", "label", "labels", "relatedness_score")


@dataclass
class SimilarityTask(Task):
    name: str
    splits: dict[str, list[Example]]
    metrics: list[str] = field(default_factory=lambda: ["spearman", "pearson"])
    mode: Literal["regression", "embedding"] = "embedding"
    max_score: float = 5.0
    kind: ClassVar[str] = "similarity"

    @property
    def head(self) -> str:  # type: ignore[override]
        return "AutoModel" if self.mode == "embedding" else "AutoModelForSequenceClassification"

    @property
    def distill_target(self) -> str:  # type: ignore[override]
        return "embedding" if self.mode == "embedding" else "regression"

    def model_kwargs(self) -> dict[str, Any]:
        return {} if self.mode == "embedding" else {"num_labels": 1, "problem_type": "regression"}

    def check_model(self, model: Any, fresh_head: bool = False) -> None:
        if self.mode == "regression":
            n = getattr(model.config, "num_labels", None)
            check(n == 1, f"similarity (regression) needs a 1-output regression head; the model has {n} labels")

    # --- data ---------------------------------------------------------------------------------------
    def encode(self, tokenizer: Any, examples: Sequence[Example], max_len: int = 128, with_labels: bool = True) -> Any:
        from ..data import EncodedDataset, encode_texts

        if self.mode == "regression":
            return encode_texts(tokenizer, examples, max_len, [float(ex.label) for ex in examples]
                                if with_labels else None)
        a = tokenizer([ex.text for ex in examples], truncation=True, max_length=max_len)
        b = tokenizer([ex.text_pair for ex in examples], truncation=True, max_length=max_len)
        feats = []
        for i, ex in enumerate(examples):
            f = {"input_ids": a["input_ids"][i], "attention_mask": a["attention_mask"][i],
                 "b_input_ids": b["input_ids"][i], "b_attention_mask": b["attention_mask"][i]}
            if with_labels:
                f["labels"] = float(ex.label) / self.max_score
            feats.append(f)
        return EncodedDataset(feats)

    def collator(self, tokenizer: Any, model: Any = None) -> Any:
        if self.mode == "regression":
            return super().collator(tokenizer, model)
        return PairCollator(tokenizer)

    def loss(self, model: Any, batch: dict[str, Any]) -> torch.Tensor:
        if self.mode == "regression":
            return super().loss(model, batch)
        a = mean_pool(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]),
                      batch["attention_mask"])
        b = mean_pool(model(input_ids=batch["b_input_ids"], attention_mask=batch["b_attention_mask"]),
                      batch["b_attention_mask"])
        return F.mse_loss(F.cosine_similarity(a, b), batch["labels"].to(a.dtype))

    def uses_custom_loss(self) -> bool:
        return self.mode == "embedding"

    # --- evaluation ---------------------------------------------------------------------------------
    def scores(self, model: Any, tokenizer: Any, split: str, max_len: int, max_examples: int | None) -> tuple:
        examples = self.split(split)[:max_examples] if max_examples else self.split(split)
        gold = [float(ex.label) for ex in examples]
        if self.mode == "regression":
            from ..evaluate import predict

            pred = predict(model, tokenizer, examples, max_len, desc=f"eval {self.name}/{split}", task=self)[:, 0]
            return gold, pred.tolist()
        texts = sorted({t for ex in examples for t in (ex.text, ex.text_pair)})
        emb = embed(model, tokenizer, texts, max_len)
        index = {t: i for i, t in enumerate(texts)}
        a = emb[[index[ex.text] for ex in examples]]
        b = emb[[index[ex.text_pair] for ex in examples]]
        return gold, F.cosine_similarity(a, b).tolist()

    def evaluate(self, model: Any, tokenizer: Any, split: str = "dev", max_len: int = 128,
                 max_examples: int | None = None) -> dict[str, float]:
        gold, pred = self.scores(model, tokenizer, split, max_len, max_examples)
        corr = correlations(gold, pred)
        return {m: corr[m] for m in self.metrics}


class PairCollator:
    """Pads the two sides of sentence pairs separately (embedding mode)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def __call__(self, feats: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        a = self.tokenizer.pad([{"input_ids": f["input_ids"], "attention_mask": f["attention_mask"]} for f in feats],
                               return_tensors="pt", pad_to_multiple_of=8)
        b = self.tokenizer.pad([{"input_ids": f["b_input_ids"], "attention_mask": f["b_attention_mask"]}
                                for f in feats], return_tensors="pt", pad_to_multiple_of=8)
        out = {"input_ids": a["input_ids"], "attention_mask": a["attention_mask"],
               "b_input_ids": b["input_ids"], "b_attention_mask": b["attention_mask"]}
        if "labels" in feats[0]:
            out["labels"] = torch.tensor([f["labels"] for f in feats], dtype=torch.float32)
        return out


def last_hidden(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return torch.as_tensor(output[0])
    return output.last_hidden_state


def mean_pool(output: Any, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states over the attention mask (sentence-transformers' mean pooling)."""
    h = last_hidden(output)
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp_min(1e-9)


def embed(model: Any, tokenizer: Any, texts: Sequence[str], max_len: int = 128, batch_size: int = 64,
          normalize: bool = False) -> torch.Tensor:
    """Sentence embeddings [n, d] (length-sorted batches, dynamic padding)."""
    from ..bench import as_forward
    from ..progress import track

    fwd = as_forward(model)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[torch.Tensor | None] = [None] * len(texts)
    for s in track(range(0, len(order), batch_size), desc="embed", total=math.ceil(len(order) / batch_size)):
        idx = order[s:s + batch_size]
        enc = tokenizer([texts[i] for i in idx], truncation=True, max_length=max_len, padding=True,
                        return_tensors="pt")
        e = mean_pool(fwd({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}),
                      enc["attention_mask"]).float()
        if normalize:
            e = F.normalize(e, dim=-1)
        for j, i in enumerate(idx):
            out[i] = e[j]
    return torch.stack(out)  # type: ignore[arg-type]


# --- loaders ----------------------------------------------------------------------------------------
def _score(v: Any, where: str) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError) as e:
        raise SlimformerError(f"{where}: score {str(v)[:40]!r} is not a number") from e
    check(math.isfinite(x), f"{where}: score {v!r} is not finite")
    return x


def read_stsb(path: Path) -> list[Example]:
    """STS-B files: TSV (named .csv), genre, file, year, id, score, sentence1, sentence2[, licences]."""
    rows = []
    for i, line in enumerate(require_file(path).read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        f = line.split("\t")
        check(len(f) >= 7, f"{path}:{i + 1}: expected at least 7 tab-separated fields, got {len(f)}")
        rows.append(Example(f[5], _score(f[4], f"{path}:{i + 1}"), f[6]))
    check(bool(rows), f"{path}: no rows")
    return rows


def read_pairs_table(path: Path, text_col: str | None = None, pair_col: str | None = None,
                     score_col: str | None = None) -> list[Example]:
    records = list(_records(require_file(path)))
    check(bool(records), f"{path}: no rows")
    cols = list(records[0])
    a, b = text_col or _pick(cols, TEXT_COLUMNS), pair_col or _pick(cols, PAIR_COLUMNS)
    s = score_col or _pick(cols, SCORE_COLUMNS)
    check(a in cols and b in cols and s in cols, f"{path}: need two text columns and a score column "
          f"(found {', '.join(cols)}); name them with --text-col/--pair-col/--label-col")
    out = []
    for i, r in enumerate(records):
        ta, tb = r.get(a), r.get(b)
        check(isinstance(ta, str) and isinstance(tb, str) and ta != "" and tb != "",
              f"{path}: row {i + 1} needs two non-empty texts")
        out.append(Example(ta, _score(r.get(s), f"{path}: row {i + 1}"), tb))
    return out


def load_similarity(data: str | Path, mode: str = "embedding", text_col: str | None = None,
                    pair_col: str | None = None, label_col: str | None = None, name: str = "similarity",
                    **_: Any) -> SimilarityTask:
    """STS-B's sts-{train,dev,test}.csv, or train/dev/test tables (.csv/.tsv/.jsonl) with two texts and a score."""
    check(mode in ("embedding", "regression"), f"similarity: mode must be embedding or regression, not {mode!r}")
    p = Path(data).expanduser()
    check(p.exists(), f"{name}: data path not found: {p}")
    splits: dict[str, list[Example]] = {}
    files = sorted(p.iterdir()) if p.is_dir() else [p]
    for f in files:
        stem = f.stem.lower().replace("sts-", "")
        split = {"validation": "dev", "val": "dev"}.get(stem, stem)
        if split not in ("train", "dev", "test") or f.suffix.lower() not in (".csv", ".tsv", ".jsonl"):
            continue
        first = f.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
        stsb = f.suffix.lower() in (".csv", ".tsv") and first.count("\t") >= 6 and not text_col
        splits[split] = read_stsb(f) if stsb else read_pairs_table(f, text_col, pair_col, label_col)
    check(bool(splits), f"{p}: no train/dev/test files with sentence pairs and scores")
    top = max(float(ex.label) for exs in splits.values() for ex in exs)
    return SimilarityTask(name=name, splits=splits, mode=mode, max_score=max(top, 1e-9))
