"""What `prune_vocab` costs the SST-2 teacher, by the corpus the vocabulary is pruned to (no training).

`corpora`: the teacher's dev and test accuracy with its full vocabulary, pruned to the train split (the step's
default), and pruned to the train split plus WikiText-2 valid (general English), with the kept tokens, the
fp32 size of the embedding table and the dev tokens per sentence. It asks whether the points the
vocabulary cut costs come back by keeping common English words.

    flock /tmp/slimformer-heavy.lock env HF_HUB_OFFLINE=1 SLIMFORMER_QUIET=1 .venv/bin/python \\
        benchmarks/bench_vocab.py corpora
    python benchmarks/bench_vocab.py markdown
"""
from __future__ import annotations

import copy
import json
from typing import Any

import common

RESULT = "vocab_sst2"
THREADS, SEQ = 2, 128
GENERAL = common.DATA / "wikitext2" / "valid.txt"


def _general_text() -> list[str]:
    """WikiText-2 valid's paragraphs (headings dropped)."""
    lines = GENERAL.read_text(encoding="utf-8").splitlines()
    return [x.strip() for x in lines if x.strip() and not x.strip().startswith("=")]


def corpora() -> dict[str, Any]:
    from slimformer.evaluate import evaluate_task
    from slimformer.prune.vocab import PruneVocab, prune_vocab

    teacher, tok, task = common.ready_teacher("sst2", THREADS)
    train = task.texts("train")
    dev = task.texts("dev")
    variants: dict[str, list[str] | None] = {"full vocabulary": None, "train split": train,
                                             "train split + WikiText-2 valid": train + _general_text()}
    rows: dict[str, Any] = {}
    for name, texts in variants.items():
        model, t = teacher, tok
        if texts is not None:
            model, t, _ = prune_vocab(copy.deepcopy(teacher), tok, texts, PruneVocab())
        ids = t(dev, add_special_tokens=False)["input_ids"]
        rows[name] = {"tokens": len(t), "corpus_sentences": len(texts) if texts else None,
                      "table_mb_fp32": round(len(t) * model.config.hidden_size * 4 / 1e6, 2),
                      "dev_tokens_per_sentence": round(sum(map(len, ids)) / len(ids), 2),
                      **{f"{s}_acc": round(100 * evaluate_task(model, t, task, s, SEQ)["accuracy"], 2)
                         for s in ("dev", "test")}}
        print(json.dumps({name: rows[name]}), flush=True)
    return {"rows": rows}


PARTS = {"corpora": corpora}


def markdown() -> str:
    r = common.read_result(RESULT)
    if not r or "corpora" not in r:
        return "no results yet: run `bench_vocab.py corpora`"
    rows = r["corpora"]["rows"]
    full = rows["full vocabulary"]
    out = ["| vocabulary | tokens | table MB (fp32) | dev tokens / sentence | dev acc | change | test acc | change |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, x in rows.items():
        out.append(f"| {name} | {x['tokens']:,} | {x['table_mb_fp32']} | {x['dev_tokens_per_sentence']} | "
                   f"{x['dev_acc']} | {x['dev_acc'] - full['dev_acc']:+.2f} | {x['test_acc']} | "
                   f"{x['test_acc'] - full['test_acc']:+.2f} |")
    return "\n".join(out)


def main(parts: list[str]) -> None:
    import torch

    torch.set_num_threads(THREADS)
    common.run_parts(RESULT, PARTS, parts, markdown, {"threads": THREADS, "general_text": str(GENERAL.name)})


if __name__ == "__main__":
    common.parts_cli("bench_vocab.py", PARTS, main, markdown)
