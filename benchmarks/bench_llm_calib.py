"""Issue "Language models": does more calibration text bring one-shot 50% pruning of SmolLM2 closer to the
degradation the SparseGPT and Wanda papers report? bench_llm.py calibrates on 256 lines of WikiText-2 valid
(59 blocks of 512 tokens, ~30k tokens); the papers use 128 segments of 2,048 tokens (~262k) of C4. This part
prunes with 4x the lines (same seed, same block length) and scores the same 16,384 WikiText-2 test tokens.

    flock /tmp/slimformer-heavy.lock python benchmarks/bench_llm_calib.py calib
    python benchmarks/bench_llm_calib.py markdown
"""
from __future__ import annotations

import copy
import json
import time
from typing import Any

import bench_llm
import common
import torch

RESULT = "llm_calib"
LINES = 1024


def calib() -> dict[str, Any]:
    from slimformer.prune.oneshot import PruneOneShot, prune_oneshot
    from slimformer.quantize.guard import calibration_batches

    base, tok, task, _ = bench_llm._setup()
    batches = calibration_batches(tok, task, LINES, bench_llm.CALIB_LEN, batch_size=8, seed=0, split="dev", model=base)
    tokens = sum(int(b["input_ids"].numel()) for b in batches)
    rows = []
    for method in ("sparsegpt", "wanda"):
        model = copy.deepcopy(base)
        t0 = time.perf_counter()
        prune_oneshot(model, PruneOneShot(method=method, sparsity=0.5), batches)
        secs = time.perf_counter() - t0
        rows.append({"variant": f"{method} 50%", "calib_lines": LINES, "calib_tokens": tokens,
                     "perplexity": round(task.evaluate(model, tok, "test")["perplexity"], 3), "prune_s": round(secs, 1)})
        print(json.dumps(rows[-1]))
        del model
    return {"rows": rows}


def main(parts: list[str]) -> None:
    torch.set_num_threads(bench_llm.THREADS)
    payload = common.previous_parts(RESULT, set(PARTS) - set(parts))
    for p in parts:
        payload[p] = PARTS[p]()
        print(f"wrote {common.write_result(RESULT, {'threads': bench_llm.THREADS, **payload})}")
    print(markdown())


def markdown() -> str:
    r = json.loads((common.RESULTS / f"{RESULT}.json").read_text())["calib"]
    out = ["| method | calibration lines | tokens | WikiText-2 test ppl | prune s |", "|---|---|---|---|---|"]
    out += [f"| {x['variant']} | {x['calib_lines']} | {x['calib_tokens']:,} | {x['perplexity']} | {x['prune_s']} |"
            for x in r["rows"]]
    return "\n".join(out)


PARTS = {"calib": calib}

if __name__ == "__main__":
    common.parts_cli("bench_llm_calib.py", PARTS, main, markdown)
