"""Issue "Language models", structured recipes with recovery. depth_recover: SmolLM2 with 6 of its 30 layers
dropped by block influence (ShortGPT; the same calibration blocks and layers as bench_llm.py `depth`), then the
`distill` step (token-level KL to the original model at temperature 1, no hard labels) on WikiText-2 valid text
(the shipped WikiText-2 has no train split; valid is also the calibration text), for a stated budget of steps.
Perplexity on the first 16,384 tokens of WikiText-2 test (context 1,024, stride 512) before and after recovery;
prefill (512 tokens) and decode (32 tokens, KV cache) at batch 1 against the original model in the same run.
width_recover: as many parameters removed as FFN channels (activation importance), the same recovery budget.
kv_width_recover: one of the 3 key/value groups of every layer and then FFN channels, to the same count.

    RECOVER_STEPS=100 flock /tmp/slimformer-heavy.lock python benchmarks/bench_llm_recovery.py depth_recover
    RECOVER_STEPS=100 flock /tmp/slimformer-heavy.lock python benchmarks/bench_llm_recovery.py width_recover
    RECOVER_STEPS=100 flock /tmp/slimformer-heavy.lock python benchmarks/bench_llm_recovery.py kv_width_recover
    flock /tmp/slimformer-heavy.lock python benchmarks/bench_llm_recovery.py structured_speed
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
ACTIVATION = {"criterion": "activation", "scope": "per_layer", "importance_examples": 64, "batch_size": 8}


def depth_recover(drop: int = 6) -> dict[str, Any]:
    from slimformer.prune.layers import block_influence, keep_layers, most_influential

    base, tok, task, batches = bench_llm._setup()
    bi = block_influence(base, batches)
    keep = most_influential(bi, len(bi) - drop)
    model = keep_layers(copy.deepcopy(base), keep)
    return {"kept": keep, **_recover(f"{drop} layers dropped", base, model, tok, task, f"llm_recover_{STEPS}")}


def width_recover(drop: int = 6) -> dict[str, Any]:
    """FFN channels of every layer pruned by activation importance (`prune_ffn criterion: activation`, the same
    count per layer, a multiple of 8) until as many parameters are gone as dropping `drop` layers removes; then
    the same recovery as depth_recover. Attention keeps its 3 key/value groups (a group is a third of it)."""
    from slimformer.steps import Context, apply_step, parse_step

    base, tok, task, _ = bench_llm._setup()
    width, keep = _ffn_keep(base, drop * _layer_params(base))
    ctx = Context(tokenizer=tok, task=task, work_dir=common.CACHE / "llm_width", seed=0, max_len=BLOCK)
    t0 = time.perf_counter()
    model = apply_step(copy.deepcopy(base), parse_step({"step": "prune_ffn", "keep_count": keep, **ACTIVATION}, 0),
                       ctx)
    score_s = round(time.perf_counter() - t0, 1)
    return {"ffn_kept_per_layer": keep, "ffn_width": width, "score_s": score_s,
            **_recover(f"FFN {width} -> {keep} per layer (activation)", base, model, tok, task,
                       f"llm_width_recover_{STEPS}")}


def kv_width_recover(drop: int = 6, groups: int = 2) -> dict[str, Any]:
    """Width pruning of both halves of each layer: `groups` of the 3 key/value groups kept per layer (with all
    their query heads; `prune_heads criterion: activation`), then FFN channels (as width_recover) until as many
    parameters are gone as dropping `drop` layers removes; the same recovery as depth_recover."""
    from slimformer.models import num_params
    from slimformer.steps import Context, apply_step, parse_step

    base, tok, task, _ = bench_llm._setup()
    ctx = Context(tokenizer=tok, task=task, work_dir=common.CACHE / "llm_kv_width", seed=0, max_len=BLOCK)
    t0 = time.perf_counter()
    model = apply_step(copy.deepcopy(base), parse_step({"step": "prune_heads", "keep_count": groups, **ACTIVATION}, 0),
                       ctx)
    attn_cut = num_params(base) - num_params(model)
    width, keep = _ffn_keep(base, drop * _layer_params(base) - attn_cut)
    model = apply_step(model, parse_step({"step": "prune_ffn", "keep_count": keep, **ACTIVATION}, 1), ctx)
    score_s = round(time.perf_counter() - t0, 1)
    label = f"KV groups 3 -> {groups} and FFN {width} -> {keep} per layer (activation)"
    return {"kv_groups_kept_per_layer": groups, "ffn_kept_per_layer": keep, "ffn_width": width,
            "attention_params_cut": attn_cut, "score_s": score_s,
            **_recover(label, base, model, tok, task, f"llm_kv_width_recover_{STEPS}")}


def _layer_params(base: Any) -> int:
    return sum(p.numel() for p in base.model.layers[0].parameters())


def _ffn_keep(base: Any, params: float) -> tuple[int, int]:
    """(FFN width, channels to keep per layer, a multiple of 8 cut) so that about `params` parameters go."""
    from slimformer.models import get_adapter
    from slimformer.models.linear import in_features

    ffns = get_adapter(base).ffn(base)
    per_neuron = sum(in_features(u) for u in ffns[0].up) + ffns[0].down.weight.shape[0]
    return ffns[0].width, ffns[0].width - 8 * round(params / (len(ffns) * per_neuron) / 8)


def structured_speed(rounds: int = 6) -> dict[str, Any]:
    """Batch-1 speed of the two structured shapes at equal parameter count, interleaved in one run (speed does not
    depend on the weights' values, so the shapes are cut from the base without training): the base, 24 of 30
    layers, FFN 1536 -> 1128 per layer, and FFN -> 1152 (a multiple of 64, to see whether the width's alignment
    matters). Each round times every model once (3 generations each); medians over rounds."""
    import statistics

    from slimformer.generation import generation_profile
    from slimformer.models import iter_units, num_params
    from slimformer.prune.ffn import keep_ffn
    from slimformer.prune.layers import keep_layers

    base, tok, _, _ = bench_llm._setup()
    units = [u for u, _ in iter_units(base, "ffn")]
    shapes = {"base": base, "24 of 30 layers": keep_layers(copy.deepcopy(base), list(range(24)))}
    for width in (1128, 1152):
        shapes[f"FFN {width} per layer"] = keep_ffn(copy.deepcopy(base), {u: list(range(width)) for u in units})
    samples: dict[str, list[dict[str, Any]]] = {k: [] for k in shapes}
    for r in range(rounds):
        for name, m in shapes.items():
            samples[name].append(generation_profile(m, tok, 512, 32, 1, bench_llm.THREADS, runs=3))
        print(f"round {r + 1}/{rounds}", {k: (v[-1]["prefill_ms"], v[-1]["tokens_per_s"]) for k, v in samples.items()},
              flush=True)
    out = {}
    for name, runs in samples.items():
        out[name] = {"params": num_params(shapes[name]),
                     "prefill_ms": round(statistics.median(x["prefill_ms"] for x in runs), 1),
                     "prefill_ms_all": [x["prefill_ms"] for x in runs],
                     "tokens_per_s": round(statistics.median(x["tokens_per_s"] for x in runs), 2),
                     "tokens_per_s_all": [x["tokens_per_s"] for x in runs]}
    ref = out["base"]
    for v in out.values():
        v["prefill_speedup"] = round(ref["prefill_ms"] / v["prefill_ms"], 2)
        v["decode_speedup"] = round(v["tokens_per_s"] / ref["tokens_per_s"], 2)
    print(json.dumps({k: (v["prefill_speedup"], v["decode_speedup"]) for k, v in out.items()}))
    return {"rounds": rounds, "prompt_len": 512, "new_tokens": 32, "threads": bench_llm.THREADS, "shapes": out}


def _recover(label: str, base: Any, model: Any, tok: Any, task: Any, work_name: str) -> dict[str, Any]:
    """Perplexity before and after the stated recovery budget, then batch-1 speed against the base."""
    from slimformer.generation import generation_profile
    from slimformer.models import num_params
    from slimformer.steps import Context, apply_step, parse_step

    rows = [_ppl("base (dequantized Q4_1)", base, tok, task), _ppl(f"{label}, no recovery", model, tok, task)]
    work = common.CACHE / work_name
    ctx = Context(tokenizer=tok, task=task, work_dir=work, teacher=base, seed=0, max_len=BLOCK, resume=work.exists())
    cfg = parse_step({"step": "distill", "kd": 1.0, "ce": 0.0, "temperature": 1.0, "lr": LR, "batch_size": BATCH,
                      "max_steps": STEPS, "epochs": 1.0, "save_steps": 25}, 0)
    t0 = time.perf_counter()
    model = apply_step(model, cfg, ctx)
    train_s = time.perf_counter() - t0
    rows.append(_ppl(f"{label} + recovery ({STEPS} steps x {BATCH} x {BLOCK} tokens)", model, tok, task))
    model.eval()
    speed = []
    for name, m in (("base", base), ("recovered", model), ("base (repeat: drift check)", base)):
        speed.append({"variant": name, **generation_profile(m, tok, 512, 32, 1, bench_llm.THREADS, runs=3)})
        print(json.dumps(speed[-1]))
    return {"params": {"base": num_params(base), "pruned": num_params(model)}, "rows": rows,
            "speed": speed, "train_s": round(train_s, 1), "steps": STEPS, "batch": BATCH, "block": BLOCK, "lr": LR,
            "train_tokens": STEPS * BATCH * BLOCK}


def _ppl(name: str, model: Any, tok: Any, task: Any) -> dict[str, Any]:
    row = {"variant": name, "perplexity": round(task.evaluate(model, tok, "test")["perplexity"], 3)}
    print(json.dumps(row))
    return row


def main(parts: list[str]) -> None:
    bench_llm.run_parts(RESULT, PARTS, parts, markdown)


def markdown() -> str:
    res = json.loads((common.RESULTS / f"{RESULT}.json").read_text())
    out = [_part_markdown(name, res[name]) for name in ("depth_recover", "width_recover", "kv_width_recover")
           if name in res]
    if "structured_speed" in res:
        r = res["structured_speed"]
        rows = ["| shape (untrained cut, fp32, batch 1) | parameters | prefill 512 ms | x base | decode tokens/s "
                "| x base |", "|---|---|---|---|---|---|"]
        rows += [f"| {k} | {v['params'] / 1e6:.1f}M | {v['prefill_ms']:.0f} | {v['prefill_speedup']:.2f} | "
                 f"{v['tokens_per_s']} | {v['decode_speedup']:.2f} |" for k, v in r["shapes"].items()]
        out.append(f"**structured_speed** ({r['rounds']} interleaved rounds, medians):\n\n" + "\n".join(rows))
    return "\n\n".join(out)


def _part_markdown(name: str, r: dict[str, Any]) -> str:
    base = r["rows"][0]["perplexity"]
    what = f"Kept layers {r['kept']}" if "kept" in r else f"FFN neurons kept per layer {r['ffn_kept_per_layer']} of " \
        f"{r['ffn_width']} (scored in {r['score_s']} s)"
    if "kv_groups_kept_per_layer" in r:
        what = f"key/value groups kept per layer {r['kv_groups_kept_per_layer']} of 3, then {what}"
    out = [f"**{name}**: {what}; parameters {r['params']['base'] / 1e6:.1f}M -> {r['params']['pruned'] / 1e6:.1f}M; "
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


PARTS = {"depth_recover": depth_recover, "width_recover": width_recover, "kv_width_recover": kv_width_recover,
         "structured_speed": structured_speed}

if __name__ == "__main__":
    common.parts_cli("bench_llm_recovery.py", PARTS, main, markdown)
