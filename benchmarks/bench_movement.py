"""Movement pruning on MiniLM / SST-2: gradual magnitude vs hard vs soft movement at equal budget, block movement
(heads + FFN neurons removed) vs prune_heads + prune_ffn at equal size, and whether sparse kernels pay.

    flock /tmp/slimformer-heavy.lock env HF_HUB_OFFLINE=1 SLIMFORMER_QUIET=1 .venv/bin/python \
        benchmarks/bench_movement.py main block latency sparse long   # measured; curve, seeds: not run yet
    ... benchmarks/bench_movement.py paper short labels_curve        # labels only: no teacher needed
    ... benchmarks/bench_movement.py block_init latency block_early  # magnitude-initialised block movement

Each part merges its figures into benchmarks/results/movement_sst2.json (rows are written as they finish).
Budget (SETTINGS): every unstructured model and the first block model are fine-pruned from the pre-trained packaged
`minilm` (new classifier head), as in the paper, for `steps` optimizer steps (120; 480 in `long`) of batch 32 at
train max_len 64, distilled from the SST-2 teacher (kd 1 + ce 0.5, T 2, teacher logits cached), weights lr `lr`,
scores lr `score_lr`, pruning warm-up 10% / cool-down 20% of the run, cubic schedule in between. Encoder
q/k/v/output and FFN up/down Linears only. Dev accuracy at max_len 128 on the 872 dev sentences. The second block
model and the structured baseline (prune_heads + prune_ffn, gradient importance) start from the fine-tuned
teacher, as slimformer's demo does, with the same distillation budget.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any

from common import CACHE, RESULTS, previous_parts, write_result

SETTINGS = dict(seed=42, steps=120, batch=32, train_max_len=64, eval_max_len=128, lr=1e-4, score_lr=1e-2,
                kd=1.0, ce=0.5, temperature=2.0, threads=2, seq_len=128, latency_budget_s=20.0,
                block_sparsity=0.5, kernel_budget_s=4.0)
WORK = CACHE / "work" / "bench_movement"
NAME = "movement_sst2"
if os.environ.get("BENCH_SMOKE"):  # a few steps of every part, to check the script before a long run
    SETTINGS.update(steps=2, latency_budget_s=1.0, kernel_budget_s=0.2, eval_examples=32)
    WORK, NAME = WORK.with_name("bench_movement_smoke"), "movement_sst2_smoke"
METHODS = ("magnitude", "hard", "soft")
LABELS = dict(kd=0.0, ce=1.0, cache_teacher=False)  # fine_prune overrides for a run on the labels alone
_STATE: dict[str, Any] = {}


def accuracy(model: Any, tok: Any, t: Any) -> float:
    from slimformer.evaluate import evaluate_task

    return round(100 * evaluate_task(model, tok, t, "dev", SETTINGS["eval_max_len"],
                                     SETTINGS.get("eval_examples"))["accuracy"], 2)


def _slug(name: str) -> str:
    return name.replace(" ", "_").replace("%", "").replace("+", "_")


def _teacher_cache() -> Any:
    """The cached teacher logits of the current task's train set (shared by the smoke run)."""
    name = _STATE["task"].name
    return CACHE / "work" / "bench_movement" / f"teacher_logits{'' if name == 'sst2' else '_' + name}.safetensors"


def _scores(model: Any, tok: Any, t: Any) -> dict[str, Any]:
    """Every metric of a task other than SST-2, on dev and (where it has one) test, in points; for SST-2 (whose
    dev accuracy is the row's `dev_acc`) the test split's accuracy, if the task has one."""
    from slimformer.evaluate import evaluate_task

    if t.name == "sst2":
        return {"test_acc": round(100 * evaluate_task(model, tok, t, "test", SETTINGS["eval_max_len"], SETTINGS.get(
            "eval_examples"))["accuracy"], 2)} if "test" in t.splits else {}
    return {"scores": {sp: {k: round(100 * v, 2) for k, v in evaluate_task(model, tok, t, sp, SETTINGS[
        "eval_max_len"]).items()} for sp in ("dev", "test") if sp in t.splits}}


def budget_steps(steps: int | None) -> int:
    """A run's optimizer steps: `steps`, else the shared budget (always the smoke budget in a smoke run)."""
    return SETTINGS["steps"] if os.environ.get("BENCH_SMOKE") else steps or SETTINGS["steps"]


def fine_prune(name: str, variant: str, sparsity: float, block: bool = False, seed: int | None = None,
               start: str = "minilm", steps: int | None = None, **override: Any) -> dict[str, Any]:
    """One fine-pruning run on the shared budget (PruneMovement fields in `override` replace it; kd 0 runs on
    the labels alone, without the teacher); the model is saved for the latency / sparse parts."""
    import slimformer as sf
    from slimformer import models
    from slimformer.models.io import clone, num_params
    from slimformer.prune.movement import PruneMovement, prune_movement

    teacher, tok, t = _STATE.get("teacher"), _STATE["tok"], _STATE["task"]
    model = clone(teacher) if start == "teacher" else models.load("minilm", task=t)[0]
    seed = SETTINGS["seed"] if seed is None else seed
    steps = budget_steps(steps)
    fields = dict(variant=variant, sparsity=sparsity, block=block, max_steps=steps, batch_size=SETTINGS["batch"],
                  lr=SETTINGS["lr"], score_lr=SETTINGS["score_lr"], kd=SETTINGS["kd"], ce=SETTINGS["ce"],
                  temperature=SETTINGS["temperature"], cache_teacher=True, save_steps=steps,
                  score_init="zeros")  # the paper's start (the step's default is magnitude since 2026-12-02)
    fields.update(override)
    cfg = PruneMovement(**fields)
    labels_only = not cfg.kd
    if labels_only:
        teacher = None
    work = WORK / "train" / _slug(name)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if _teacher_cache().exists() and not labels_only:  # the same train set every run: logits computed once
        shutil.copy(_teacher_cache(), work / "teacher_logits.safetensors")
    t0 = time.perf_counter()
    model, info = prune_movement(model, teacher, tok, t, cfg, work, seed=seed, max_len=SETTINGS["train_max_len"])
    wall = round(time.perf_counter() - t0, 1)
    if not _teacher_cache().exists() and not labels_only:
        _teacher_cache().parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(work / "teacher_logits.safetensors", _teacher_cache())
    shutil.rmtree(work, ignore_errors=True)
    out = WORK / "models" / _slug(name)
    sf.save(model, tok, out)
    row = {"model": name, "variant": variant, "block": block, "target_sparsity": sparsity, "seed": seed, "steps": steps,
           "start": start, "dev_acc": accuracy(model, tok, t), "remaining": info["remaining"],
           "params": num_params(model), "train_s": wall, "train_loss": info["train"].get("train_loss"),
           "dir": str(out), **({"override": override} if override else {})}
    row.update(_scores(model, tok, t))
    if block:
        row.update(heads_kept=sum(info["heads_kept"].values()), ffn_kept=sum(info["ffn_kept"].values()),
                   heads_by_layer=list(info["heads_kept"].values()), ffn_by_layer=list(info["ffn_kept"].values()))
    print({k: v for k, v in row.items() if k != "dir"}, flush=True)
    return row


def structured_baseline(keep: float, suffix: str = "", seed: int | None = None, steps: int | None = None
                        ) -> dict[str, Any]:
    """prune_heads + prune_ffn (gradient importance, global) on the teacher, then the same distillation budget
    (`steps` replaces its length)."""
    import slimformer as sf
    from slimformer.distill.step import Distill, distill
    from slimformer.models.io import clone, num_params

    teacher, tok, t = _STATE["teacher"], _STATE["tok"], _STATE["task"]
    name = f"prune_heads+prune_ffn keep {keep}{suffix}"
    work = WORK / "train" / _slug(name)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copy(_teacher_cache(), work / "teacher_logits.safetensors")
    t0 = time.perf_counter()
    model = clone(teacher)
    ml, seed = SETTINGS["train_max_len"], SETTINGS["seed"] if seed is None else seed
    steps = budget_steps(steps)
    model, _ = sf.prune_heads(model, sf.PruneHeads(keep=keep), tok, t, work / "heads", seed, ml)
    model, _ = sf.prune_ffn(model, sf.PruneFFN(keep=keep), tok, t, work / "ffn", seed, ml)
    cfg = Distill(kd=SETTINGS["kd"], ce=SETTINGS["ce"], temperature=SETTINGS["temperature"], lr=SETTINGS["lr"],
                  max_steps=steps, batch_size=SETTINGS["batch"], cache_teacher=True, warmup_ratio=0.1,
                  save_steps=steps)
    model, _ = distill(model, teacher, tok, t, cfg, work, seed, ml)
    wall = round(time.perf_counter() - t0, 1)
    shutil.rmtree(work, ignore_errors=True)
    out = WORK / "models" / _slug(name)
    sf.save(model, tok, out)
    row = {"model": name, "start": "teacher", "seed": seed, "steps": steps, "dev_acc": accuracy(model, tok, t),
           "params": num_params(model), "train_s": wall, "dir": str(out), **_scores(model, tok, t)}
    print({k: v for k, v in row.items() if k != "dir"}, flush=True)
    return row


def with_baseline(out: dict[str, Any], results: dict[str, Any], suffix: str = "") -> dict[str, Any]:
    """Add the structured baseline at the block sparsity to a part's rows unless it is there already."""
    if not any(r["model"].startswith("prune_heads") for r in out["rows"]):
        out["rows"].append(structured_baseline(1 - SETTINGS["block_sparsity"], suffix))
        write_result(NAME, {"settings": SETTINGS, **results})
    return out


def _runs(part: str, specs: list[tuple[str, dict[str, Any]]], results: dict[str, Any]) -> dict[str, Any]:
    """Run specs (name, fine_prune kwargs) not already in results[part], saving the JSON after each."""
    done = {r["model"] for r in results.get(part, {}).get("rows", [])}
    results.setdefault(part, {"rows": []})
    for name, kw in specs:
        if name in done:
            continue
        try:
            results[part]["rows"].append(fine_prune(name, **kw))
        except Exception as e:  # record and go on with the next run
            import traceback

            traceback.print_exc()
            results[part]["rows"].append({"model": name, "error": f"{type(e).__name__}: {e}"})
        write_result(NAME, {"settings": SETTINGS, **results})
    return results[part]


def _grid(remaining: list[float], seed: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    tag = "" if seed is None else f" seed {seed}"
    return [(f"{v} {int(round(r * 100))}%{tag}", dict(variant=v, sparsity=round(1 - r, 4), seed=seed))
            for r in remaining for v in METHODS]


def part_main(results: dict[str, Any]) -> dict[str, Any]:
    return _runs("main", _grid([0.10] if os.environ.get("BENCH_SMOKE") else [0.10, 0.05]), results)


def part_curve(results: dict[str, Any]) -> dict[str, Any]:
    return _runs("curve", _grid([0.50, 0.30]), results)


def part_seeds(results: dict[str, Any]) -> dict[str, Any]:
    return _runs("seeds", _grid([0.10], seed=43), results)


def part_long(results: dict[str, Any]) -> dict[str, Any]:
    """4x the budget (480 steps, so a 48-step warm-up for the scores) at 10% remaining: magnitude vs hard."""
    return _runs("long", [(f"{v} 10% 480 steps", dict(variant=v, sparsity=0.9, steps=480))
                          for v in ("magnitude", "hard")], results)


def paper_budget() -> dict[str, Any]:
    """The reference code's schedule scaled to this SST-2 (6,920 sentences, 217 steps of 32 per epoch): pruning
    starts after 1 epoch (= the LR warm-up, as `--initial_warmup 1` in units of `--warmup_steps`), the cubic
    schedule runs for 2 epochs, the final mask is held for 1; labels only (the paper's main comparison has no
    distillation), weights at the teacher recipe's 5e-5, scores at 1e-2."""
    epochs = float(os.environ.get("PAPER_EPOCHS", "4"))
    steps = 2 if os.environ.get("BENCH_SMOKE") else round(epochs * 6920 / SETTINGS["batch"])
    return dict(steps=steps, prune_warmup=round(1 / epochs, 4), prune_cooldown=round(1 / epochs, 4),
                warmup_ratio=round(1 / epochs, 4), lr=5e-5, **LABELS)


def part_paper(results: dict[str, Any]) -> dict[str, Any]:
    """Magnitude vs hard movement (scores from 0, and from magnitude) at 10% remaining on the paper-shaped
    budget (labels only)."""
    b = paper_budget()
    specs = [(f"{v} 10% {b['steps']} steps labels only", dict(variant=v, sparsity=0.9, **b))
             for v in ("magnitude", "hard")]
    specs.append((f"hard, score_init magnitude 10% {b['steps']} steps labels only",
                  dict(variant="hard", sparsity=0.9, score_init="magnitude", **b)))
    return _runs("paper", specs, results)


def part_short(results: dict[str, Any]) -> dict[str, Any]:
    """The main part's 120-step budget, labels only: magnitude, hard from zero, hard and soft from magnitude."""
    specs = [("magnitude 10% 120 steps labels only", dict(variant="magnitude", sparsity=0.9, **LABELS)),
             ("hard 10% 120 steps labels only", dict(variant="hard", sparsity=0.9, **LABELS))]
    specs += [(f"{v}, score_init magnitude 10% 120 steps labels only",
               dict(variant=v, sparsity=0.9, score_init="magnitude", **LABELS)) for v in ("hard", "soft")]
    return _runs("short", specs, results)


def _labels_grid(remaining: list[float], seed: int | None = None, steps: int = 120) -> list[tuple[str, dict[str, Any]]]:
    """Labels-only runs: gradual magnitude, hard and soft movement with magnitude-initialised scores."""
    tag = "" if seed is None else f" seed {seed}"
    out = []
    for r in remaining:
        for v in METHODS:
            init = {} if v == "magnitude" else {"score_init": "magnitude"}
            pct = int(round(r * 100))
            name = f"{v}{', score_init magnitude' if init else ''} {pct}% {steps} steps labels only{tag}"
            out.append((name, dict(variant=v, sparsity=round(1 - r, 4), seed=seed, steps=steps, **init, **LABELS)))
    return out


def part_labels_curve(results: dict[str, Any]) -> dict[str, Any]:
    """The curve 50/30/10/5% remaining at 120 steps, labels only, and a second seed at 10% (the 10% point of
    seed 42 is the `short` part's)."""
    return _runs("labels_curve", _labels_grid([0.50, 0.30, 0.05]) + _labels_grid([0.10], seed=43), results)


def part_block_init(results: dict[str, Any]) -> dict[str, Any]:
    """Block hard movement with magnitude-initialised scores (heads and neurons by weight norm first), distilled,
    from the teacher and from the pre-trained minilm: the block part's budget otherwise."""
    s = SETTINGS["block_sparsity"]
    k = int(round((1 - s) * 100))
    out = _runs("block_init", [(f"block hard {k}% heads+ffn score_init magnitude from teacher",
                                dict(variant="hard", sparsity=s, block=True, start="teacher", score_init="magnitude")),
                               (f"block hard {k}% heads+ffn score_init magnitude",
                                dict(variant="hard", sparsity=s, block=True, score_init="magnitude"))], results)
    return with_baseline(out, results)  # the baseline, on this run's teacher


def part_block_early(results: dict[str, Any]) -> dict[str, Any]:
    """block_init's teacher run with the structure settled in the first 40% of the run (no warm-up) and 60% of
    the steps left to recover it (prune_heads + prune_ffn + distill recovers its structure for all of them);
    not timed: its shapes are those of block_init's models."""
    return _runs("block_early", [("block hard 50% heads+ffn score_init magnitude from teacher, early",
                                 dict(variant="hard", sparsity=SETTINGS["block_sparsity"], block=True, start="teacher",
                                      prune_warmup=0.0, prune_cooldown=0.6, score_init="magnitude"))], results)


def part_block_global(results: dict[str, Any]) -> dict[str, Any]:
    """block_init's teacher run with soft movement: one threshold over every layer's heads and neurons (weighted
    by the weights each covers), so layers keep unequal shares, as prune_heads / prune_ffn's global ranking
    does; hard block mode keeps the same share of every layer. Compared with block_init's baseline."""
    return _runs("block_global", [("block soft 50% heads+ffn score_init magnitude from teacher, global",
                                  dict(variant="soft", sparsity=SETTINGS["block_sparsity"], block=True,
                                       start="teacher", score_init="magnitude"))], results)


def part_block_grad(results: dict[str, Any]) -> dict[str, Any]:
    """block_init's teacher run with scores starting from gradient importance (prune_heads / prune_ffn's
    ranking), hard (the same share of every layer) and soft (one global threshold)."""
    s = SETTINGS["block_sparsity"]
    return _runs("block_grad", [(f"block {v} 50% heads+ffn score_init gradient from teacher",
                                dict(variant=v, sparsity=s, block=True, start="teacher", score_init="gradient"))
                               for v in ("hard", "soft")], results)


def part_block(results: dict[str, Any]) -> dict[str, Any]:
    s = SETTINGS["block_sparsity"]
    out = _runs("block", [(f"block hard {int(round((1 - s) * 100))}% heads+ffn", dict(variant="hard", sparsity=s,
                                                                                      block=True)),
                          (f"block hard {int(round((1 - s) * 100))}% heads+ffn from teacher",
                           dict(variant="hard", sparsity=s, block=True, start="teacher"))], results)
    return with_baseline(out, results)


def time_models(results: dict[str, Any], parts: tuple[str, ...], budget_s: float) -> dict[str, Any]:
    """The teacher and every saved model of `parts`, interleaved, batch 1 and 32, `budget_s` per batch size."""
    from slimformer import models
    from slimformer.bench import compare_latency

    cands: dict[str, Any] = {"teacher": _STATE["teacher"]}
    for r in [r for p in parts for r in results.get(p, {}).get("rows", [])]:
        if "dir" in r and os.path.isdir(r["dir"]):  # models of an earlier machine are gone: not timed
            cands[r["model"]] = models.load(r["dir"])[0].eval()
    out: dict[str, Any] = {"models": len(cands)}
    for b in (1, 32):
        lat = compare_latency(cands, _STATE["tok"], b, SETTINGS["seq_len"], SETTINGS["threads"],
                              budget_s=min(budget_s, SETTINGS["latency_budget_s"]) if os.environ.get("BENCH_SMOKE")
                              else budget_s)
        base = lat["teacher"].median_ms
        out[f"b{b}_ms"] = {k: round(v.median_ms, 2) for k, v in lat.items()}
        out[f"b{b}_speedup"] = {k: round(base / v.median_ms, 2) for k, v in lat.items()}
        out[f"b{b}"] = {k: v.summary() for k, v in lat.items()}
        print(b, out[f"b{b}_speedup"], flush=True)
    return out


def part_latency(results: dict[str, Any]) -> dict[str, Any]:
    """Teacher vs the block-pruned and structured models, batch 1 and 32, interleaved in one run each."""
    return time_models(results, ("block", "block_init", "block_global", "block_grad"), SETTINGS["latency_budget_s"])


def part_sparse(results: dict[str, Any]) -> dict[str, Any]:
    """Sizes of the unstructured models dense vs sparse-encoded (reloaded and compared), and the CSR curve."""
    import torch

    from slimformer import models
    from slimformer.prune.sparse_io import kernel_curve, load_sparse, save_sparse

    sizes = []
    for part in ("main", "curve"):
        for r in results.get(part, {}).get("rows", []):
            if "dir" not in r:
                continue
            m, tok = models.load(r["dir"])
            sparse_dir = WORK / "sparse" / _slug(r["model"])
            save_sparse(m, tok, sparse_dir)
            back, _ = load_sparse(sparse_dir)
            want, got = m.state_dict(), back.state_dict()
            same = want.keys() == got.keys() and all(torch.equal(v, got[k]) for k, v in want.items())
            sizes.append({"model": r["model"], "remaining": r["remaining"],
                          "dense_mb": round((WORK / "models" / _slug(r["model"]) / "model.safetensors").stat().st_size
                                            / 1e6, 2),
                          "sparse_mb": round((sparse_dir / "model.sparse.safetensors").stat().st_size / 1e6, 2),
                          "reloads_identical": same})
            print(sizes[-1], flush=True)
    curve = kernel_curve(rows=SETTINGS["batch"] * SETTINGS["seq_len"], threads=SETTINGS["threads"],
                         sparsities=[0.5, 0.7, 0.9, 0.95, 0.98, 0.99], budget_s=SETTINGS["kernel_budget_s"])
    for c in curve:
        print(c, flush=True)
    return {"sizes": sizes, "kernel": curve}


PARTS = {"main": part_main, "long": part_long, "paper": part_paper, "short": part_short, "block": part_block,
         "latency": part_latency, "curve": part_curve, "seeds": part_seeds, "sparse": part_sparse,
         "labels_curve": part_labels_curve, "block_init": part_block_init,
         "block_early": part_block_early, "block_global": part_block_global,
         "block_grad": part_block_grad}


# parts that never use the teacher (it is not fine-tuned for them)
LABELS_ONLY = {"paper", "short", "labels_curve"}


def main(parts: list[str]) -> None:
    from common import ready_teacher, task

    results = previous_parts(NAME, set(PARTS) | {"teacher"})
    if set(parts) <= LABELS_ONLY:
        from slimformer import models

        _STATE.update(tok=models.load("minilm")[1], task=task("sst2"))
    else:
        teacher, tok, t = ready_teacher("sst2", SETTINGS["threads"])
        _STATE.update(teacher=teacher, tok=tok, task=t)
        if "teacher" not in results:
            results["teacher"] = {"model": "teacher", "dev_acc": accuracy(teacher, tok, t)}
    for p in parts:
        t0 = time.perf_counter()
        try:
            results[p] = PARTS[p](results)
        except Exception as e:  # record and go on with the next part
            import traceback

            traceback.print_exc()
            results[p] = {**results.get(p, {}), "error": f"{type(e).__name__}: {e}"}
        results[p]["part_wall_s"] = round(time.perf_counter() - t0, 1)
        print(f"part {p} done in {results[p]['part_wall_s']} s", flush=True)
        write_result(NAME, {"settings": SETTINGS, **results})
    print(markdown())


def markdown() -> str:
    """The tables for docs/BENCHMARKS.md from benchmarks/results/movement_sst2.json."""
    d = json.loads((RESULTS / f"{NAME}.json").read_text())
    rows = [r for p in ("main", "curve", "seeds", "long") for r in d.get(p, {}).get("rows", []) if "dev_acc" in r]
    out = [f"teacher (dense, fine-tuned): {d.get('teacher', {}).get('dev_acc')}", "",
           "| remaining (target) | steps | seed | gradual magnitude | hard movement | soft movement |",
           "|---|---|---|---|---|---|"]

    def key(r: dict[str, Any]) -> tuple[float, int, int]:
        return round(1 - r["target_sparsity"], 4), r.get("steps", d["settings"]["steps"]), r["seed"]

    for rem, steps, seed in sorted({key(r) for r in rows}, key=lambda k: (-k[0], k[1], k[2])):
        cell = {r["variant"]: f"{r['dev_acc']} ({100 * r['remaining']:.1f}%)" for r in rows
                if key(r) == (rem, steps, seed)}
        out.append(f"| {100 * rem:.0f}% | {steps} | {seed} | " + " | ".join(cell.get(v, "not run") for v in METHODS)
                   + " |")
    paper = [r for p in ("short", "labels_curve", "paper") for r in d.get(p, {}).get("rows", []) if "dev_acc" in r]
    if paper:
        out += ["", "| labels only | steps | seed | dev acc | remaining | train loss | train s |",
                "|---|---|---|---|---|---|---|"]
        out += [f"| {r['variant']}{', score_init magnitude' if 'score_init' in r.get('override', {}) else ''} | "
                f"{r['steps']} | {r['seed']} | {r['dev_acc']} | {100 * r['remaining']:.1f}% | "
                f"{r['train_loss']:.3f} | {r['train_s']:.0f} |" for r in paper]
    lat = d.get("latency", {})
    out += ["", "| model | start | dev acc | params | heads kept | FFN neurons kept | b1 speed-up | b32 speed-up |",
            "|---|---|---|---|---|---|---|---|",
            f"| teacher | | {d.get('teacher', {}).get('dev_acc')} | | 72 | 9216 | 1.0 | 1.0 |"]
    for r in [r for p in ("block", "block_init", "block_early", "block_global", "block_grad")
              for r in d.get(p, {}).get("rows", [])]:
        if "dev_acc" in r:
            out.append(f"| {r['model']} | {r['start']} | {r['dev_acc']} | {r['params']:,} | {r.get('heads_kept', '')} "
                       f"| {r.get('ffn_kept', '')} | {lat.get('b1_speedup', {}).get(r['model'], 'not run')} | "
                       f"{lat.get('b32_speedup', {}).get(r['model'], 'not run')} |")
    return "\n".join(out)


if __name__ == "__main__":
    from common import parts_cli

    parts_cli("bench_movement.py", PARTS, main, markdown)
