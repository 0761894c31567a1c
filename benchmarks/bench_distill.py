"""Distillation benchmark on a cached MiniLM teacher: a 3-of-6-layer DistilBERT-init student, distilled vs plain
fine-tuning with the same budget vs the teacher; a loss-term ablation at a small fixed budget; wall time per
epoch with and without the teacher-logit cache; optional task-agnostic distillation on WikiText-2 first;
latency at seq 128, batch 1 and 32 (teacher and student interleaved in the same run).

    flock /tmp/sf/cpu.lock env HF_HUB_OFFLINE=1 SLIMFORMER_QUIET=1 .venv/bin/python benchmarks/bench_distill.py \\
        --task sst2 --ablation --general
    flock /tmp/sf/cpu.lock env HF_HUB_OFFLINE=1 SLIMFORMER_QUIET=1 .venv/bin/python benchmarks/bench_distill.py \\
        --task cola

Defaults are shrunk to a shared 2-core CPU: training at max_len 64 on a train subset, no mid-run checkpoints.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from typing import Any

from common import CACHE, DATA, print_table, task, teacher, write_result

import torch

ABLATION = {  # name -> loss weights (everything else identical)
    "ce only (plain fine-tuning)": dict(kd=0.0, ce=1.0),
    "kd": dict(kd=1.0, ce=0.0),
    "kd + ce": dict(kd=1.0, ce=0.5),
    "kd + ce + cos": dict(kd=1.0, ce=0.5, cos=1.0),
    "kd + ce + hidden": dict(kd=1.0, ce=0.5, hidden=1.0),
    "kd + ce + attention": dict(kd=1.0, ce=0.5, attention=1.0),
    "kd + ce + pkd": dict(kd=1.0, ce=0.5, pkd=1.0),
}


def run(name: str, student: Any, teach: Any, tok: Any, t: Any, cfg: Any, args: Any) -> dict[str, Any]:
    """Distil (or fine-tune) student, evaluate on dev; a row of the result tables (with the model under 'student')."""
    from slimformer.distill import distill
    from slimformer.evaluate import evaluate_task

    work = CACHE / "work" / "distill" / f"{args.task}-{name.replace(' ', '_').replace('/', '_')}"
    shutil.rmtree(work, ignore_errors=True)  # measure a full run, not a resume, and build the cache afresh
    t0 = time.perf_counter()
    student, stats = distill(student, teach, tok, t, cfg, work, seed=args.seed, max_len=args.max_len)
    wall = time.perf_counter() - t0
    metrics = evaluate_task(student, tok, t, "dev", max_len=128)
    shutil.rmtree(work, ignore_errors=True)
    train_s = stats["train_runtime_s"]
    row = {"name": name, **{k: round(v, 4) for k, v in metrics.items()}, "epochs": cfg.epochs,
           "examples": cfg.max_train_examples or len(t.split("train")), "wall_s": round(wall, 1),
           "train_s": round(train_s, 1), "train_s_per_epoch": round(train_s / cfg.epochs, 1),
           "teacher_cache_s": stats.get("teacher_cache_s"), "layer_map": stats.get("layer_map_text"),
           "weights": stats["weights"], "student": student}
    print(f"{name}: {metrics} train {train_s:.0f}s wall {wall:.0f}s", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--epochs", type=float, default=2.0, help="epochs of the main runs")
    ap.add_argument("--train-examples", type=int, default=None, help="train subset of the main runs (default all)")
    ap.add_argument("--terms", default='{"kd": 1.0, "ce": 0.5}', help="loss weights of the main distilled run")
    ap.add_argument("--ablation-epochs", type=float, default=1.0)
    ap.add_argument("--ablation-examples", type=int, default=1500, help="train examples per ablation run")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--max-len", type=int, default=64, help="training sequence length (eval uses 128)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--ablation", action="store_true", help="the loss-term ablation table")
    ap.add_argument("--cache", action="store_true", help="kd + ce with and without the teacher cache (ablation size)")
    ap.add_argument("--general", action="store_true", help="task-agnostic distillation on WikiText-2 first")
    ap.add_argument("--general-blocks", type=int, default=300)
    ap.add_argument("--latency-budget", type=float, default=6.0, help="seconds per model per batch size")
    ap.add_argument("--layers", default="0,2,4", help="teacher layers the student keeps (DistilBERT: 0,2,4)")
    ap.add_argument("--skip-plain", action="store_true", help="no plain fine-tuning run (e.g. a follow-up run)")
    ap.add_argument("--out", default=None, help="result name (default distill_<task>)")
    args = ap.parse_args()

    from slimformer.bench import compare_latency
    from slimformer.reliability import speedup
    from slimformer.distill import Distill, make_student
    from slimformer.evaluate import evaluate_task
    from slimformer.models import num_params

    torch.set_num_threads(2)
    t_start = time.perf_counter()
    teach, tok = teacher(args.task)
    t = task(args.task)
    main_metric = t.main_metric
    teacher_metrics = evaluate_task(teach, tok, t, "dev", max_len=128)
    print(f"teacher: {teacher_metrics}", flush=True)
    keep = [int(x) for x in args.layers.split(",")]
    init = make_student(teach, layers=keep)  # DistilBERT init 0,2,4: every 2nd layer (+ embeddings, pooler, head)
    common = dict(lr=args.lr, batch_size=32, temperature=args.temperature, save_steps=10**6)
    terms = json.loads(args.terms)
    cacheable = not any(terms.get(k) for k in ("cos", "hidden", "attention", "pkd"))

    rows = [{"name": "teacher (6 layers)", **{k: round(v, 4) for k, v in teacher_metrics.items()}}]
    main_cfg = dict(epochs=args.epochs, max_train_examples=args.train_examples, **common)
    plain = None if args.skip_plain else run("plain fine-tuning (ce only)", copy.deepcopy(init), teach, tok, t,
                                              Distill(kd=0.0, ce=1.0, **main_cfg), args)
    label = " + ".join(k for k, v in terms.items() if v) + (" (cached teacher)" if cacheable else "")
    kd = run(f"distilled {label}", copy.deepcopy(init), teach, tok, t,
             Distill(**terms, cache_teacher=cacheable, **main_cfg), args)
    rows += [r for r in (plain, kd) if r]

    small = dict(epochs=args.ablation_epochs, max_train_examples=args.ablation_examples, **common)
    cache_rows: list[dict[str, Any]] = []
    if args.cache or args.ablation:
        cache_rows = [run("kd + ce", copy.deepcopy(init), teach, tok, t, Distill(kd=1.0, ce=0.5, **small), args),
                      run("kd + ce (cached teacher)", copy.deepcopy(init), teach, tok, t,
                          Distill(kd=1.0, ce=0.5, cache_teacher=True, **small), args)]
    ablation = []
    if args.ablation:
        for name, w in ABLATION.items():
            ablation.append(cache_rows[0] if name == "kd + ce" else
                            run(name, copy.deepcopy(init), teach, tok, t, Distill(**w, **small), args))
    general = None
    if args.general:
        from slimformer.distill import DistillGeneral, distill_general

        gcfg = DistillGeneral(text=str(DATA / "wikitext2"), hidden=1.0, attention=1.0, epochs=1, batch_size=16,
                              block_size=128, lr=1e-4, max_blocks=args.general_blocks, save_steps=10**6)
        work = CACHE / "work" / "distill" / "general-wikitext2"
        shutil.rmtree(work, ignore_errors=True)
        t0 = time.perf_counter()
        g_student, gstats = distill_general(copy.deepcopy(init), teach, tok, gcfg, work, seed=args.seed)
        g_wall = time.perf_counter() - t0
        shutil.rmtree(work, ignore_errors=True)
        general = run("WikiText-2 general (hidden + attention), then kd + ce", g_student, teach, tok, t,
                      Distill(kd=1.0, ce=0.5, **small), args)
        general.update({"general_wall_s": round(g_wall, 1), "general_blocks": gstats["blocks"],
                        "general_layer_map": gstats["layer_map_text"]})

    lat: dict[str, Any] = {}
    for b in (1, 32):
        res = compare_latency({"teacher": teach, "student": kd["student"]}, tok, b, 128, n_threads=2,
                              budget_s=args.latency_budget)
        lat[f"b{b}"] = {k: v.as_dict() for k, v in res.items()}
        lat[f"b{b}"]["speedup"] = round(res["teacher"].median_ms / res["student"].median_ms, 2)
        lat[f"b{b}"]["speedup_band"] = speedup(res["teacher"].summary(), res["student"].summary(),
                                               ("teacher", "student"))

    t_score = teacher_metrics[main_metric]
    others = rows[1:] + cache_rows + ablation + ([general] if general else [])
    for r in others:
        r["retained_%"] = round(100 * r[main_metric] / t_score, 1) if t_score else None
    rows[0]["params"] = num_params(teach)
    for r in rows[1:]:
        r["params"] = num_params(kd["student"])
        r["latency_b32_ms"] = lat["b32"]["student"]["median_ms"]
    rows[0]["latency_b32_ms"] = lat["b32"]["teacher"]["median_ms"]
    for r in others:
        r.pop("student", None)
    cache = None
    if cache_rows:
        live, cached = cache_rows
        cache = {"examples": args.ablation_examples, "live_s_per_epoch": live["train_s_per_epoch"],
                 "cached_s_per_epoch": cached["train_s_per_epoch"], "cache_build_s": cached["teacher_cache_s"],
                 "saved_s_per_epoch": round(live["train_s_per_epoch"] - cached["train_s_per_epoch"], 1),
                 "same_metric": live[main_metric] == cached[main_metric]}
    payload = {"task": args.task, "main_metric": main_metric, "settings": vars(args) | common,
               "student": f"make_student(layers={keep}) of the 6-layer teacher", "results": rows,
               "cache": cache, "cache_rows": cache_rows, "ablation": ablation, "general": general,
               "latency_seq128_threads2": lat, "total_wall_s": round(time.perf_counter() - t_start, 1),
               "targets": {"retained_%": kd["retained_%"], "retained_ok": (kd["retained_%"] or 0) >= 97.0,
                           "speedup_b32": lat["b32"]["speedup"], "speedup_ok": lat["b32"]["speedup"] >= 1.8}}
    path = write_result(args.out or f"distill_{args.task}", payload)
    keep = ["name", *t.metrics, "retained_%", "epochs", "examples", "train_s_per_epoch", "teacher_cache_s",
            "params", "latency_b32_ms"]
    print_table([{k: r.get(k) for k in keep} for r in rows], f"distillation on {args.task} (dev)")
    if cache_rows:
        print_table([{k: r.get(k) for k in keep[:-2]} for r in cache_rows], "teacher-logit cache")
    if ablation or general:
        print_table([{k: r.get(k) for k in keep[:-2]} for r in ablation + ([general] if general else [])],
                    f"loss-term ablation on {args.task}: {args.ablation_epochs} epoch(s) over "
                    f"{args.ablation_examples} examples each")
    print(f"latency seq 128, 2 threads: b1 speedup {lat['b1']['speedup']}x, b32 speedup {lat['b32']['speedup']}x")
    print(f"total {payload['total_wall_s']}s; wrote {path}")


if __name__ == "__main__":
    main()
