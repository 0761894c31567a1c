"""Structured pruning on the MiniLM SST-2 teacher: heads / FFN curves, the 50%+50% target, TextPruner, layers.

    flock /tmp/sf/cpu.lock env HF_HUB_OFFLINE=1 SLIMFORMER_QUIET=1 .venv/bin/python benchmarks/bench_prune.py \
        target peer curve layers

Each part merges its figures into benchmarks/results/prune_sst2.json. Settings (SETTINGS below): gradient
importance (Michel et al.) on 256 seeded train examples at max_len 64, global scope; recovery = 1 epoch on
1000 train examples, max_len 64, lr 1e-4, batch 32 (the CPU budget of the shared machine); dev accuracy at max_len 128 on all 872 dev sentences;
latency: batch 1 and 32, seq len 128, 2 threads, every model of a part interleaved in one compare_latency run.
The `peer` part needs TextPruner in its own venv (see benchmarks/peers/textpruner_run.py).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from common import CACHE, RESULTS, ROOT, print_table, write_result

import torch

SETTINGS = dict(seed=42, train_max_len=64, eval_max_len=128, importance_examples=256, threads=2, seq_len=128,
                recovery=dict(epochs=1.0, max_train_examples=1000, lr=1e-4, batch_size=32),
                target_distill=dict(kd=1.0, ce=0.5, temperature=2.0, epochs=1.0, max_train_examples=3000, lr=1e-4,
                                    batch_size=32),
                target_rounds=2, latency_budget_s={"1": 5.0, "32": 25.0})
WORK = CACHE / "work" / "bench_prune"
PEER_PY = Path(os.environ.get("TEXTPRUNER_PY", CACHE / "peer-venv" / "bin" / "python"))
NAME = "prune_sst2"


def accuracy(model: Any, tok: Any, t: Any) -> float:
    from slimformer.evaluate import evaluate_task

    return round(100 * evaluate_task(model, tok, t, "dev", SETTINGS["eval_max_len"])["accuracy"], 2)


def recover(model: Any, tok: Any, t: Any, name: str) -> float:
    """The short recovery fine-tune of every pruned model; returns its wall time in seconds."""
    from slimformer.train import TrainConfig, finetune

    out = WORK / "ft" / name
    shutil.rmtree(out, ignore_errors=True)
    cfg = TrainConfig(max_len=SETTINGS["train_max_len"], seed=SETTINGS["seed"], save_steps=10_000,
                      **SETTINGS["recovery"])
    t0 = time.perf_counter()
    finetune(model, tok, t, cfg, out)
    shutil.rmtree(out, ignore_errors=True)
    return round(time.perf_counter() - t0, 1)


def latencies(models: dict[str, Any], tok: Any) -> dict[str, dict[str, float]]:
    """Median ms at batch 1 and 32 (seq 128, 2 threads), all models interleaved in one run per batch size."""
    from slimformer.bench import compare_latency

    out: dict[str, dict[str, float]] = {k: {} for k in models}
    for b, budget in ((1, SETTINGS["latency_budget_s"]["1"]), (32, SETTINGS["latency_budget_s"]["32"])):
        lat = compare_latency(models, tok, b, SETTINGS["seq_len"], SETTINGS["threads"], budget_s=budget)
        for k, v in lat.items():
            out[k][f"b{b}_ms"] = round(v.median_ms, 2)
            out[k][f"b{b}_runs"] = v.runs
            out[k][f"b{b}"] = v.summary()  # spread and reliability
    base = out.get("teacher")
    if base:
        for k in out:
            out[k]["speedup_b1"] = round(base["b1_ms"] / out[k]["b1_ms"], 3)
            out[k]["speedup_b32"] = round(base["b32_ms"] / out[k]["b32_ms"], 3)
    return out


def shape(model: Any) -> dict[str, Any]:
    from slimformer.models import get_adapter
    from slimformer.models.io import num_params

    ad = get_adapter(model)
    layers = ad.layers(model)
    return {"params": num_params(model), "heads_per_layer": [ad.num_heads(l) for l in layers],
            "ffn_per_layer": [ad.ffn_width(l) for l in layers]}


def part_curve(teacher_model: Any, tok: Any, t: Any, base_acc: float) -> dict[str, Any]:
    import slimformer as sf
    from slimformer.models.io import clone

    rows, candidates = [], {"teacher": teacher_model}
    for unit, cls, fn in (("heads", sf.PruneHeads, sf.prune_heads), ("ffn", sf.PruneFFN, sf.prune_ffn)):
        for keep in (0.75, 0.5, 0.25):
            m = clone(teacher_model)
            cfg = cls(keep=keep, importance_examples=SETTINGS["importance_examples"])
            t0 = time.perf_counter()
            m, _ = fn(m, cfg, tok, t, seed=SETTINGS["seed"], max_len=SETTINGS["train_max_len"])
            prune_s = round(time.perf_counter() - t0, 1)
            acc0 = accuracy(m, tok, t)
            train_s = recover(m, tok, t, f"curve-{unit}-{keep}")
            name = f"{unit} {int(keep * 100)}%"
            rows.append({"model": name, "acc_pruned": acc0, "acc_recovered": accuracy(m, tok, t),
                         "prune_s": prune_s, "recovery_s": train_s, **shape(m)})
            candidates[name] = m
            print(rows[-1], flush=True)
    lat = latencies(candidates, tok)
    for r in rows:
        r.update(lat[r["model"]])
    teacher_row = {"model": "teacher (100%)", "acc_pruned": base_acc, "acc_recovered": base_acc, **shape(teacher_model),
                   **lat["teacher"]}
    return {"rows": [teacher_row] + rows}


def prune_target(teacher_model: Any, tok: Any, t: Any, normalize_heads: bool = False) -> tuple[Any, dict[str, Any]]:
    """50% of heads and 50% of FFN neurons, gradient importance, global, iterative; cached for the peer part."""
    import slimformer as sf
    from slimformer import models
    from slimformer.models.io import clone

    cached = WORK / ("sf-50-50-pruned-normheads" if normalize_heads else "sf-50-50-pruned")
    if (cached / "model.safetensors").exists():
        m, _ = models.load(str(cached))
        return m, json.loads((cached / "prune_info.json").read_text())
    m = clone(teacher_model)
    kw = dict(keep=0.5, rounds=SETTINGS["target_rounds"], importance_examples=SETTINGS["importance_examples"])
    t0 = time.perf_counter()
    m, hi = sf.prune_heads(m, sf.PruneHeads(normalize=normalize_heads, **kw), tok, t, seed=SETTINGS["seed"], max_len=SETTINGS["train_max_len"])
    m, fi = sf.prune_ffn(m, sf.PruneFFN(**kw), tok, t, seed=SETTINGS["seed"], max_len=SETTINGS["train_max_len"])
    info = {"prune_s": round(time.perf_counter() - t0, 1), "heads": hi["rounds"], "ffn": fi["rounds"]}
    models.save(m, tok, cached)
    (cached / "prune_info.json").write_text(json.dumps(info))
    return m, info


def component_ms(model: Any, tok: Any) -> dict[str, Any]:
    from slimformer.profile import profile_model

    prof = profile_model(model, tok, seq_len=SETTINGS["seq_len"], batch=32, n_threads=SETTINGS["threads"], runs=5)
    by: dict[str, float] = {}
    for r in prof["rows"]:
        kind = r["component"].split()[-1]
        by[kind] = round(by.get(kind, 0.0) + r["ms"], 1)
    return {"ms_by_kind": by, "total_ms": round(prof["total"]["ms"], 1),
            "share_by_kind": {k: {m: round(x, 3) for m, x in v.items()} for k, v in prof["by_kind"].items()}}


def part_target(teacher_model: Any, tok: Any, t: Any, base_acc: float) -> dict[str, Any]:
    import slimformer as sf

    m, info = prune_target(teacher_model, tok, t)
    acc0 = accuracy(m, tok, t)
    d = SETTINGS["target_distill"]
    work = WORK / "target-distill"
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    m, stats = sf.distill(m, teacher_model, tok, t, sf.Distill(save_steps=10_000, **d), work, seed=SETTINGS["seed"],
                          max_len=SETTINGS["train_max_len"])
    distill_s = round(time.perf_counter() - t0, 1)
    acc1 = accuracy(m, tok, t)
    from slimformer import models

    models.save(m, tok, WORK / "sf-50-50-distilled")
    lat = latencies({"teacher": teacher_model, "pruned 50% heads + 50% FFN": m}, tok)
    prof = {"teacher": component_ms(teacher_model, tok), "pruned": component_ms(m, tok)}
    saved = {k: round(prof["teacher"]["ms_by_kind"].get(k, 0) - prof["pruned"]["ms_by_kind"].get(k, 0), 1)
             for k in prof["teacher"]["ms_by_kind"]}
    return {"teacher_acc": base_acc, "acc_pruned": acc0, "acc_recovered": acc1, "drop_points": round(base_acc - acc1, 2),
            "distill_s": distill_s, "prune": info, "shape": shape(m), "teacher_shape": shape(teacher_model),
            "latency": lat, "profile_b32": prof, "ms_saved_by_kind_b32": saved,
            "targets": {"drop_le_1pt": base_acc - acc1 <= 1.0,
                        "speedup_b32_ge_1_6": lat["pruned 50% heads + 50% FFN"]["speedup_b32"] >= 1.6}}


def run_textpruner(teacher_dir: Path, config: Any, t: Any, even: bool) -> Path:
    from slimformer.prune.importance import sample_examples

    out = WORK / f"textpruner-{'even' if even else 'global'}"
    ex = sample_examples(t, SETTINGS["importance_examples"], SETTINGS["seed"])
    data = {"texts": [e.text for e in ex], "labels": [e.label for e in ex],
            "probe": ["a fine film , well acted", "dull and far too long", "ok"]}
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "importance_examples.json").write_text(json.dumps(data))
    heads, ffn = config.num_attention_heads, config.intermediate_size
    cmd = [str(PEER_PY), str(ROOT / "benchmarks" / "peers" / "textpruner_run.py"), str(teacher_dir),
           str(WORK / "importance_examples.json"), str(out), "--heads", str(heads // 2), "--ffn", str(ffn // 2),
           "--iters", str(SETTINGS["target_rounds"]), "--max-len", str(SETTINGS["train_max_len"])]
    if even:
        cmd.append("--even")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "2"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"TextPruner run failed:\n{res.stderr[-3000:]}")
    print(res.stdout.strip().splitlines()[-1], flush=True)
    return out


def load_textpruner(teacher_model: Any, tok: Any, out: Path) -> tuple[Any, float]:
    """The TextPruner-pruned weights in a slimformer model with the same per-layer shapes (keep_* ops)."""
    from safetensors.torch import load_file

    from slimformer.models.io import clone
    from slimformer.prune.ffn import keep_ffn
    from slimformer.prune.heads import keep_heads

    kept = json.loads((out / "kept.json").read_text())
    m = clone(teacher_model)
    keep_heads(m, kept["heads"])
    keep_ffn(m, kept["ffn"])
    missing, unexpected = m.load_state_dict(load_file(str(out / "model.safetensors")), strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    data = json.loads((WORK / "importance_examples.json").read_text())
    with torch.no_grad():
        got = m.eval()(**tok(data["probe"], padding=True, return_tensors="pt")).logits
    ref = torch.tensor(json.loads((out / "probe_logits.json").read_text()))
    return m, float((got - ref).abs().max())


def part_peer(teacher_model: Any, tok: Any, t: Any, base_acc: float) -> dict[str, Any]:
    from slimformer.models.io import clone

    from common import teacher_dir

    sf_model, _ = prune_target(teacher_model, tok, t)
    norm_model, _ = prune_target(teacher_model, tok, t, normalize_heads=True)
    cands: dict[str, Any] = {"slimformer": sf_model, "slimformer (head scores normalised)": norm_model}
    rows: dict[str, dict[str, Any]] = {
        "slimformer": {"prune": f"gradient gates, global, {SETTINGS['target_rounds']} rounds, raw scores"},
        "slimformer (head scores normalised)": {"prune": f"gradient gates, global, {SETTINGS['target_rounds']} "
                                                         "rounds, heads normalised per layer"}}
    for even in (False, True):
        name = f"textpruner ({'even' if even else 'global'} masking)"
        t0 = time.perf_counter()
        out = run_textpruner(teacher_dir("sst2"), teacher_model.config, t, even)
        m, diff = load_textpruner(teacher_model, tok, out)
        cands[name] = m
        rows[name] = {"prune": f"iterative, 3 iters, {'even' if even else 'uneven'} masking",
                      "reload_max_abs_diff": diff, "wall_s": round(time.perf_counter() - t0, 1),
                      "tp_prune_s": json.loads((out / "kept.json").read_text())["prune_seconds"]}
    for name, m in cands.items():
        rows[name].update(shape(m))
        rows[name]["acc_pruned"] = accuracy(m, tok, t)
    lat = latencies({"teacher": teacher_model, **cands}, tok)
    for name, m in cands.items():
        m = clone(m)
        rows[name]["recovery_s"] = recover(m, tok, t, f"peer-{name.split()[0]}-{len(name)}-{len(rows[name])}")
        rows[name]["acc_recovered"] = accuracy(m, tok, t)
        rows[name].update(lat[name])
    return {"teacher_acc": base_acc, "teacher_latency": lat["teacher"],
            "rows": [{"model": k, **v} for k, v in rows.items()]}


def part_layers(teacher_model: Any, tok: Any, t: Any, base_acc: float) -> dict[str, Any]:
    from slimformer.models.io import clone
    from slimformer.prune.layers import keep_layers, layers_to_keep

    rows, cands = [], {"teacher": teacher_model}
    for keep in (4, 3):
        for strategy in ("top", "bottom", "alternate"):
            m = clone(teacher_model)
            kept = layers_to_keep(6, keep, strategy)
            keep_layers(m, kept)
            acc0 = accuracy(m, tok, t)
            train_s = recover(m, tok, t, f"layers-{keep}-{strategy}")
            rows.append({"model": f"6->{keep} {strategy}", "kept_layers": kept, "acc_dropped": acc0,
                         "acc_recovered": accuracy(m, tok, t), "recovery_s": train_s, "params": shape(m)["params"]})
            if strategy == "top":
                cands[f"{keep} layers"] = m
            print(rows[-1], flush=True)
    lat = latencies(cands, tok)
    return {"teacher_acc": base_acc, "rows": rows, "latency": lat}


def part_ablation(teacher_model: Any, tok: Any, t: Any, base_acc: float) -> dict[str, Any]:
    """Per-layer L2 normalisation of the scores on/off: one-shot 50% of heads or of FFN, global, no recovery."""
    import slimformer as sf
    from slimformer.models.io import clone

    rows = []
    for unit, cls, fn in (("heads", sf.PruneHeads, sf.prune_heads), ("ffn", sf.PruneFFN, sf.prune_ffn)):
        for normalize in (True, False):
            m = clone(teacher_model)
            cfg = cls(keep=0.5, normalize=normalize, importance_examples=SETTINGS["importance_examples"])
            m, _ = fn(m, cfg, tok, t, seed=SETTINGS["seed"], max_len=SETTINGS["train_max_len"])
            rows.append({"model": f"{unit} 50% normalize={normalize}", "acc_pruned": accuracy(m, tok, t), **shape(m)})
            print(rows[-1], flush=True)
    return {"teacher_acc": base_acc, "rows": rows}


PARTS = {"ablation": part_ablation, "curve": part_curve, "target": part_target, "peer": part_peer, "layers": part_layers}


def main(parts: list[str]) -> None:
    from common import previous_parts, ready_teacher

    teacher_model, tok, t = ready_teacher("sst2", SETTINGS["threads"])
    results = previous_parts(NAME, set(PARTS) | {"teacher_acc"})
    base_acc = results.get("teacher_acc") or accuracy(teacher_model, tok, t)
    results["teacher_acc"] = base_acc
    for p in parts:
        t0 = time.perf_counter()
        try:
            results[p] = PARTS[p](teacher_model, tok, t, base_acc)
        except Exception as e:  # record and go on with the next part (parts are independent)
            import traceback

            traceback.print_exc()
            results[p] = {"error": f"{type(e).__name__}: {e}"}
        results[p]["part_wall_s"] = round(time.perf_counter() - t0, 1)
        print(f"part {p} done in {results[p]['part_wall_s']} s", flush=True)
        write_result(NAME, {"settings": SETTINGS, **results})
        rows = results[p].get("rows")
        if isinstance(rows, list):
            print_table([{k: v for k, v in r.items() if not isinstance(v, (list, dict))} for r in rows], p)
        else:
            print(json.dumps(results[p], indent=1, default=str)[:3000])


def markdown() -> str:
    """Tables for docs/BENCHMARKS.md (section 2) from benchmarks/results/prune_sst2.json."""
    d = json.loads((RESULTS / f"{NAME}.json").read_text())
    out = [f"teacher dev accuracy: {d['teacher_acc']}"]

    def table(rows: list[dict[str, Any]], cols: list[str]) -> None:
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "---|" * len(cols))
        for r in rows:
            out.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
        out.append("")

    for part in ("target", "peer", "curve", "layers", "ablation"):
        if part not in d:
            continue
        out.append(f"## {part} ({d[part].get('part_wall_s')} s)")
        p = d[part]
        if "error" in p:
            out.append(f"error: {p['error']}")
        elif part == "curve":
            table(p["rows"], ["model", "params", "acc_pruned", "acc_recovered", "b1_ms", "b32_ms", "speedup_b1",
                              "speedup_b32", "heads_per_layer", "ffn_per_layer"])
        elif part == "target":
            out.append(json.dumps({k: p[k] for k in ("teacher_acc", "acc_pruned", "acc_recovered", "drop_points",
                                                     "distill_s", "targets", "latency", "ms_saved_by_kind_b32",
                                                     "shape")}, indent=1))
            out.append(json.dumps(p["profile_b32"], indent=1))
        elif part == "ablation":
            table(p["rows"], ["model", "acc_pruned", "heads_per_layer", "ffn_per_layer"])
        elif part == "peer":
            table(p["rows"], ["model", "params", "acc_pruned", "acc_recovered", "b1_ms", "b32_ms", "speedup_b32",
                              "heads_per_layer", "ffn_per_layer", "reload_max_abs_diff"])
            out.append(f"teacher latency: {p['teacher_latency']}")
        else:
            table(p["rows"], ["model", "kept_layers", "params", "acc_dropped", "acc_recovered", "recovery_s"])
            out.append(json.dumps(p["latency"]))
    return "\n".join(out)


if __name__ == "__main__":
    from common import parts_cli

    parts_cli("bench_prune.py", PARTS, main, markdown)
