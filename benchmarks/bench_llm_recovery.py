"""Issue "Language models", a structured recipe with recovery: SmolLM2 with 6 of its 30 layers dropped by block
influence (ShortGPT; the same calibration blocks and layers as bench_llm.py `depth`), then the `distill` step
(token-level KL to the original model at temperature 1, no hard labels) on WikiText-2 valid text (the shipped
WikiText-2 has no train split; valid is also the calibration text), for a stated budget of optimizer steps.
Perplexity on the first 16,384 tokens of WikiText-2 test (context 1,024, stride 512) before and after recovery;
prefill (512 tokens) and decode (32 tokens, KV cache) at batch 1 against the original model in the same run.

    RECOVER_STEPS=100 flock /tmp/slimformer-heavy.lock python benchmarks/bench_llm_recovery.py depth_recover
    python benchmarks/bench_llm_recovery.py markdown
"""
from __future__ import annotations

import copy
import json
import os
import time
from typing import Any

import bench_llm
import common

RESULT = "llm_recovery"
STEPS = int(os.environ.get("RECOVER_STEPS", "100"))
BLOCK, BATCH, LR = 256, 4, 1e-4


def depth_recover(drop: int = 6) -> dict[str, Any]:
    from slimformer.generation import generation_profile
    from slimformer.models import num_params
    from slimformer.prune.layers import block_influence, keep_layers, most_influential
    from slimformer.steps import Context, apply_step, parse_step

    base, tok, task, batches = bench_llm._setup()
    bi = block_influence(base, batches)
    keep = most_influential(bi, len(bi) - drop)
    model = keep_layers(copy.deepcopy(base), keep)
    rows = [_ppl("base (dequantized Q4_1)", base, tok, task), _ppl(f"{drop} layers dropped, no recovery", model, tok, task)]
    work = common.CACHE / f"llm_recover_{STEPS}"
    ctx = Context(tokenizer=tok, task=task, work_dir=work, teacher=base, seed=0, max_len=BLOCK, resume=work.exists())
    cfg = parse_step({"step": "distill", "kd": 1.0, "ce": 0.0, "temperature": 1.0, "lr": LR, "batch_size": BATCH,
                      "max_steps": STEPS, "epochs": 1.0, "save_steps": 25}, 0)
    t0 = time.perf_counter()
    model = apply_step(model, cfg, ctx)
    train_s = time.perf_counter() - t0
    rows.append(_ppl(f"{drop} layers dropped + recovery ({STEPS} steps x {BATCH} x {BLOCK} tokens)", model, tok, task))
    model.eval()
    speed = []
    for name, m in (("base", base), ("recovered", model), ("base (repeat: drift check)", base)):
        speed.append({"variant": name, **generation_profile(m, tok, 512, 32, 1, bench_llm.THREADS, runs=3)})
        print(json.dumps(speed[-1]))
    return {"kept": keep, "params": {"base": num_params(base), "pruned": num_params(model)}, "rows": rows,
            "speed": speed, "train_s": round(train_s, 1), "steps": STEPS, "batch": BATCH, "block": BLOCK, "lr": LR,
            "train_tokens": STEPS * BATCH * BLOCK}


def _ppl(name: str, model: Any, tok: Any, task: Any) -> dict[str, Any]:
    row = {"variant": name, "perplexity": round(task.evaluate(model, tok, "test")["perplexity"], 3)}
    print(json.dumps(row))
    return row


def main(parts: list[str]) -> None:
    bench_llm.run_parts(RESULT, PARTS, parts, markdown)


def markdown() -> str:
    r = json.loads((common.RESULTS / f"{RESULT}.json").read_text())["depth_recover"]
    base = r["rows"][0]["perplexity"]
    out = [f"Kept layers {r['kept']}; parameters {r['params']['base'] / 1e6:.1f}M -> {r['params']['pruned'] / 1e6:.1f}M; "
           f"recovery: {r['steps']} steps of {r['batch']} x {r['block']} tokens ({r['train_tokens']:,} tokens), "
           f"lr {r['lr']}, {r['train_s'] / 60:.1f} min on {bench_llm.THREADS} threads.", "",
           "| variant | WikiText-2 test ppl | x base |", "|---|---|---|"]
    out += [f"| {row['variant']} | {row['perplexity']} | {row['perplexity'] / base:.2f} |" for row in r["rows"]]
    ref = r["speed"][0]
    out += ["", "| model (PyTorch fp32, batch 1) | prefill 512 ms | x base | decode tokens/s | x base |",
            "|---|---|---|---|---|"]
    for s in r["speed"]:
        out.append(f"| {s['variant']} | {s['prefill_ms']:.0f} | {ref['prefill_ms'] / s['prefill_ms']:.2f} | "
                   f"{s['tokens_per_s']} | {s['tokens_per_s'] / ref['tokens_per_s']:.2f} |")
    return "\n".join(out)


PARTS = {"depth_recover": depth_recover}

if __name__ == "__main__":
    common.parts_cli("bench_llm_recovery.py", PARTS, main, markdown)
