"""Movement pruning on a second task, MRPC (3,668 training pairs), so the SST-2 result is not one task's luck.

    flock /tmp/slimformer-heavy.lock env HF_HUB_OFFLINE=1 SLIMFORMER_QUIET=1 .venv/bin/python \
        benchmarks/bench_movement_mrpc.py labels block
    ... benchmarks/bench_movement_mrpc.py grad     # the seeds script's pair, on MRPC

- `labels`: fine-pruned from the pre-trained packaged `minilm` on the labels alone, 230 steps (2 epochs) of
  batch 32, lr 1e-4, scores lr 1e-2, 10% pruning warm-up / 20% cool-down: gradual magnitude vs hard movement
  with magnitude-initialised scores, at 30% and 10% of the encoder Linears' weights left.
- `block`: block hard movement (magnitude-initialised) vs prune_heads + prune_ffn (gradient importance), half of
  the heads and FFN neurons, both from the MRPC teacher (trained once with benchmarks/common.py's recipe if not
  cached) and distilled with bench_movement.py's 120-step budget (kd 1 + ce 0.5, T 2).

- `grad`: soft (global) block movement with gradient-initialised scores vs prune_heads + prune_ffn, seeds 42 and
  43 (bench_movement_seeds.py's pair), with the teacher of the machine it runs on recorded beside them.

Accuracy and F1 on dev (408 pairs) and on the MSR paraphrase test set (1,725 pairs), max_len 128, seed 42.
Results: benchmarks/results/movement_mrpc.json. Latency is not measured here: the block models have the same
shapes as the SST-2 ones (bench_movement.py latency).
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import bench_movement as bm
import bench_movement_seeds as bs
from common import RESULTS, parts_cli, previous_parts, task, teacher, write_result

bm.NAME = "movement_mrpc_smoke" if os.environ.get("BENCH_SMOKE") else "movement_mrpc"


def part_labels(results: dict[str, Any]) -> dict[str, Any]:
    specs = [(n + " mrpc", kw) for n, kw in bm._labels_grid([0.30, 0.10], steps=230)
             if kw["variant"] != "soft"]
    return bm._runs("labels", specs, results)


def part_block(results: dict[str, Any]) -> dict[str, Any]:
    s = bm.SETTINGS["block_sparsity"]
    out = bm._runs("block", [("block hard 50% heads+ffn score_init magnitude from teacher mrpc",
                              dict(variant="hard", sparsity=s, block=True, start="teacher",
                                   score_init="magnitude"))], results)
    return bm.with_baseline(out, results, " mrpc")


def part_grad(results: dict[str, Any]) -> dict[str, Any]:
    """bench_movement_seeds.py's pair on MRPC: soft (global) block movement with gradient-initialised scores vs
    prune_heads + prune_ffn, half the heads and FFN weights, seeds 42 and 43, against this machine's teacher."""
    out = bs.pairs("grad", 0.5, bs.SEEDS[:2], results, " mrpc")
    out["teacher"] = bm._STATE["teacher_scores"]
    return out


PARTS = {"labels": part_labels, "block": part_block, "grad": part_grad}


def main(parts: list[str]) -> None:
    from slimformer import models

    results = previous_parts(bm.NAME, set(PARTS) | {"teacher"})
    t = task("mrpc")
    bm._STATE.update(tok=models.load("minilm")[1], task=t)
    if {"block", "grad"} & set(parts):
        model, tok = teacher("mrpc")
        bm._STATE.update(teacher=model.eval(), tok=tok)
        bm._STATE["teacher_scores"] = {"model": "teacher", **bm._scores(model, tok, t)}
        if "block" in parts:  # the teacher of the earlier parts' rows stays as it was otherwise
            results["teacher"] = bm._STATE["teacher_scores"]
    for p in parts:
        t0 = time.perf_counter()
        results[p] = PARTS[p](results)
        results[p]["part_wall_s"] = round(time.perf_counter() - t0, 1)
        write_result(bm.NAME, {"settings": bm.SETTINGS, **results})
    print(markdown())


def markdown() -> str:
    d = json.loads((RESULTS / f"{bm.NAME}.json").read_text())
    out = ["| model | steps | remaining | dev acc | dev F1 | test acc | test F1 | params |",
           "|---|---|---|---|---|---|---|---|"]
    rows = [d.get("teacher", {})] + [r for p in ("labels", "block") for r in d.get(p, {}).get("rows", [])]
    if "grad" in d:
        rows += [{**d["grad"]["teacher"], "model": "teacher (grad part)"}] + d["grad"]["rows"]
    for r in rows:
        if "scores" not in r:
            continue
        sc = r["scores"]
        rem = f"{100 * r['remaining']:.1f}%" if "remaining" in r else ""
        out.append(f"| {r['model']} | {r.get('steps', '')} | {rem} | {sc['dev']['accuracy']} | {sc['dev']['f1']} | "
                   f"{sc['test']['accuracy']} | {sc['test']['f1']} | {r.get('params', '')} |")
    return "\n".join(out)


if __name__ == "__main__":
    parts_cli("bench_movement_mrpc.py", PARTS, main, markdown)
