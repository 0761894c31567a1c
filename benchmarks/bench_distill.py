"""Distillation benchmark on a cached MiniLM teacher: 3-of-6-layer DistilBERT-init student, distilled vs plain
fine-tuning with the same budget vs the teacher; a loss-term ablation; wall time per epoch with and without the
teacher-logit cache; latency at seq 128, batch 1 and 32 (interleaved, same run).

    SLIMFORMER_QUIET=1 flock /tmp/sf/cpu.lock python benchmarks/bench_distill.py --task sst2 --ablation --general
    SLIMFORMER_QUIET=1 flock /tmp/sf/cpu.lock python benchmarks/bench_distill.py --task cola
"""
from __future__ import annotations

import argparse
import copy
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
    from slimformer.distill import distill
    from slimformer.evaluate import evaluate_task

    work = CACHE / "work" / "distill" / f"{args.task}-{name.replace(' ', '_')}"
    shutil.rmtree(work, ignore_errors=True)  # measure a full run, not a resume
    t0 = time.perf_counter()
    student, stats = distill(student, teach, tok, t, cfg, work, seed=args.seed, max_len=args.max_len)
    wall = time.perf_counter() - t0
    metrics = evaluate_task(student, tok, t, "dev", max_len=128)
    shutil.rmtree(work / "checkpoints", ignore_errors=True)
    print(f"{name}: {metrics} in {wall:.0f}s", flush=True)
    return {"name": name, **{k: round(v, 4) for k, v in metrics.items()}, "epochs": cfg.epochs,
            "wall_s": round(wall, 1), "train_s": stats["train_runtime_s"],
            "train_s_per_epoch": round(stats["train_runtime_s"] / cfg.epochs, 1),
            "teacher_cache_s": stats.get("teacher_cache_s"), "layer_map": stats.get("layer_map_text"),
            "student": student}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--ablation-epochs", type=float, default=1.0)
    ap.add_argument("--ablation-examples", type=int, default=3000, help="train examples per ablation run")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--ablation", action="store_true")
    ap.add_argument("--general", action="store_true", help="also: general distillation on WikiText-2 first")
    args = ap.parse_args()

    from slimformer.bench import compare_latency
    from slimformer.distill import Distill, make_student
    from slimformer.evaluate import evaluate_task
    from slimformer.models import num_params

    torch.set_num_threads(2)
    teach, tok = teacher(args.task)
    t = task(args.task)
    main_metric = t.main_metric
    teacher_metrics = evaluate_task(teach, tok, t, "dev", max_len=128)
    init = make_student(teach, every=2)  # DistilBERT init: teacher layers 0, 2, 4
    common = dict(lr=args.lr, batch_size=32, temperature=2.0)

    rows = [{"name": "teacher (6 layers)", **{k: round(v, 4) for k, v in teacher_metrics.items()}}]
    plain = run("plain fine-tuning", copy.deepcopy(init), teach, tok, t,
                Distill(kd=0.0, ce=1.0, epochs=args.epochs, **common), args)
    kd = run("distilled kd+ce (cached teacher)", copy.deepcopy(init), teach, tok, t,
             Distill(kd=1.0, ce=0.5, epochs=args.epochs, cache_teacher=True, **common), args)
    rows += [plain, kd]

    ablation = []
    if args.ablation:
        for name, w in ABLATION.items():
            ablation.append(run(f"ablation {name}", copy.deepcopy(init), teach, tok, t,
                                Distill(epochs=args.ablation_epochs, max_train_examples=args.ablation_examples, **w,
                                        **common), args))
    general = None
    if args.general:
        from slimformer.distill import DistillGeneral, distill_general

        g_student = copy.deepcopy(init)
        gcfg = DistillGeneral(text=str(DATA / "wikitext2"), hidden=1.0, attention=1.0, epochs=1, batch_size=16,
                              block_size=128, lr=1e-4, max_blocks=600)
        t0 = time.perf_counter()
        work = CACHE / "work" / "distill" / "general-wikitext2"
        shutil.rmtree(work, ignore_errors=True)
        g_student, gstats = distill_general(g_student, teach, tok, gcfg, work, seed=args.seed)
        g_wall = time.perf_counter() - t0
        general = run("general (WikiText-2) then kd + ce", g_student, teach, tok, t,
                      Distill(epochs=args.ablation_epochs, kd=1.0, ce=0.5, max_train_examples=args.ablation_examples,
                              **common), args)
        general.update({"general_wall_s": round(g_wall, 1), "general_blocks": gstats["blocks"],
                        "general_layer_map": gstats["layer_map_text"]})

    lat: dict[str, Any] = {}
    for b in (1, 32):
        res = compare_latency({"teacher": teach, "student": kd["student"]}, tok, b, 128, n_threads=2, budget_s=8.0)
        lat[f"b{b}"] = {k: v.as_dict() for k, v in res.items()}
        lat[f"b{b}"]["speedup"] = round(res["teacher"].median_ms / res["student"].median_ms, 2)

    t_score = teacher_metrics[main_metric]
    for r in rows[1:] + ablation + ([general] if general else []):
        r["retained_%"] = round(100 * r[main_metric] / t_score, 1) if t_score else None
    rows[0]["params"] = num_params(teach)
    kd["params"] = plain["params"] = num_params(kd["student"])
    rows[0]["latency_b32_ms"] = lat["b32"]["teacher"]["median_ms"]
    kd["latency_b32_ms"] = plain["latency_b32_ms"] = lat["b32"]["student"]["median_ms"]
    for r in rows[1:] + ablation + ([general] if general else []):
        r.pop("student", None)
    payload = {"task": args.task, "main_metric": main_metric, "settings": vars(args) | common,
               "student": "make_student(every=2): teacher layers 0, 2, 4", "results": rows, "ablation": ablation,
               "general": general, "latency_seq128_threads2": lat,
               "targets": {"retained_%": kd["retained_%"], "retained_ok": (kd["retained_%"] or 0) >= 97.0,
                           "speedup_b32": lat["b32"]["speedup"], "speedup_ok": lat["b32"]["speedup"] >= 1.8}}
    path = write_result(f"distill_{args.task}", payload)
    keep = ["name", *t.metrics, "retained_%", "epochs", "train_s_per_epoch", "teacher_cache_s", "params",
            "latency_b32_ms"]
    print_table([{k: r.get(k) for k in keep} for r in rows], f"distillation on {args.task} (dev)")
    if ablation or general:
        print_table([{k: r.get(k) for k in keep[:-2]} for r in ablation + ([general] if general else [])],
                    f"loss-term ablation on {args.task}: {args.ablation_epochs} epoch(s) over "
                    f"{args.ablation_examples} examples each")
    print(f"latency seq 128, 2 threads: b1 speedup {lat['b1']['speedup']}x, b32 speedup {lat['b32']['speedup']}x")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
