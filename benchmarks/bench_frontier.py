"""Issue "The frontier": the model `slimformer plan` chose, against the peers a user could pick instead, all
evaluated on the full dev split and timed interleaved in ONE run against the fp32 PyTorch teacher (seq len 128,
batch 1 and 32, threads stated):

- the teacher (fp32, PyTorch eager), the plan's chosen model (or its closest, when none met the drop);
- ONNX Runtime `quantize_dynamic` with its defaults and torch.ao `quantize_dynamic` on the teacher;
- a ready-made smaller model: paraphrase-MiniLM-L3-v2 (peers/minilm_l3.py) fine-tuned on the task the way the
  teacher was (3 epochs), in fp32 and after slimformer's `quantize_dynamic` + `prune_vocab`.

    slimformer plan ~/.cache/slimformer/teachers/sst2 --task sst2 --data ../shared/data/sst2 --out PLAN ...
    flock /tmp/slimformer-heavy.lock env HF_HUB_OFFLINE=1 SLIMFORMER_QUIET=1 .venv/bin/python \
        benchmarks/bench_frontier.py --task sst2 --plan PLAN

Writes benchmarks/results/frontier_<task>.json (the plan's own rounds included) and prints the table.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_quant import FP32, side_builders, size_of
from common import CACHE, DATA, TEACHER_RECIPES, print_table, task, teacher, write_result

import torch

PEERS = CACHE / "peers"


def minilm_l3(name: str) -> tuple[Any, Any]:
    """paraphrase-MiniLM-L3-v2 fine-tuned on task `name` with the teacher's recipe (cached)."""
    from slimformer import models
    from slimformer.train import TrainConfig, finetune

    out = PEERS / f"minilm-l3-{name}"
    if not (out / "model.safetensors").exists():
        base = PEERS / "minilm-l3"
        if not (base / "model.safetensors").exists():
            from peers.minilm_l3 import convert

            convert(base)
        t = task(name)
        model, tok = models.load(str(base), task=t)
        model, stats = finetune(model, tok, t, TrainConfig(**TEACHER_RECIPES[name]), CACHE / "work" / out.name,
                                resume=True)
        models.save(model, tok, out)
        (out / "train_stats.json").write_text(json.dumps(stats, indent=2, default=str))
    return models.load(str(out))


def compressed_peer(model: Any, tok: Any, t: Any) -> tuple[Any, Any]:
    """The ready-made model after the steps that need no training: vocabulary to the task, then INT8."""
    from slimformer.recipe import EvalSettings, compress

    out = Path(tempfile.mkdtemp(prefix="sf-l3-")) / "run"
    res = compress(model, tok, [{"step": "prune_vocab"}, {"step": "quantize_dynamic", "guard": False}], out, t,
                   EvalSettings(batches=[1], latency_budget_s=0.3, each_step=False, tolerance=None))
    from slimformer import models

    m, tk = models.load(str(out))
    shutil.rmtree(out.parent, ignore_errors=True)
    del res
    return m, tk


def vocab_effect(name: str, fp: Any, tok: Any, other_text: Path, lines: int = 2000) -> dict[str, Any]:
    """prune_vocab to the task's train split, no training: the metric on dev and test (text the vocabulary never
    saw), and how other text (e.g. WikiText-2) tokenizes: words split differently, [UNK] rate, tokens per word."""
    import copy

    from slimformer.evaluate import evaluate_task
    from slimformer.prune.vocab import PruneVocab, corpus, prune_vocab

    t = task(name)
    cfg = PruneVocab()
    small, stok, info = prune_vocab(copy.deepcopy(fp), tok, corpus(cfg, t, 0), cfg)
    out: dict[str, Any] = {"vocab": [len(tok), len(stok)], "info": info}
    for split in ("dev", "test"):
        if split in t.splits:
            out[split] = {"full": evaluate_task(fp, tok, t, split), "pruned": evaluate_task(small, stok, t, split)}
    words = [w for line in other_text.read_text().splitlines()[:lines] for w in line.split()]
    full = [tok.tokenize(w) for w in words]
    pruned = [stok.tokenize(w) for w in words]
    out["other_text"] = {"file": str(other_text), "words": len(words),
                         "split_differently": round(sum(a != b for a, b in zip(full, pruned)) / len(words), 4),
                         "unk_full": round(sum(tok.unk_token in a for a in full) / len(words), 4),
                         "unk_pruned": round(sum(stok.unk_token in b for b in pruned) / len(words), 4),
                         "tokens_per_word_full": round(sum(map(len, full)) / len(words), 3),
                         "tokens_per_word_pruned": round(sum(map(len, pruned)) / len(words), 3)}
    print(json.dumps(out, indent=1), flush=True)
    return out


def measure_pairs(cands: dict[str, tuple[Any, int, str]], toks: dict[str, Any], t: Any, threads: int,
                  budget_s: float) -> list[dict[str, Any]]:
    """Dev metric of every candidate with its own tokenizer; then each candidate timed interleaved with the
    fp32 teacher, one pair at a time (several ONNX Runtime sessions in one round robin disturb each other at
    batch 1), at batch 1 and 32, seq 128; random ids valid for the smallest vocabulary."""
    from slimformer.bench import compare_latency
    from slimformer.evaluate import evaluate_task
    from slimformer.reliability import speedup

    fp = cands[FP32][0]
    lat_tok = min(toks.values(), key=len)
    rows = []
    for name, (m, size, how) in cands.items():
        with torch.inference_mode():
            metrics = evaluate_task(m, toks.get(name, toks[FP32]), t, "dev", 128)
        row = {"method": name, **{k: round(100 * v, 2) for k, v in metrics.items()}, "size_mb": round(size / 1e6, 2),
               "size_from": how}
        for b in (1, 32):
            lat = compare_latency({"teacher": fp, name: m} if name != FP32 else {FP32: m}, lat_tok, b, 128, threads,
                                  budget_s=budget_s * (1 if b == 1 else 3))
            mine = lat[name].summary()
            row[f"b{b}_ms"] = round(mine["median_ms"], 2)
            row[f"b{b}"] = mine
            if name != FP32:
                ref = lat["teacher"].summary()
                sp = speedup(ref, mine, ("teacher", name))
                row[f"b{b}_speedup"] = round(ref["median_ms"] / mine["median_ms"], 2)
                row[f"b{b}_band"] = [round(sp["speedup_lo"], 2), round(sp["speedup_hi"], 2)]
                row[f"b{b}_reliable"] = sp["reliable"]
        print(json.dumps({k: v for k, v in row.items() if not isinstance(v, dict)}), flush=True)
        rows.append(row)
    base = rows[0]
    for r in rows:
        r["drop_pts"] = round(base[t.main_metric] - r[t.main_metric], 2)
        r["x_smaller"] = round(base["size_mb"] / r["size_mb"], 2)
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--task", default="sst2")
    p.add_argument("--plan", required=True, help="output folder of `slimformer plan`")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--budget", type=float, default=8.0, help="seconds per pair at batch 1 (x3 at batch 32)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from slimformer import models

    start = time.perf_counter()
    plan = json.loads((Path(args.plan) / "plan.json").read_text())
    finals = plan["finals"]
    pick = next((r for r in finals if r["name"] == plan.get("chosen")), None) or \
        min(finals, key=lambda r: (r["drop"], r["ms"]))
    t = task(args.task)
    fp, tok = teacher(args.task)
    chosen, ctok = models.load(pick["run"], task=t)
    scratch = Path(tempfile.mkdtemp(prefix="sff-"))
    side = side_builders(fp, tok, scratch)
    vocab = vocab_effect(args.task, fp, tok, DATA / "wikitext2" / "test.txt")
    l3, l3tok = minilm_l3(args.task)
    l3q, l3qtok = compressed_peer(l3, l3tok, t)
    cands = {FP32: (fp, size_of(fp, tok), "safetensors"),
             f"slimformer plan: {pick['name']}": (chosen, size_of(chosen, ctok), "safetensors"),
             "ORT quantize_dynamic (defaults)": side["ORT quantize_dynamic (defaults)"](),
             "torch.ao quantize_dynamic": side["torch.ao quantize_dynamic"](),
             "MiniLM-L3 fine-tuned (fp32)": (l3, size_of(l3, l3tok), "safetensors"),
             "MiniLM-L3 + slimformer vocab + INT8": (l3q, size_of(l3q, l3qtok), "safetensors")}
    # every model is evaluated with its own tokenizer; latency uses random ids valid for the smallest vocabulary
    toks = {FP32: tok, f"slimformer plan: {pick['name']}": ctok, "MiniLM-L3 fine-tuned (fp32)": l3tok,
            "MiniLM-L3 + slimformer vocab + INT8": l3qtok}
    rows = measure_pairs(cands, toks, t, args.threads, args.budget)
    lim = plan.get("limits") or {}
    print_table(rows, f"Frontier on {args.task} dev, seq 128, {args.threads} threads (one run)")
    write_result(f"frontier_{args.task}", {
        "task": args.task, "seq_len": 128, "threads": args.threads, "plan": str(args.plan), "chosen": plan.get("chosen"),
        "picked": pick["name"], "recipe": pick["steps"], "limits": lim, "rows": rows, "vocab_effect": vocab,
        "plan_settings": plan["settings"], "plan_space": plan["space"], "plan_finals": finals,
        "plan_proxies": plan["proxies"], "total_s": round(time.perf_counter() - start, 1)})
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
