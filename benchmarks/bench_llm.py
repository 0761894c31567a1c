"""Issue "Language models": one-shot pruning of SmolLM2-135M from calibration text (Wanda, SparseGPT, per-row
magnitude; 50% unstructured and 2:4) and depth pruning (ShortGPT block influence vs dropping the last layers),
scored by WikiText-2 test perplexity on a fixed token budget. No recovery training.

    flock /tmp/slimformer-heavy.lock python benchmarks/bench_llm.py prune depth
    python benchmarks/bench_llm.py markdown
"""
from __future__ import annotations

import copy
import json
import time
from typing import Any

import common
import torch

RESULT = "llm_prune"
THREADS = 2
EVAL_TOKENS = 16384      # the first tokens of the WikiText-2 test stream (context 1024, stride 512)
CALIB = 64               # calibration blocks of CALIB_LEN tokens from WikiText-2 valid
CALIB_LEN = 512


def _setup() -> tuple[Any, Any, Any, list]:
    from slimformer import models, tasks
    from slimformer.quantize.guard import calibration_batches

    task = tasks.load("wikitext2", common.DATA / "wikitext2", context=1024, stride=512, max_eval_tokens=EVAL_TOKENS)
    model, tok = models.load("smollm2", task=task)
    batches = calibration_batches(tok, task, CALIB, CALIB_LEN, batch_size=8, seed=0, split="valid", model=model)
    return model.eval(), tok, task, batches


def _row(name: str, model: Any, tok: Any, task: Any, seconds: float, extra: dict[str, Any]) -> dict[str, Any]:
    from slimformer import models
    from slimformer.prune.unstructured import sparse_size

    t0 = time.perf_counter()
    ppl = task.evaluate(model, tok, "test")["perplexity"]
    row = {"variant": name, "perplexity": round(ppl, 3), "params": models.num_params(model),
           "sparse_encoded_mb": round(sparse_size(model) / 1e6, 1), "prune_s": round(seconds, 1),
           "eval_s": round(time.perf_counter() - t0, 1), **extra}
    print(json.dumps(row))
    return row


def prune() -> dict[str, Any]:
    """Base model, then each one-shot method at 50% unstructured and 2:4, from the same calibration batches."""
    from slimformer.prune.oneshot import PruneOneShot, prune_oneshot

    base, tok, task, batches = _setup()
    rows = [_row("base (dequantized Q4_1)", base, tok, task, 0.0, {"sparsity": 0.0})]
    for method in ("magnitude", "wanda", "sparsegpt"):
        for target in ({"sparsity": 0.5}, {"pattern": "2:4"}):
            model = copy.deepcopy(base)
            t0 = time.perf_counter()
            info = prune_oneshot(model, PruneOneShot(method=method, **target), batches)
            rows.append(_row(f"{method} {target.get('pattern') or '50%'}", model, tok, task,
                             time.perf_counter() - t0, {"sparsity": info["sparsity"]}))
            del model
    return {"rows": rows}


def depth(drop: int = 6) -> dict[str, Any]:
    """Drop `drop` of the 30 layers by block influence (measured on the calibration batches) or the last ones."""
    from slimformer.prune.layers import block_influence, keep_layers

    base, tok, task, batches = _setup()
    t0 = time.perf_counter()
    bi = block_influence(base, batches)
    secs = time.perf_counter() - t0
    n = len(bi)
    by_bi = sorted(sorted(range(n), key=lambda i: -bi[i])[: n - drop])
    rows = []
    for name, keep, s in ((f"block influence, drop {drop}", by_bi, secs), (f"last {drop} dropped", list(range(n - drop)), 0.0)):
        model = keep_layers(copy.deepcopy(base), keep)
        rows.append(_row(name, model, tok, task, s, {"kept": keep}))
        del model
    return {"block_influence": [round(b, 4) for b in bi], "rows": rows}


PARTS = {"prune": prune, "depth": depth}


def main(parts: list[str]) -> None:
    torch.set_num_threads(THREADS)
    payload = common.previous_parts(RESULT, set(PARTS) - set(parts))
    for p in parts:
        payload[p] = PARTS[p]()
        print(f"wrote {common.write_result(RESULT, {'threads': THREADS, 'eval_tokens': EVAL_TOKENS, 'calib_blocks': CALIB, 'calib_len': CALIB_LEN, **payload})}")
    print(markdown())


def markdown() -> str:
    path = common.RESULTS / f"{RESULT}.json"
    if not path.exists():
        return "(no results yet)"
    r = json.loads(path.read_text())
    out = ["| variant | WikiText-2 test ppl | zeros in the layers' Linears | sparse-encoded MB | prune s |",
           "|---|---|---|---|---|"]
    for part in ("prune", "depth"):
        for row in r.get(part, {}).get("rows", []):
            sp = f"{100 * row['sparsity']:.1f}%" if "sparsity" in row else f"{len(row['kept'])} of 30 layers kept"
            out.append(f"| {row['variant']} | {row['perplexity']} | {sp} | {row['sparse_encoded_mb']} | {row['prune_s']} |")
    return "\n".join(out)


if __name__ == "__main__":
    common.parts_cli("bench_llm.py", PARTS, main, markdown)
