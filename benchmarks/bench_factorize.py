"""Factorization and sharing benchmark on the cached MiniLM SST-2 teacher.

- ALBERT-style embedding factorization at E = 256, 128, 64;
- truncated SVD of every attention and FFN projection at 75% and 50% of their parameters (uniform ratio; the
  spectrum allocation at 50% is evaluated before recovery as well);
- cross-layer sharing in groups of 2 and of 6 layers (init: first layer of the group).

Each variant: parameters, bytes on disk, dev accuracy before and after a short recovery by distillation from
the teacher (kd + ce, T=2, teacher logits cached; 1 epoch on the first 3000 training examples, max_len 64,
batch 32, lr 1e-4: the same budget for every variant). Latency: median at seq 128, batch 1 and 32, 2 threads,
all variants of a section and the teacher measured interleaved in one run (bench.compare_latency).

    flock /tmp/sf/cpu.lock env HF_HUB_OFFLINE=1 SLIMFORMER_QUIET=1 .venv/bin/python benchmarks/bench_factorize.py
"""
from __future__ import annotations

import argparse
import copy
import shutil
import time
from typing import Any

from common import CACHE, print_table, task, teacher, write_result

import torch

ROWS: list[dict[str, Any]] = []
RECOVERY_S: list[float] = []


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--examples", type=int, default=3000, help="training examples for each recovery")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--max-len", type=int, default=64, help="truncation for recovery training")
    ap.add_argument("--sections", default="emb,svd,share",
                    help="comma list of emb, embw (token-weighted embedding SVD vs plain at E=128), svd, share, "
                    "control (the unfactorized teacher given the same recovery: how much is just more training)")
    ap.add_argument("--powers", default="0.5", help="embw: weighting powers to evaluate; the first is recovered")
    ap.add_argument("--out", default=None, help="result name (default factorize_<task>)")
    ap.add_argument("--latency-budget", type=float, default=5.0, help="seconds of timing per model and batch")
    ap.add_argument("--stop-at", default=None, help="UTC HH:MM: skip recoveries that would end after it "
                    "(rows then carry accuracy before recovery only, marked recovery_skipped)")
    args = ap.parse_args()

    from slimformer.bench import compare_latency, saved_size
    from slimformer.distill import Distill, distill
    from slimformer.evaluate import evaluate_task
    from slimformer.factorize import Factorize, choose_ranks, factorize_embeddings, factorize_linears
    from slimformer.factorize.embeddings import task_token_weights
    from slimformer.models import num_params
    from slimformer.share import share_layers

    torch.set_num_threads(2)
    t0_all = time.perf_counter()
    teach, tok = teacher(args.task)
    t = task(args.task)
    metric = t.main_metric
    cache = CACHE / "work" / "factorize" / "teacher_logits.safetensors"

    def acc(model: Any) -> float:
        return round(evaluate_task(model, tok, t, "dev", max_len=128)[metric], 4)

    def recover(model: Any, name: str) -> dict[str, Any]:
        work = CACHE / "work" / "factorize" / f"{args.task}-{name}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        if cache.is_file():
            shutil.copy(cache, work / "teacher_logits.safetensors")  # same subset: the fingerprint matches
        cfg = Distill(kd=1.0, ce=0.5, temperature=2.0, epochs=args.epochs, lr=args.lr, batch_size=32,
                      max_train_examples=args.examples, cache_teacher=True, save_steps=10_000)
        _, stats = distill(model, teach, tok, t, cfg, work, max_len=args.max_len)
        if not cache.is_file():
            shutil.copy(work / "teacher_logits.safetensors", cache)
        shutil.rmtree(work, ignore_errors=True)
        return {"train_s": stats["train_runtime_s"]}

    def variant(section: str, name: str, model: Any, extra: dict[str, Any] | None = None,
                do_recover: bool = True) -> dict[str, Any]:
        row = {"section": section, "name": name, "params": num_params(model), "size_mb": saved_size(model) / 1e6,
               **(extra or {})}
        if time_left() < 0:  # past --stop-at: parameters and size only
            row["not_evaluated"] = "time limit (--stop-at)"
            ROWS.append(row)
            save(LAT, t0_all, args)
            return row
        row[f"{metric}_before"] = acc(model)
        if do_recover and time_left() < 1.5 * max(RECOVERY_S or [120.0]):
            row["recovery_skipped"] = "time limit (--stop-at)"
        elif do_recover:
            t0 = time.perf_counter()
            row.update(recover(model, name.replace(" ", "_")))
            row[f"{metric}_after"] = acc(model)
            RECOVERY_S.append(time.perf_counter() - t0)
        row["drop_pt"] = round(100 * (teacher_acc - row.get(f"{metric}_after", row[f"{metric}_before"])), 2)
        print(row, flush=True)
        ROWS.append(row)
        save(LAT, t0_all, args)
        return row

    def time_left() -> float:
        if not args.stop_at:
            return float("inf")
        now = time.gmtime()
        hh, mm = (int(x) for x in args.stop_at.split(":"))
        return (hh * 60 + mm) * 60 - (now.tm_hour * 3600 + now.tm_min * 60 + now.tm_sec)

    def latency(section: str, models: dict[str, Any]) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        if time_left() < 90:
            print(f"{section}: latency skipped (--stop-at)", flush=True)
            return out
        for b in (1, 32):
            lat = compare_latency({"teacher": teach, **models}, tok, batch=b, seq_len=128, n_threads=2,
                                  budget_s=args.latency_budget)
            for k, v in lat.items():
                out.setdefault(k, {})[f"b{b}_ms"] = round(v.median_ms, 2)
                out[k][f"b{b}_runs"] = v.runs
                out[k][f"b{b}"] = v.summary()  # spread and reliability
        for k, v in out.items():
            v["b1_vs_teacher"] = round(v["b1_ms"] / out["teacher"]["b1_ms"], 3)
            v["b32_vs_teacher"] = round(v["b32_ms"] / out["teacher"]["b32_ms"], 3)
        print(section, out, flush=True)
        LAT[section] = out
        save(LAT, t0_all, args)
        return out

    LAT: dict[str, Any] = {}
    teacher_acc = acc(teach)
    ROWS.append({"section": "teacher", "name": "MiniLM SST-2 teacher", "params": num_params(teach),
                 "size_mb": saved_size(teach) / 1e6, f"{metric}_before": teacher_acc, "drop_pt": 0.0})
    sections = args.sections.split(",")

    # each section: build the variants, time them (latency does not change with recovery), then evaluate
    # before and after recovery; the most important variant of each section first
    if "emb" in sections:
        s2 = torch.linalg.svdvals(teach.bert.embeddings.word_embeddings.weight.detach().double()) ** 2
        made = {f"E={e}": factorize_embeddings(copy.deepcopy(teach), e) for e in (128, 256, 64)}
        latency("embeddings", made)
        for name, m in made.items():
            e = int(name[2:])
            variant("embeddings", name, m, {"E": e, "energy_kept": round(float(s2[:e].sum() / s2.sum()), 4)})
        del made

    if "embw" in sections:  # plain vs token-weighted SVD at E = 128, the same recovery budget for both
        v = teach.bert.embeddings.word_embeddings.weight.shape[0]
        powers = [float(x) for x in args.powers.split(",")]
        made = {"E=128 plain SVD": factorize_embeddings(copy.deepcopy(teach), 128)}
        for pw in powers:
            made[f"E=128 weighted p={pw:g}"] = factorize_embeddings(copy.deepcopy(teach), 128,
                                                                    task_token_weights(tok, t, v, pw))
        latency("embeddings_weighted", {k: made[k] for k in list(made)[:2]})
        for i, (name, m) in enumerate(made.items()):
            variant("embeddings_weighted", name, m, {"E": 128}, do_recover=i <= 1)
        del made

    if "control" in sections:
        variant("control", "teacher, no factorization, same recovery", copy.deepcopy(teach))

    if "svd" in sections:
        made, info = {}, {}
        for ratio in (0.75, 0.5):
            m = copy.deepcopy(teach)
            ranks, skipped = choose_ranks(m, Factorize(ratio=ratio))
            made[f"SVD {int(ratio * 100)}%"] = factorize_linears(m, ranks)
            info[f"SVD {int(ratio * 100)}%"] = {"ranks": sorted(set(ranks.values())), "skipped": len(skipped)}
        latency("svd", made)
        m = copy.deepcopy(teach)
        ranks, skipped = choose_ranks(m, Factorize(ratio=0.5, allocation="spectrum"))
        factorize_linears(m, ranks)
        variant("svd", "SVD 50% spectrum allocation", m,
                {"ranks": [min(ranks.values()), max(ranks.values())], "skipped": len(skipped)}, do_recover=False)
        for name, m in made.items():
            variant("svd", name, m, info[name])
        del made

    if "share" in sections:
        made = {}
        for k in (2, 6):
            m = copy.deepcopy(teach)
            made[f"share groups of {k}"] = share_layers(m, [list(range(i, i + k)) for i in range(0, 6, k)], "first")
        latency("share", made)
        for name, m in made.items():
            variant("share", name, m, {"groups": 6 // int(name.split()[-1])})
        del made

    save(LAT, t0_all, args, final=True)


def save(lat: dict[str, Any], t0: float, args: Any, final: bool = False) -> None:
    """Write benchmarks/results/factorize_<task>.json (also after each section, so a cut-short run keeps its rows)."""
    wall = round(time.perf_counter() - t0, 1)
    settings = {"recovery": f"distill kd=1 ce=0.5 T=2, {args.epochs:g} epoch on {args.examples} train examples, "
                            f"max_len {args.max_len}, batch 32, lr {args.lr:g}, teacher logits cached",
                "eval": "SST-2 dev (872), max_len 128", "latency": "seq 128, batch 1 and 32, 2 threads, interleaved",
                "wall_s": wall}
    clean = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in ROWS]
    path = write_result(args.out or f"factorize_{args.task}", {"settings": settings, "rows": clean, "latency": lat,
                                                   "complete": final})
    if final:
        cols = ("name", "params", "size_mb", "accuracy_before", "accuracy_after", "drop_pt")
        print_table([{k: r.get(k) for k in cols} for r in clean], "factorize / share")
        print(f"wrote {path} in {wall}s")


if __name__ == "__main__":
    main()
