"""Issue "Language models": slimformer's 4-bit GPTQ SmolLM2 decoding in PyTorch on torch's own CPU int4 kernel
(`quantize_weights kernel: int4`, `aten._weight_int4pack_mm_for_cpu`: packed codes, bf16 activations) against
the same codes dequantized to fp32 (the default path), ONNX Runtime's MatMulNBits graph of the same model
(11.4c's best artefact), and PyTorch fp32, all in one run: batch 1, a 512-token prompt, 32 new tokens with the
KV cache, 3 runs each, fp32 timed first and last (drift check); WikiText-2 test perplexity on bench_llm's
16,384 tokens (context 1024, stride 512); the saved model's size on disk, a reload check, and the share of this
machine's memory-bandwidth bound.

The model: GPTQ 4-bit, group 32, act-order, mse grid, layer by layer, `lm_head: shared` (the tied head GPTQ'd
and its codes serving the embedding lookups too: one 4-bit copy), calibrated on bench_llm's WikiText-2 valid
blocks.

    flock /tmp/slimformer-heavy.lock env HF_HUB_OFFLINE=1 SLIMFORMER_QUIET=1 .venv/bin/python \\
        benchmarks/bench_llm_kernel.py speed
    python benchmarks/bench_llm_kernel.py markdown
"""
from __future__ import annotations

import copy
import json
import os
import time
from typing import Any

import bench_llm
import common
import torch

RESULT = "llm_kernel"
SUFFIX, PROMPT, NEW_TOKENS = "", 512, 32


def _bytes_per_token(model: Any) -> int:
    """Weight bytes one decode step reads in PyTorch: each Linear as it executes (int4-kernel layers: packed
    codes + bf16 scales and zeros; dequantizing layers: their fp32 weight), every other float tensor once,
    embedding tables not at all (one row per token)."""
    from slimformer.quantize.modules import QEmbedding, QLinear

    total, seen = 0, set()
    for m in model.modules():
        if isinstance(m, QLinear) and m.act == "none":
            groups = m.in_features // (m.group_size or m.in_features)
            total += (m.out_features * m.in_features // 2 + groups * m.out_features * 4 if m.kernel == "int4"
                      else 4 * m.out_features * m.in_features)
            seen.update(id(t) for t in m.parameters())
        elif isinstance(m, (torch.nn.Embedding, QEmbedding)):
            seen.update(id(t) for t in m.parameters(recurse=False))
    for t in model.parameters():  # plain Linears (an fp32 model: the tied head reads the table), norms
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    emb = model.get_input_embeddings()
    head = model.get_output_embeddings()
    if isinstance(emb, torch.nn.Embedding) and head is not None and getattr(head, "weight", None) is emb.weight:
        total += emb.weight.numel() * emb.weight.element_size()  # tied: the head reads the whole table
    return total


def speed(prompt: int = 512, new_tokens: int = 32, group: int = 32) -> dict[str, Any]:
    import slimformer as sf
    from slimformer.deploy import export_onnx
    from slimformer.export_generative import OrtDecoder
    from slimformer.fsutil import weights_size
    from slimformer.generation import generation_profile, ort_generation_profile
    from slimformer.quantize import QuantizeWeights, quantize_weights
    from slimformer.quantize.onnx_int4 import read_bandwidth
    from slimformer.quantize.ops import use_weight_kernel

    model, tok, task, batches = bench_llm._setup()
    t0 = time.perf_counter()
    q = quantize_weights(copy.deepcopy(model), QuantizeWeights(
        bits=4, group_size=group, method="gptq", act_order=True, grid="mse", sequential=True, lm_head="shared",
        guard=False), batches)
    quantize_s = round(time.perf_counter() - t0, 1)
    fast = copy.deepcopy(q)
    used = use_weight_kernel(fast, "int4")
    out = common.CACHE / "checkpoints" / f"smollm2-gptq4-g{group}-shared-int4{SUFFIX}"
    sf.save(fast, tok, out)
    back, _ = sf.load(str(out))
    check = {k: v[:1, :128] for k, v in batches[0].items()}  # one calibration row, 128 tokens
    with torch.inference_mode():
        reload_equal = bool(torch.equal(back(**check).logits, fast(**check).logits))
    del back
    onnx_path = common.CACHE / "onnx" / "smollm2" / f"gptq4-g{group}-shared-seq{SUFFIX}.onnx"
    export_s = None
    if not onnx_path.exists():
        t0 = time.perf_counter()
        export_onnx(q, tok, onnx_path, int4_accuracy=4)
        export_s = round(time.perf_counter() - t0, 1)
    dec = OrtDecoder(onnx_path, threads=bench_llm.THREADS)
    variants = {"pytorch fp32": model, "pytorch gptq, dequantized fp32 weights (default)": q,
                "pytorch gptq, int4 kernel (kernel: int4)": fast}
    rows = []
    for name, m in variants.items():
        rows.append({"variant": name, **generation_profile(m, tok, prompt, new_tokens, 1, bench_llm.THREADS, runs=3)})
    rows.append({"variant": "ort gptq, MatMulNBits INT8 compute (11.4c's graph)", **ort_generation_profile(
        dec, model.config.vocab_size, prompt, new_tokens, 1, bench_llm.THREADS, runs=3)})
    rows.append({"variant": "pytorch fp32 (repeat: drift check)",
                 **generation_profile(model, tok, prompt, new_tokens, 1, bench_llm.THREADS, runs=3)})
    bw = read_bandwidth(gib=1.0, repeats=5, threads=bench_llm.THREADS)
    per_token = {"pytorch fp32": _bytes_per_token(model), "pytorch gptq, dequantized fp32 weights (default)":
                 _bytes_per_token(q), "pytorch gptq, int4 kernel (kernel: int4)": _bytes_per_token(fast)}
    for r in rows:
        b = per_token.get(r["variant"].split(" (repeat")[0])
        if b:
            r.update(weight_mb_per_token=round(b / 1e6, 1), bound_tokens_per_s=round(bw["best_gb_s"] * 1e9 / b, 1),
                     share_of_bound=round(r["tokens_per_s"] * b / (bw["best_gb_s"] * 1e9), 3))
    for name, m in variants.items():
        t0 = time.perf_counter()
        ppl = task.evaluate(m, tok, "test")["perplexity"]
        next(r for r in rows if r["variant"] == name).update(perplexity=round(ppl, 3),
                                                            eval_s=round(time.perf_counter() - t0, 1))
    for r in rows:
        print(json.dumps({k: r.get(k) for k in ("variant", "prefill_ms", "tokens_per_s", "perplexity")}), flush=True)
    return {"prompt": prompt, "new_tokens": new_tokens, "group": group, "quantize_s": quantize_s,
            "export_s": export_s, "kernel": {"layers": len(used["layers"]), "kept": used["kept"]},
            "size_mb": {"fp32 (4 bytes x params)": round(4 * sum(p.numel() for p in model.parameters()) / 1e6, 1),
                        "int4 checkpoint": round(weights_size(out) / 1e6, 1),
                        "ort graph": round(onnx_path.stat().st_size / 1e6, 1)},
            "reload_logits_equal": reload_equal, "bandwidth": bw, "rows": rows}


def markdown() -> str:
    r = common.read_result(RESULT)
    if not r or "speed" not in r:
        return "(no results yet)"
    s = r["speed"]
    base = s["rows"][0]["tokens_per_s"]
    out = [f"Batch 1, prompt {s['prompt']}, {s['new_tokens']} new tokens, {r['threads']} threads; read bandwidth "
           f"{s['bandwidth']['best_gb_s']:.1f} GB/s (best of 5); sizes {s['size_mb']}; reload identical: "
           f"{s['reload_logits_equal']}.", "",
           "| variant | prefill ms | decode tokens/s | x fp32 | weight MB read per token | share of the bound "
           "| perplexity |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for x in s["rows"]:
        out.append(f"| {x['variant']} | {x['prefill_ms']:.0f} | {x['tokens_per_s']:.2f} | "
                   f"{x['tokens_per_s'] / base:.2f} | "
                   f"{x.get('weight_mb_per_token', '')} | {x.get('share_of_bound', '')} | {x.get('perplexity', '')} |")
    return "\n".join(out)


PARTS = {"speed": lambda: speed(PROMPT, NEW_TOKENS)}


def main(parts: list[str]) -> None:
    bench_llm.run_parts(RESULT, PARTS, parts, markdown)


if __name__ == "__main__":
    if os.environ.get("BENCH_SMOKE"):
        RESULT, SUFFIX, PROMPT, NEW_TOKENS = "llm_kernel_smoke", "-smoke", 32, 4
        bench_llm.CALIB, bench_llm.EVAL_TOKENS = 16, 2048
    common.parts_cli("bench_llm_kernel.py", PARTS, main, markdown)
