"""Unstructured pruning on the MiniLM SST-2 teacher: one-shot magnitude curve, gradual magnitude, movement.

    flock /tmp/sf/cpu.lock env HF_HUB_OFFLINE=1 SLIMFORMER_QUIET=1 .venv/bin/python \
        benchmarks/bench_unstructured.py oneshot gradual movement latency

Each part merges its figures into benchmarks/results/unstructured_sst2.json. Settings (SETTINGS below): the
encoder's attention q/k/v/output and FFN up/down Linears (embeddings, pooler and classifier untouched),
global scope. oneshot: magnitude at 50/70/90%, no training. gradual: 3 increments on the cubic schedule
to 70%, 19 optimizer steps of batch 32 (608 train examples) after each, max_len 64, lr 1e-4. movement: the
same schedule and budget, score summed over 256 train examples before each increment. Dev accuracy at
max_len 128 on all 872 dev sentences. Latency: batch 32, seq len 128, 2 threads, all models interleaved in
one compare_latency run. Sizes: dense safetensors as slimformer saves them, and `sparse_size` (a
safetensors file with every Linear weight stored as float32 nonzeros + a 1-bit mask), both measured on disk.
"""
from __future__ import annotations

import json
import shutil
import time
from typing import Any

from common import CACHE, RESULTS, write_result


SETTINGS = dict(seed=42, train_max_len=64, eval_max_len=128, threads=2, seq_len=128, batch=32,
                oneshot=[0.5, 0.7, 0.9], gradual=dict(sparsity=0.7, steps=3, recovery_steps=19, recovery_lr=1e-4,
                                                      batch_size=32),
                movement_score_examples=256, latency_budget_s=30.0)
WORK = CACHE / "work" / "bench_unstructured"
NAME = "unstructured_sst2"


def accuracy(model: Any, tok: Any, t: Any) -> float:
    from slimformer.evaluate import evaluate_task

    return round(100 * evaluate_task(model, tok, t, "dev", SETTINGS["eval_max_len"])["accuracy"], 2)


def measure(model: Any, tok: Any, t: Any, name: str, info: dict[str, Any] | None) -> dict[str, Any]:
    """Accuracy, nonzero parameters, dense and sparse-encoded size; the model is saved for the latency part."""
    from slimformer import models
    from slimformer.bench import saved_size
    from slimformer.models.io import num_params
    from slimformer.prune.unstructured import sparse_size

    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    out = WORK / "models" / name.replace(" ", "_").replace("%", "")
    models.save(model, tok, out)
    row = {"model": name, "dev_acc": accuracy(model, tok, t), "params": num_params(model), "params_nonzero": nonzero,
           "dense_mb": round(saved_size(model) / 1e6, 2), "sparse_mb": round(sparse_size(model) / 1e6, 2),
           "dir": str(out)}
    if info:
        row.update({"sparsity_included": info["sparsity"], "zeros": info["zeros"],
                    "sparsity_per_layer": info["sparsity_per_layer"], "increments": info["increments"]})
    return row


def run(teacher_model: Any, tok: Any, t: Any, name: str, **cfg: Any) -> dict[str, Any]:
    import slimformer as sf
    from slimformer.models.io import clone

    m = clone(teacher_model)
    work = WORK / "train" / name.replace(" ", "_").replace("%", "")
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    m, info = sf.prune_unstructured(m, sf.PruneUnstructured(**cfg), tok, t, work, seed=SETTINGS["seed"],
                                    max_len=SETTINGS["train_max_len"])
    wall = round(time.perf_counter() - t0, 1)
    shutil.rmtree(work, ignore_errors=True)
    row = {**measure(m, tok, t, name, info), "prune_and_recovery_s": wall}
    print({k: v for k, v in row.items() if k not in ("increments", "sparsity_per_layer")}, flush=True)
    return row


def part_oneshot(teacher_model: Any, tok: Any, t: Any) -> dict[str, Any]:
    rows = [run(teacher_model, tok, t, f"magnitude one-shot {int(s * 100)}%", sparsity=s)
            for s in SETTINGS["oneshot"]]
    return {"rows": rows}


def part_gradual(teacher_model: Any, tok: Any, t: Any) -> dict[str, Any]:
    g = SETTINGS["gradual"]
    return {"rows": [run(teacher_model, tok, t, f"magnitude gradual {int(g['sparsity'] * 100)}%", **g)]}


def part_movement(teacher_model: Any, tok: Any, t: Any) -> dict[str, Any]:
    g = SETTINGS["gradual"]
    return {"rows": [run(teacher_model, tok, t, f"movement gradual {int(g['sparsity'] * 100)}%", criterion="movement",
                         score_examples=SETTINGS["movement_score_examples"], **g)]}


def part_latency(teacher_model: Any, tok: Any, t: Any) -> dict[str, Any]:
    """Batch-32 latency of every saved model of the other parts vs the teacher, interleaved in one run."""
    from slimformer import models
    from slimformer.bench import compare_latency

    prev = json.loads((RESULTS / f"{NAME}.json").read_text())
    cands: dict[str, Any] = {"teacher": teacher_model}
    for part in ("oneshot", "gradual", "movement"):
        for r in prev.get(part, {}).get("rows", []):
            cands[r["model"]] = models.load(r["dir"])[0]
    lat = compare_latency(cands, tok, SETTINGS["batch"], SETTINGS["seq_len"], SETTINGS["threads"],
                          budget_s=SETTINGS["latency_budget_s"])
    base = lat["teacher"].median_ms
    return {"b32_ms": {k: round(v.median_ms, 1) for k, v in lat.items()},
            "runs": {k: v.runs for k, v in lat.items()},
            "b32": {k: v.summary() for k, v in lat.items()},  # spread and reliability
            "ratio_vs_teacher": {k: round(v.median_ms / base, 3) for k, v in lat.items()}}


PARTS = {"oneshot": part_oneshot, "gradual": part_gradual, "movement": part_movement, "latency": part_latency}


def main(parts: list[str]) -> None:
    from common import previous_parts, ready_teacher

    teacher_model, tok, t = ready_teacher("sst2", SETTINGS["threads"])
    results = previous_parts(NAME, set(PARTS) | {"teacher"})
    if "teacher" not in results:
        results["teacher"] = measure(teacher_model, tok, t, "teacher", None)
    for p in parts:
        t0 = time.perf_counter()
        try:
            results[p] = PARTS[p](teacher_model, tok, t)
        except Exception as e:  # record and go on with the next part
            import traceback

            traceback.print_exc()
            results[p] = {"error": f"{type(e).__name__}: {e}"}
        results[p]["part_wall_s"] = round(time.perf_counter() - t0, 1)
        print(f"part {p} done in {results[p]['part_wall_s']} s", flush=True)
        write_result(NAME, {"settings": SETTINGS, **results})
    print(markdown())


def markdown() -> str:
    """The table for docs/BENCHMARKS.md (section 6) from benchmarks/results/unstructured_sst2.json."""
    d = json.loads((RESULTS / f"{NAME}.json").read_text())
    lat = d.get("latency", {}).get("ratio_vs_teacher", {})
    ms = d.get("latency", {}).get("b32_ms", {})
    cols = ["model", "sparsity (encoder Linears)", "dev acc", "params nonzero", "dense MB", "sparse-encoded MB",
            "b32 ms", "b32 latency vs teacher", "prune + recovery s"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    rows = [d["teacher"]] + [r for p in ("oneshot", "gradual", "movement") for r in d.get(p, {}).get("rows", [])]
    for r in rows:
        vals = [r["model"], r.get("sparsity_included", 0.0), r["dev_acc"], f"{r['params_nonzero']:,}", r["dense_mb"],
                r["sparse_mb"], ms.get(r["model"], "not run"), lat.get(r["model"], "not run"),
                r.get("prune_and_recovery_s", "")]
        out.append("| " + " | ".join(str(v) for v in vals) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    from common import parts_cli

    parts_cli("bench_unstructured.py", PARTS, main, markdown)
