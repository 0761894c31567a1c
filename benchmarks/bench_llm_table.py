"""Issue "Language models": the one table the issue asks for. Every family of method on SmolLM2-135M in ONE run,
each row with WikiText-2 test perplexity (bench_llm's 16,384 tokens, context 1024, stride 512), its saved
checkpoint's size on disk, and prefill (512-token prompt) and decode tokens/s (32 new tokens with the KV cache,
batch 1, 2 threads) in PyTorch, every model timed in each of ROUNDS interleaved rounds with the fp32 model in the
same round (the ratio is taken per round, then the median).

Rows: fp32; weight-only 4-bit RTN / AWQ / GPTQ and 3-bit GPTQ, group 32, the tied head and table as one shared
low-bit copy (`lm_head: shared`), all running on torch's CPU int4 kernel (`kernel: int4`); SmoothQuant 0.5 +
per-token INT8 (torch._int_mm); SparseGPT and Wanda at 50% (dense kernels; size in slimformer's sparse format);
FFN width pruning by activation (no recovery in this run: the recovered perplexity is 11.6b's). Calibration:
bench_llm's 59 WikiText-2 valid blocks for every method. A model already saved by this script under
~/.cache/slimformer/checkpoints is loaded instead of rebuilt (reload is exact: tested), and says so.

    flock /tmp/slimformer-heavy.lock env HF_HUB_OFFLINE=1 SLIMFORMER_QUIET=1 .venv/bin/python \\
        benchmarks/bench_llm_table.py table
    python benchmarks/bench_llm_table.py markdown
"""
from __future__ import annotations

import copy
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import bench_llm
import common
import torch

RESULT = "llm_table"
SUFFIX, PROMPT, NEW_TOKENS, ROUNDS = "", 512, 32, 2
GROUP = 32


def _builders(base: Any, tok: Any, task: Any, batches: list) -> dict[str, tuple[str, Callable[[], Any]]]:
    """name -> (kind, build()): kind 'dense' (saved with slimformer.save), 'sparse' (save_sparse)."""
    from slimformer.prune.oneshot import PruneOneShot, prune_oneshot
    from slimformer.quantize import QuantizeDynamic, QuantizeWeights, quantize_dynamic, quantize_weights
    from slimformer.steps import Context, apply_step, parse_step

    def weights(method: str, bits: int, **kw: Any) -> Callable[[], Any]:
        cfg = QuantizeWeights(bits=bits, group_size=GROUP, method=method, lm_head="shared", kernel="int4",
                              guard=False, **kw)
        return lambda: quantize_weights(copy.deepcopy(base), cfg, batches)

    def oneshot(method: str) -> Callable[[], Any]:
        def build() -> Any:
            model = copy.deepcopy(base)
            prune_oneshot(model, PruneOneShot(method=method, sparsity=0.5), batches)
            return model
        return build

    def width() -> Any:
        ctx = Context(tokenizer=tok, task=task, work_dir=common.CACHE / "llm_width", seed=0, max_len=256)
        step = {"step": "prune_ffn", "keep_count": 1128, "criterion": "activation", "scope": "per_layer",
                "importance_examples": 64, "batch_size": 8}
        return apply_step(copy.deepcopy(base), parse_step(step, 0), ctx)

    gptq = {"act_order": True, "grid": "mse", "sequential": True}
    return {
        "rtn 4-bit g32, int4 kernel": ("dense", weights("rtn", 4)),
        "awq 4-bit g32, int4 kernel": ("dense", weights("awq", 4)),
        "gptq 4-bit g32 act-order mse, int4 kernel": ("dense", weights("gptq", 4, **gptq)),
        "gptq 3-bit g32 act-order mse, int4 kernel": ("dense", weights("gptq", 3, **gptq)),
        "smoothquant 0.5 + int8 per-token (torch._int_mm)": ("dense", lambda: quantize_dynamic(
            copy.deepcopy(base), QuantizeDynamic(backend="torch", smoothquant=0.5, activations="token",
                                                 guard=False), tok, batches)),
        "sparsegpt 50% (dense kernels)": ("sparse", oneshot("sparsegpt")),
        "wanda 50% (dense kernels)": ("sparse", oneshot("wanda")),
        "width: FFN 1536 -> 1128 by activation, no recovery": ("dense", width),
    }


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.split(",")[0].split(" (")[0]).strip("-")


def _make(name: str, kind: str, build: Callable[[], Any], tok: Any) -> tuple[Any, dict[str, Any]]:
    """Load the saved model if this script saved it before, else build and save it; with its size on disk."""
    import slimformer as sf
    from slimformer.fsutil import weights_size
    from slimformer.prune.sparse_io import SPARSE_FILE, load_sparse, save_sparse

    out = common.CACHE / "checkpoints" / f"smollm2-table-{_slug(name)}{SUFFIX}"
    t0, built = time.perf_counter(), not out.exists()
    if built:
        model = build()
        (save_sparse if kind == "sparse" else sf.save)(model, tok, out)
    else:
        model, _ = (load_sparse if kind == "sparse" else sf.load)(str(out))
    size = (out / SPARSE_FILE).stat().st_size if kind == "sparse" else weights_size(out)
    return model.eval(), {"make_s": round(time.perf_counter() - t0, 1), "built_now": built,
                          "disk_mb": round(size / 1e6, 1), "checkpoint": str(Path(out).name)}


def table(rounds: int = ROUNDS) -> dict[str, Any]:
    from slimformer.generation import generation_profile
    from slimformer.models import num_params

    base, tok, task, batches = bench_llm._setup()
    models: dict[str, Any] = {"fp32": base}
    rows: dict[str, dict[str, Any]] = {"fp32": {"disk_mb": round(4 * num_params(base) / 1e6, 1),
                                                "disk_note": "fp32 tensors (4 bytes x parameters)"}}
    for name, (kind, build) in _builders(base, tok, task, batches).items():
        models[name], rows[name] = _make(name, kind, build, tok)
        print(json.dumps({"variant": name, **rows[name]}), flush=True)
    for name, m in models.items():
        t0 = time.perf_counter()
        rows[name].update(perplexity=round(task.evaluate(m, tok, "test")["perplexity"], 3),
                          eval_s=round(time.perf_counter() - t0, 1), params=num_params(m),
                          notes=(getattr(m.config, "slimformer", None) or {}).get("weight_kernel"))
        print(json.dumps({"variant": name, "perplexity": rows[name]["perplexity"]}), flush=True)
    samples: dict[str, list[dict[str, Any]]] = {k: [] for k in models}
    for r in range(rounds):
        for name, m in models.items():
            samples[name].append(generation_profile(m, tok, PROMPT, NEW_TOKENS, 1, bench_llm.THREADS, runs=3))
        samples["fp32"].append(generation_profile(base, tok, PROMPT, NEW_TOKENS, 1, bench_llm.THREADS, runs=3))
        print(f"round {r + 1}/{rounds}", {k: v[-1]["tokens_per_s"] for k, v in samples.items()}, flush=True)
    for name, runs in samples.items():
        # fp32 runs first and last in every round: its ratio per round uses the mean of the two
        ref = [(samples["fp32"][2 * i], samples["fp32"][2 * i + 1]) for i in range(rounds)]
        mine = runs if name != "fp32" else [runs[2 * i] for i in range(rounds)]
        pre = [(a["prefill_ms"] + b["prefill_ms"]) / 2 / x["prefill_ms"] for (a, b), x in zip(ref, mine)]
        dec = [x["tokens_per_s"] / ((a["tokens_per_s"] + b["tokens_per_s"]) / 2) for (a, b), x in zip(ref, mine)]
        rows[name].update(prefill_ms=round(statistics.median(x["prefill_ms"] for x in runs), 1),
                          tokens_per_s=round(statistics.median(x["tokens_per_s"] for x in runs), 2),
                          prefill_speedup=round(statistics.median(pre), 2),
                          decode_speedup=round(statistics.median(dec), 2),
                          prefill_ms_all=[x["prefill_ms"] for x in runs],
                          tokens_per_s_all=[x["tokens_per_s"] for x in runs])
    ppl0, mb0 = rows["fp32"]["perplexity"], rows["fp32"]["disk_mb"]
    for r in rows.values():
        r.update(ppl_vs_fp32=round(r["perplexity"] / ppl0 - 1, 4), x_smaller=round(mb0 / r["disk_mb"], 2))
    return {"prompt": PROMPT, "new_tokens": NEW_TOKENS, "rounds": rounds, "group": GROUP,
            "calib_blocks": len(batches), "rows": [{"variant": k, **v} for k, v in rows.items()]}


def markdown() -> str:
    r = common.read_result(RESULT)
    if not r or "table" not in r:
        return "(no results yet)"
    t = r["table"]
    out = [f"Batch 1, prompt {t['prompt']}, {t['new_tokens']} new tokens, {r['threads']} threads, {t['rounds']} "
           f"interleaved rounds (ratios to fp32 per round, median); perplexity on {r['eval_tokens']} WikiText-2 "
           "test tokens.", "",
           "| variant | perplexity | vs fp32 | disk MB | x smaller | prefill 512 ms | x fp32 | decode tokens/s "
           "| x fp32 |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for x in t["rows"]:
        out.append(f"| {x['variant']} | {x['perplexity']:.3f} | {100 * x['ppl_vs_fp32']:+.1f}% | {x['disk_mb']} | "
                   f"{x['x_smaller']:.2f} | {x['prefill_ms']:.0f} | {x['prefill_speedup']:.2f} | "
                   f"{x['tokens_per_s']:.2f} | {x['decode_speedup']:.2f} |")
    return "\n".join(out)


PARTS = {"table": lambda: table(ROUNDS)}


def main(parts: list[str]) -> None:
    bench_llm.run_parts(RESULT, PARTS, parts, markdown)


if __name__ == "__main__":
    if os.environ.get("BENCH_SMOKE"):
        RESULT, SUFFIX, PROMPT, NEW_TOKENS, ROUNDS = "llm_table_smoke", "-smoke", 32, 4, 1
        bench_llm.CALIB, bench_llm.EVAL_TOKENS = 16, 2048
    torch.manual_seed(0)
    common.parts_cli("bench_llm_table.py", PARTS, main, markdown)
