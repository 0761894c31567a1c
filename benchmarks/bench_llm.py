"""Issue "Language models" on SmolLM2-135M: one-shot pruning from calibration text (Wanda, SparseGPT, per-row
magnitude; 50% unstructured and 2:4), depth pruning (ShortGPT block influence vs dropping the last layers),
each scored by WikiText-2 test perplexity on a fixed token budget, no recovery training; and decoding speed at
batch 1 of the fp32 model in PyTorch and in ONNX Runtime, fp32 and with 4-bit MatMulNBits weights, against the
bound set by this machine's memory bandwidth; and post-training quantization of the layers' Linears (RTN, GPTQ
with and without act-order, AWQ at 4 bits, GPTQ and RTN at 3 bits; SmoothQuant W8A8 against plain dynamic INT8),
scored the same way.

    flock /tmp/slimformer-heavy.lock python benchmarks/bench_llm.py prune depth speed quant
    python benchmarks/bench_llm.py markdown
"""
from __future__ import annotations

import copy
import json
import time
from typing import Any

import common
import torch

RESULT = "llm_prune"
THREADS = 2
EVAL_TOKENS = 16384      # the first tokens of the WikiText-2 test stream (context 1024, stride 512)
CALIB = 256              # lines of WikiText-2 valid (the task's dev split), cut into blocks of CALIB_LEN tokens
CALIB_LEN = 512


def _setup() -> tuple[Any, Any, Any, list]:
    from slimformer import models, tasks
    from slimformer.quantize.guard import calibration_batches

    task = tasks.load("wikitext2", common.DATA / "wikitext2", context=1024, stride=512, max_eval_tokens=EVAL_TOKENS)
    model, tok = models.load("smollm2", task=task)
    batches = calibration_batches(tok, task, CALIB, CALIB_LEN, batch_size=8, seed=0, split="dev", model=model)
    return model.eval(), tok, task, batches


def _row(name: str, model: Any, tok: Any, task: Any, seconds: float, extra: dict[str, Any]) -> dict[str, Any]:
    from slimformer import models
    from slimformer.prune.unstructured import sparse_size

    t0 = time.perf_counter()
    ppl = task.evaluate(model, tok, "test")["perplexity"]
    row = {"variant": name, "perplexity": round(ppl, 3), "params": models.num_params(model),
           "sparse_encoded_mb": round(sparse_size(model) / 1e6, 1), "prune_s": round(seconds, 1),
           "eval_s": round(time.perf_counter() - t0, 1), **extra}
    print(json.dumps(row))
    return row


def prune() -> dict[str, Any]:
    """Base model, then each one-shot method at 50% unstructured and 2:4, from the same calibration batches."""
    from slimformer.prune.oneshot import PruneOneShot, prune_oneshot

    base, tok, task, batches = _setup()
    rows = [_row("base (dequantized Q4_1)", base, tok, task, 0.0, {"sparsity": 0.0})]
    for method in ("magnitude", "wanda", "sparsegpt"):
        for target in ({"sparsity": 0.5}, {"pattern": "2:4"}):
            model = copy.deepcopy(base)
            t0 = time.perf_counter()
            info = prune_oneshot(model, PruneOneShot(method=method, **target), batches)
            rows.append(_row(f"{method} {target.get('pattern') or '50%'}", model, tok, task,
                             time.perf_counter() - t0, {"sparsity": info["sparsity"]}))
            del model
    return {"rows": rows, "calib_blocks": len(batches), "calib_tokens": sum(int(b["input_ids"].numel()) for b in batches)}


def depth(drop: int = 6) -> dict[str, Any]:
    """Drop `drop` of the 30 layers by block influence (measured on the calibration batches) or the last ones."""
    from slimformer.prune.layers import block_influence, keep_layers, most_influential

    base, tok, task, batches = _setup()
    t0 = time.perf_counter()
    bi = block_influence(base, batches)
    secs = time.perf_counter() - t0
    n = len(bi)
    by_bi = most_influential(bi, n - drop)
    rows = []
    for name, keep, s in ((f"block influence, drop {drop}", by_bi, secs), (f"last {drop} dropped", list(range(n - drop)), 0.0)):
        model = keep_layers(copy.deepcopy(base), keep)
        rows.append(_row(name, model, tok, task, s, {"kept": keep}))
        del model
    return {"block_influence": [round(b, 4) for b in bi], "rows": rows}


def _deployed_gptq(base: Any, batches: list, group: int) -> Any:
    """The GPTQ model `speed` and `checkpoint` deploy: a copy of base, 4-bit, act-order, mse grid, one-pass
    Hessians (as measured)."""
    from slimformer.quantize import QuantizeWeights, quantize_weights

    return quantize_weights(copy.deepcopy(base), QuantizeWeights(
        bits=4, group_size=group, method="gptq", act_order=True, grid="mse", sequential=False, embeddings=False,
        guard=False), batches)


def speed(prompt: int = 512, new_tokens: int = 32, block: int = 32, group: int = 32) -> dict[str, Any]:
    """Prefill and decode at batch 1: PyTorch fp32, ORT fp32, ORT 4-bit by ONNX Runtime's rounding (block
    `block`), ORT with slimformer's GPTQ codes (group `group`) (then PyTorch again as a drift check);
    perplexity of the ONNX graphs on the same tokens; bytes read per token and the bandwidth bound."""
    model, tok, task, batches = _setup()
    out = common.CACHE / "onnx" / "smollm2"
    gptq = f"ort gptq 4-bit g{group} act-order mse (own codes)"
    files = {"ort fp32": out / "fp32.onnx", "ort int4": out / f"int4-b{block}.onnx", gptq: out / f"gptq4-g{group}-act-order-mse.onnx"}
    builders = {"ort fp32": lambda: (model, {}), "ort int4": lambda: (model, {"int4": block}),
                # slimformer's GPTQ codes carried into MatMulNBits; LM head and table rounded by block
                gptq: lambda: (_deployed_gptq(model, batches, group), {"int4": group})}
    return _decode_rows(model, tok, task, files, builders, set(files), prompt, new_tokens,
                        {"block": block, "group": group})


def speed_head(prompt: int = 512, new_tokens: int = 32, group: int = 32, head: bool | str = True) -> dict[str, Any]:
    """The LM head and the table 4-bit too: GPTQ 4-bit g`group`, act-order, mse grid, layer by layer, with
    `lm_head: true` (the tied head untied and GPTQ-calibrated on the final hidden states; the table 4-bit on its
    own), exported with INT8 compute (accuracy level 4) and float compute (level 0), timed against PyTorch fp32
    and the `speed` part's GPTQ graph (head and table rounded by ONNX Runtime); or (`head` "shared", the
    speed_shared part) with `lm_head: shared` (one copy of the head's GPTQ codes serves the lookups too), INT8
    compute, timed against the `true` graph. Also the PyTorch perplexity of the model itself."""
    from slimformer.quantize import QuantizeWeights, quantize_weights

    model, tok, task, batches = _setup()
    t0 = time.perf_counter()
    q = quantize_weights(copy.deepcopy(model), QuantizeWeights(
        bits=4, group_size=group, method="gptq", act_order=True, grid="mse", sequential=True, lm_head=head,
        embeddings=True, guard=False), batches)
    secs = time.perf_counter() - t0
    t0 = time.perf_counter()
    what = "shared head and table codes" if head == "shared" else "own table codes"
    torch_row = {"variant": f"pytorch gptq + head, {what}", "perplexity": round(task.evaluate(q, tok, "test")["perplexity"], 3),
                 "tensor_mb": _tensor_mb(q), "quantize_s": round(secs, 1), "eval_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(torch_row))
    out = common.CACHE / "onnx" / "smollm2"
    files = {"ort fp32": out / "fp32.onnx"}
    if head == "shared":
        files |= {"ort gptq + head, INT8 compute": out / f"gptq4-g{group}-head-seq.onnx",
                  "ort gptq + shared head/table, INT8 compute": out / f"gptq4-g{group}-shared-seq.onnx"}
        builders = {"ort gptq + shared head/table, INT8 compute": lambda: (q, {"int4_accuracy": 4})}
    else:
        files |= {f"ort gptq 4-bit g{group} act-order mse (own codes)": out / f"gptq4-g{group}-act-order-mse.onnx",
                  "ort gptq + head, INT8 compute": out / f"gptq4-g{group}-head-seq.onnx",
                  "ort gptq + head, float compute": out / f"gptq4-g{group}-head-seq-acc0.onnx"}
        builders = {"ort gptq + head, INT8 compute": lambda: (q, {"int4_accuracy": 4}),
                    "ort gptq + head, float compute": lambda: (q, {"int4_accuracy": 0})}
    for name in (n for n in files if n not in builders):
        if not files[name].exists():
            raise SystemExit(f"{files[name]} missing: run the speed / speed_head part first")
    res = _decode_rows(model, tok, task, files, builders, set(builders), prompt, new_tokens, {"group": group})
    return {**res, "pytorch": torch_row}


def _decode_rows(model: Any, tok: Any, task: Any, files: dict[str, Any], builders: dict[str, Any], score: set[str],
                 prompt: int, new_tokens: int, extra: dict[str, Any]) -> dict[str, Any]:
    """Export the missing `files` (builders[name]() -> (model, export options)), time every graph interleaved
    between two PyTorch fp32 runs, score the `score` graphs' perplexity, add bytes read per token and bounds."""
    from slimformer.deploy import export_onnx
    from slimformer.export_generative import OrtDecoder
    from slimformer.generation import generation_profile, ort_generation_profile
    from slimformer.quantize.onnx_int4 import bytes_read_per_token, read_bandwidth
    from slimformer.tasks.language_modeling import perplexity

    export_info = {}
    for name, path in files.items():
        if not path.exists():
            t0 = time.perf_counter()
            src, opts = builders[name]()
            info = export_onnx(src, tok, path, **opts)
            export_info[name] = {"seconds": round(time.perf_counter() - t0, 1), "notes": info["notes"],
                                 **{k: info[k] for k in ("top1_agreement", "relative_error") if k in info}}
            del src
    sessions = {name: OrtDecoder(path, threads=THREADS) for name, path in files.items()}
    vocab = model.config.vocab_size
    rows = [{"variant": "pytorch fp32", **generation_profile(model, tok, prompt, new_tokens, 1, THREADS, runs=3)}]
    for name, dec in sessions.items():
        rows.append({"variant": name, **ort_generation_profile(dec, vocab, prompt, new_tokens, 1, THREADS, runs=3)})
    rows.append({"variant": "pytorch fp32 (repeat: drift check)",
                 **generation_profile(model, tok, prompt, new_tokens, 1, THREADS, runs=3)})
    bw = read_bandwidth(gib=1.0, repeats=5, threads=THREADS)
    ids = task.stream(tok, "test")[:EVAL_TOKENS]
    per_token = {"pytorch fp32": bytes_read_per_token(files["ort fp32"])}
    for name, dec in sessions.items():
        per_token[name] = bytes_read_per_token(files[name])
        if name in score:
            t0 = time.perf_counter()
            ppl = perplexity(dec, ids, context=1024, stride=512)
            next(r for r in rows if r["variant"] == name).update(perplexity=round(ppl, 3),
                                                                eval_s=round(time.perf_counter() - t0, 1))
    for r in rows:
        b = per_token.get(r["variant"]) or per_token[r["variant"].split(" (")[0]]  # the drift-check row: fp32
        bound = bw["best_gb_s"] * 1e9 / b
        r.update(file_mb=round(files[r["variant"]].stat().st_size / 1e6, 1) if r["variant"] in files else None,
                 weight_mb_per_token=round(b / 1e6, 1), bound_tokens_per_s=round(bound, 1),
                 share_of_bound=round(r["tokens_per_s"] / bound, 3))
    return {"prompt": prompt, "new_tokens": new_tokens, **extra, "bandwidth": bw, "export": export_info, "rows": rows}


def _tensor_mb(model: Any) -> float:
    """MB of the model's tensors as stored (shared tensors once; quantized codes at their packed size)."""
    seen, total = set(), 0
    for t in model.state_dict().values():
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return round(total / 1e6, 1)


def quant(group: int = 64) -> dict[str, Any]:
    """Weight-only RTN / GPTQ / GPTQ act-order / AWQ at 4 bits and RTN / GPTQ / GPTQ act-order at 3 bits (group
    `group`: 128 does not divide SmolLM2's width 576 and would fall back to one scale per row for every Linear
    but down_proj), then dynamic INT8 (per-tensor activations on fbgemm, per-token on torch._int_mm) with and
    without SmoothQuant (alpha 0.5); same calibration batches and perplexity setup as `prune`. The tied
    embedding / LM head stays fp32 in every variant."""
    from slimformer.quantize import QuantizeDynamic, QuantizeWeights, quantize_dynamic, quantize_weights

    base, tok, task, batches = _setup()
    rows = []

    def row(name: str, model: Any, seconds: float, info: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        ppl = task.evaluate(model, tok, "test")["perplexity"]
        r = {"variant": name, "perplexity": round(ppl, 3), "tensor_mb": _tensor_mb(model),
             "quantize_s": round(seconds, 1), "eval_s": round(time.perf_counter() - t0, 1), **info}
        print(json.dumps(r))
        rows.append(r)

    row("base (dequantized Q4_1)", base, 0.0, {})
    weight_only = [("rtn", 4, False), ("gptq", 4, False), ("gptq", 4, True), ("awq", 4, False),
                   ("rtn", 3, False), ("gptq", 3, False), ("gptq", 3, True)]
    for method, bits, act_order in weight_only:
        cfg = QuantizeWeights(bits=bits, group_size=group, method=method, act_order=act_order, sequential=False,
                              guard=False)  # one-pass Hessians, as measured (quant_seq: layer by layer)
        model = copy.deepcopy(base)
        t0 = time.perf_counter()
        model = quantize_weights(model, cfg, batches)
        secs = time.perf_counter() - t0
        info = dict((getattr(model.config, "slimformer", None) or {}).get("awq", {}))
        row(f"{method} {bits}-bit g{group}{' act-order' if act_order else ''}", model, secs, info)
        del model
    kernels = {"tensor": "per-tensor activations, fbgemm", "token": "per-token activations, torch._int_mm"}
    for acts, alpha in (("tensor", None), ("tensor", 0.5), ("token", None), ("token", 0.5)):
        cfg = QuantizeDynamic(backend="torch", smoothquant=alpha, activations=acts, guard=False)
        model = copy.deepcopy(base)
        t0 = time.perf_counter()
        model = quantize_dynamic(model, cfg, tok, batches)
        secs = time.perf_counter() - t0
        info = dict((getattr(model.config, "slimformer", None) or {}).get("smoothquant", {}))
        name = f"int8 dynamic ({kernels[acts]})"
        row(name if alpha is None else f"smoothquant {alpha} + {name}", model, secs, info)
        del model
    return {"group": group, "rows": rows, "calib_blocks": len(batches),
            "calib_tokens": sum(int(b["input_ids"].numel()) for b in batches)}


def quant_seq() -> dict[str, Any]:
    """GPTQ act-order with the mse grid, calibrated layer by layer (`sequential: true`), at groups 64 and 32."""
    return quant_mse(settings=(("gptq", 64, True), ("gptq", 32, True)), sequential=True)


def quant_mse(group: int = 64, settings: tuple = (), sequential: bool = False) -> dict[str, Any]:
    """RTN and GPTQ act-order with `grid: mse` (the clipping search per group), GPTQ also at group 32 (the block
    of the GGUF file the base model was read from), same setup as `quant`."""
    from slimformer.quantize import QuantizeWeights, quantize_weights

    base, tok, task, batches = _setup()
    rows = []
    for method, g, order in settings or (("rtn", group, False), ("gptq", group, True), ("gptq", 32, True)):
        model = copy.deepcopy(base)
        t0 = time.perf_counter()
        model = quantize_weights(model, QuantizeWeights(bits=4, group_size=g, method=method, grid="mse",
                                                        act_order=order, sequential=sequential, guard=False), batches)
        secs = time.perf_counter() - t0
        t0 = time.perf_counter()
        ppl = task.evaluate(model, tok, "test")["perplexity"]
        name = f"{method} 4-bit g{g}{' act-order' if order else ''}, mse grid{', sequential' if sequential else ''}"
        rows.append({"variant": name, "perplexity": round(ppl, 3),
                     "tensor_mb": _tensor_mb(model), "quantize_s": round(secs, 1),
                     "eval_s": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]))
        del model
    return {"rows": rows}


def checkpoint(group: int = 32) -> dict[str, Any]:
    """slimformer's GPTQ 4-bit model written as a compressed-tensors folder, loaded back by transformers alone
    (AutoModelForCausalLM) and scored with the same perplexity code: the deployable checkpoint keeps the
    quality of the `quant` row."""
    from transformers import AutoModelForCausalLM

    from slimformer.export_compressed import write_compressed_tensors

    base, tok, task, batches = _setup()
    model = _deployed_gptq(base, batches, group)
    out = common.CACHE / "checkpoints" / f"smollm2-gptq4-g{group}-act-order-mse"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    info = write_compressed_tensors(model, tok, out)
    del model
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    ppl = task.evaluate(loaded, tok, "test")["perplexity"]
    row = {"variant": f"gptq 4-bit g{group} act-order mse as compressed-tensors, loaded by transformers",
           "perplexity": round(ppl, 3),
           "folder_mb": round(info["bytes"] / 1e6, 1), "max_abs_diff_on_write": info["max_abs_diff"],
           "notes": info["notes"]}
    print(json.dumps(row))
    return row


def llmc_inputs() -> dict[str, Any]:
    """For benchmarks/peers/llmcompressor_gptq.py: the fp32 model as a transformers folder and the calibration
    blocks `quant` uses, as token ids."""
    import numpy as np

    model, tok, _, batches = _setup()
    root = common.CACHE / "llmc"
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    ids = torch.cat([b["input_ids"] for b in batches]).numpy()
    np.save(root / "calib_ids.npy", ids)
    return {"dir": str(root), "calib_blocks": int(ids.shape[0]), "calib_len": int(ids.shape[1])}


def llmc() -> dict[str, Any]:
    """Perplexity of llm-compressor's GPTQ / SparseGPT / Wanda weights (written by the peer script) with the code
    and tokens of `quant` and `prune`: its rows compare with slimformer's rows there."""
    from safetensors.torch import load_file

    base, tok, task, _ = _setup()
    rows = []
    for f in sorted((common.CACHE / "llmc").glob("*.safetensors")):
        model = copy.deepcopy(base)
        state = load_file(str(f))
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected and all("embed" in k or "lm_head" in k or "norm" in k for k in missing), (missing, unexpected)
        t0 = time.perf_counter()
        ppl = task.evaluate(model, tok, "test")["perplexity"]
        info = json.loads(f.with_suffix(".json").read_text())
        rows.append({"variant": f.stem, "perplexity": round(ppl, 3), "eval_s": round(time.perf_counter() - t0, 1), **info})
        print(json.dumps(rows[-1]))
        del model
    return {"rows": rows}


PARTS = {"prune": prune, "depth": depth, "speed": speed, "speed_head": speed_head,
         "speed_shared": lambda: speed_head(head="shared"), "quant": quant, "quant_mse": quant_mse, "quant_seq": quant_seq,
         "checkpoint": checkpoint,
         "llmc_inputs": llmc_inputs, "llmc": llmc}


def main(parts: list[str]) -> None:
    run_parts(RESULT, PARTS, parts, markdown)


def run_parts(result: str, table: dict[str, Any], parts: list[str], show: Any) -> None:
    """Run `parts` of `table` on THREADS threads, keeping the other parts' stored results in results/`result`.json."""
    torch.set_num_threads(THREADS)
    header = {"threads": THREADS, "eval_tokens": EVAL_TOKENS, "calib_lines": CALIB, "calib_len": CALIB_LEN}
    common.run_parts(result, table, parts, show, header)


def markdown() -> str:
    r = common.read_result(RESULT)
    if r is None:
        return "(no results yet)"
    out = ["| variant | WikiText-2 test ppl | zeros in the layers' Linears | sparse-encoded MB | prune s |",
           "|---|---|---|---|---|"]
    for part in ("prune", "depth"):
        for row in r.get(part, {}).get("rows", []):
            sp = f"{100 * row['sparsity']:.1f}%" if "sparsity" in row else f"{len(row['kept'])} of 30 layers kept"
            out.append(f"| {row['variant']} | {row['perplexity']} | {sp} | {row['sparse_encoded_mb']} | {row['prune_s']} |")
    if "quant" in r:
        out += ["", f"Post-training quantization of the layers' Linears (group {r['quant']['group']}; the tied "
                "embedding / LM head stays fp32):", "", "| variant | WikiText-2 test ppl | tensors MB | quantize s |",
                "|---|---|---|---|"]
        for row in r["quant"]["rows"] + r.get("quant_mse", {}).get("rows", []) + r.get("quant_seq", {}).get("rows", []):
            out.append(f"| {row['variant']} | {row['perplexity']} | {row['tensor_mb']} | {row['quantize_s']} |")
    if "checkpoint" in r:
        c = r["checkpoint"]
        out += ["", f"Deployable checkpoint: {c['variant']}: perplexity {c['perplexity']}, {c['folder_mb']} MB on disk "
                f"(max |logits - slimformer's| when written: {c['max_abs_diff_on_write']})."]
    if "llmc" in r:
        out += ["", "llm-compressor (same calibration blocks, same perplexity code; compare with the rows above):", "",
                "| variant | WikiText-2 test ppl | llm-compressor | seconds | check |", "|---|---|---|---|---|"]
        for row in r["llmc"]["rows"]:
            out.append(f"| {row['variant']} | {row['perplexity']} | {row['llmcompressor']} | {row['seconds']} | "
                       f"{row['check']} |")
    for part in ("speed", "speed_head", "speed_shared"):
        if part in r:
            out += ["", *_speed_table(r[part], r["threads"])]
        if "pytorch" in r.get(part, {}):
            p = r[part]["pytorch"]
            out += ["", f"{p['variant']} in PyTorch: perplexity {p['perplexity']}, tensors {p['tensor_mb']} MB, "
                    f"quantized in {p['quantize_s']} s."]
    return "\n".join(out)


def _speed_table(sp: dict[str, Any], threads: int) -> list[str]:
    out = [f"Batch 1, prompt {sp['prompt']} tokens, {sp['new_tokens']} new tokens, {threads} threads; "
           f"memory read bandwidth {sp['bandwidth']['best_gb_s']} GB/s (best of 5; median "
           f"{sp['bandwidth']['median_gb_s']}).", "",
           "| variant | file MB | x smaller | prefill ms | decode ms/token | tokens/s | x PyTorch fp32 | weights "
           "read per token (MB) | bandwidth bound (tokens/s) | share of the bound | ppl (same tokens) | reliable |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ref = sp["rows"][0]
    fp32_mb = next((r["file_mb"] for r in sp["rows"] if r["variant"] == "ort fp32"), None)
    for row in sp["rows"]:
        mb = row.get("file_mb")
        smaller = f"{fp32_mb / mb:.2f}" if mb and fp32_mb else ""
        out.append(f"| {row['variant']} | {mb or ''} | {smaller} | {row['prefill_ms']:.0f} | "
                   f"{row['decode_ms_per_token']:.1f} | {row['tokens_per_s']} | "
                   f"{row['tokens_per_s'] / ref['tokens_per_s']:.2f} | {row['weight_mb_per_token']} | "
                   f"{row['bound_tokens_per_s']} | {100 * row['share_of_bound']:.0f}% | {row.get('perplexity', '')} "
                   f"| {row['reliable']} |")
    return out


if __name__ == "__main__":
    common.parts_cli("bench_llm.py", PARTS, main, markdown)
