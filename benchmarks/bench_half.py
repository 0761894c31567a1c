"""`half_precision` (the whole model in bfloat16 / float16) against fp32, measured on this CPU.

`encoder`: the MiniLM SST-2 teacher in fp32, bf16 and fp16: dev accuracy, saved size, latency at batch 1 and
32 (seq 128, 2 threads; the three interleaved in one process, `compare_latency`). `llm`: SmolLM2 in fp32 and
bf16: WikiText-2 test perplexity (bench_llm's 16,384 tokens), saved size, prefill of 512 tokens and decode
tokens/s (batch 1, 32 new tokens; ROUNDS interleaved rounds, fp32 first and last in each).

    flock /tmp/slimformer-heavy.lock env HF_HUB_OFFLINE=1 SLIMFORMER_QUIET=1 .venv/bin/python \\
        benchmarks/bench_half.py encoder llm
    python benchmarks/bench_half.py markdown
"""
from __future__ import annotations

import copy
import json
import os
import statistics
from typing import Any

import common

RESULT = "half_precision"
THREADS, SEQ, BATCHES = 2, 128, (1, 32)
DTYPES = ("bfloat16", "float16")
ROUNDS, PROMPT, NEW_TOKENS = 3, 512, 32


def _cast(model: Any, dtype: str) -> Any:
    from slimformer.quantize import HalfPrecision, half_precision

    return half_precision(copy.deepcopy(model), HalfPrecision(dtype=dtype, guard=False))


def encoder() -> dict[str, Any]:
    from slimformer.bench import compare_latency, saved_size
    from slimformer.evaluate import evaluate_task
    from slimformer.quantize.half import advice

    teacher, tok, task = common.ready_teacher("sst2", THREADS)
    models = {"fp32": teacher, **{d: _cast(teacher, d) for d in DTYPES}}
    rows = {name: {"dev_acc": round(100 * evaluate_task(m, tok, task, "dev", SEQ)["accuracy"], 2),
                   "disk_mb": round(saved_size(m) / 1e6, 2)} for name, m in models.items()}
    for b in BATCHES:
        lat = compare_latency(models, tok, batch=b, seq_len=SEQ, n_threads=THREADS, budget_s=12.0, retries=1)
        for name, x in lat.items():
            rows[name][f"b{b}"] = {"median_ms": round(x.median_ms, 2), "reliable": x.reliable,
                                   "speedup": round(lat["fp32"].median_ms / x.median_ms, 2)}
    print(json.dumps(rows), flush=True)
    return {"seq_len": SEQ, "advice": {d: advice(d) for d in DTYPES}, "rows": rows}


def llm(rounds: int = ROUNDS) -> dict[str, Any]:
    import bench_llm
    from slimformer.bench import saved_size
    from slimformer.generation import generation_profile

    base, tok, task, _ = bench_llm._setup()
    models = {"fp32": base, "bfloat16": _cast(base, "bfloat16")}
    rows: dict[str, dict[str, Any]] = {n: {"disk_mb": round(saved_size(m) / 1e6, 1),
                                           "perplexity": round(task.evaluate(m, tok, "test")["perplexity"], 3)}
                                       for n, m in models.items()}
    runs: dict[str, list[dict[str, Any]]] = {"fp32": [], "fp32 again": [], "bfloat16": []}
    for r in range(rounds):
        for name in ("fp32", "bfloat16", "fp32 again"):
            m = models[name.split(" ")[0]]
            runs[name].append(generation_profile(m, tok, PROMPT, NEW_TOKENS, 1, THREADS, runs=3))
        print(f"round {r + 1}/{rounds}", {k: v[-1]["tokens_per_s"] for k, v in runs.items()}, flush=True)
    ref = [((a["prefill_ms"] + b["prefill_ms"]) / 2, (a["tokens_per_s"] + b["tokens_per_s"]) / 2)
           for a, b in zip(runs["fp32"], runs["fp32 again"])]
    for name in ("fp32", "bfloat16"):
        mine = runs[name]
        rows[name].update(
            prefill_ms=round(statistics.median(x["prefill_ms"] for x in mine), 1),
            tokens_per_s=round(statistics.median(x["tokens_per_s"] for x in mine), 2),
            prefill_speedup=round(statistics.median(p / x["prefill_ms"] for (p, _), x in zip(ref, mine)), 2),
            decode_speedup=round(statistics.median(x["tokens_per_s"] / t for (_, t), x in zip(ref, mine)), 2),
            runs=[(x["prefill_ms"], x["tokens_per_s"]) for x in mine])
    rows["fp32 again"] = {"runs": [(x["prefill_ms"], x["tokens_per_s"]) for x in runs["fp32 again"]]}
    print(json.dumps({k: {f: v.get(f) for f in ("perplexity", "prefill_speedup", "decode_speedup")}
                      for k, v in rows.items()}), flush=True)
    return {"prompt": PROMPT, "new_tokens": NEW_TOKENS, "rounds": rounds, "rows": rows}


def markdown() -> str:
    r = common.read_result(RESULT) or {}
    out = []
    if "encoder" in r:
        e = r["encoder"]
        out += [f"MiniLM SST-2 teacher, seq {e['seq_len']}, {THREADS} threads:", "",
                "| dtype | dev acc | disk MB | b1 ms | b1 x fp32 | b32 ms | b32 x fp32 |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for name, x in e["rows"].items():
            cells = [f"{x[f'b{b}']['median_ms']}{'' if x[f'b{b}']['reliable'] else ' ?'} | {x[f'b{b}']['speedup']}"
                     for b in BATCHES]
            out.append(f"| {name} | {x['dev_acc']} | {x['disk_mb']} | {' | '.join(cells)} |")
    if "llm" in r:
        g = r["llm"]
        out += ["", f"SmolLM2, batch 1, prompt {g['prompt']}, {g['new_tokens']} new tokens, {g['rounds']} rounds:", "",
                "| dtype | perplexity | disk MB | prefill ms | x fp32 | decode tokens/s | x fp32 |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for name in ("fp32", "bfloat16"):
            x = g["rows"][name]
            out.append(f"| {name} | {x['perplexity']} | {x['disk_mb']} | {x['prefill_ms']} | {x['prefill_speedup']} | "
                       f"{x['tokens_per_s']} | {x['decode_speedup']} |")
    return "\n".join(out) or "(no results yet)"


PARTS = {"encoder": encoder, "llm": lambda: llm(ROUNDS)}


def main(parts: list[str]) -> None:
    import torch

    torch.set_num_threads(THREADS)
    common.run_parts(RESULT, PARTS, parts, markdown, {"threads": THREADS})


if __name__ == "__main__":
    if os.environ.get("BENCH_SMOKE"):
        import bench_llm

        RESULT, ROUNDS, PROMPT, NEW_TOKENS = "half_precision_smoke", 1, 32, 4
        bench_llm.EVAL_TOKENS = 2048
    common.parts_cli("bench_half.py", PARTS, main, markdown)
