"""Quantization benchmark on the cached MiniLM teachers, one process per task: every candidate is evaluated
on the full dev split, then ALL are timed interleaved at batch 1 and 32 (seq len 128, threads stated), so each
speed-up is against the FP32 model of the same run. Two tables come out of the one run:

- side by side (dynamic INT8): slimformer's default (backend auto) and its two backends vs torch.ao
  quantize_dynamic, ONNX Runtime quantize_dynamic (defaults) and torchao Int8DynamicActivationInt8Weight;
- per method: static INT8 with min-max / percentile / entropy calibration, weight-only 8/4-bit RTN and GPTQ,
  mixed precision under a size budget (per-layer choice in the JSON), QAT with distillation (--qat).

    flock /tmp/sf/cpu.lock env HF_HUB_OFFLINE=1 SLIMFORMER_QUIET=1 .venv/bin/python benchmarks/bench_quant.py \
        --task sst2 --qat
    flock /tmp/sf/cpu.lock env HF_HUB_OFFLINE=1 SLIMFORMER_QUIET=1 .venv/bin/python benchmarks/bench_quant.py \
        --task cola
"""
from __future__ import annotations

import argparse
import copy
import io
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from common import CACHE, print_table, task, teacher, write_result

import torch

FP32 = "FP32 (PyTorch eager)"


def size_of(model: Any, tok: Any) -> int:
    from slimformer.fsutil import weights_size
    from slimformer.models import save

    with tempfile.TemporaryDirectory() as d:
        save(model, tok, Path(d) / "m")
        return weights_size(Path(d) / "m")


def pickled_size(model: torch.nn.Module) -> int:
    """torch.save(state_dict) bytes: the only way torch.ao / torchao modules save (pickle)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def side_builders(fp: torch.nn.Module, tok: Any, scratch: Path) -> dict[str, Callable[[], tuple[Any, int, str]]]:
    """Dynamic INT8 candidates: (model or forward callable, bytes on disk, how the size was measured)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic as ort_qd

    from slimformer.export import OnnxModel, to_onnx
    from slimformer.quantize import QuantizeDynamic, quantize_dynamic

    def slim(backend: str, fuse: bool = True) -> Callable[[], tuple[Any, int, str]]:
        def b() -> tuple[Any, int, str]:
            q = quantize_dynamic(copy.deepcopy(fp), QuantizeDynamic(backend=backend, fuse=fuse, guard=False), tok)
            return q, size_of(q, tok), "safetensors"
        return b

    def ao() -> tuple[Any, int, str]:
        q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp), {torch.nn.Linear}, dtype=torch.qint8)
        return q, pickled_size(q), "torch.save (pickle)"

    def ort_fp32() -> tuple[Any, int, str]:
        to_onnx(fp, tok, scratch / "fp32.onnx", seq_len=16)
        return OnnxModel(scratch / "fp32.onnx"), (scratch / "fp32.onnx").stat().st_size, "onnx"

    def ort_int8() -> tuple[Any, int, str]:
        if not (scratch / "fp32.onnx").exists():
            to_onnx(fp, tok, scratch / "fp32.onnx", seq_len=16)
        ort_qd(str(scratch / "fp32.onnx"), str(scratch / "int8.onnx"), weight_type=QuantType.QInt8)
        return OnnxModel(scratch / "int8.onnx"), (scratch / "int8.onnx").stat().st_size, "onnx"

    def tao() -> tuple[Any, int, str]:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        q = copy.deepcopy(fp)
        quantize_(q, Int8DynamicActivationInt8WeightConfig())
        return q, pickled_size(q), "torch.save (pickle)"

    return {"slimformer dynamic (default: auto)": slim("auto"), "slimformer dynamic (torch fbgemm)": slim("torch"),
            "slimformer dynamic (onnxruntime)": slim("onnxruntime"),
            "slimformer dynamic (onnxruntime, unfused)": slim("onnxruntime", fuse=False), "torch.ao quantize_dynamic": ao,
            "ORT fp32 (reference)": ort_fp32, "ORT quantize_dynamic (defaults)": ort_int8,
            "torchao Int8DynActInt8W (eager)": tao}


def method_builders(fp: torch.nn.Module, tok: Any, calib: list, info: dict[str, Any]
                    ) -> dict[str, Callable[[], tuple[Any, int, str]]]:
    from slimformer import quantize as Q

    def wrap(fn: Callable[[torch.nn.Module], Any]) -> Callable[[], tuple[Any, int, str]]:
        def b() -> tuple[Any, int, str]:
            q = fn(copy.deepcopy(fp))
            return q, size_of(q, tok), "safetensors"
        return b

    def mixed(m: torch.nn.Module) -> torch.nn.Module:
        q, rep = Q.quantize_mixed(m, calib[:4], Q.QuantizeMixed(budget=0.2, guard=False))
        info["mixed"] = {k: rep[k] for k in ("per_layer", "counts", "linear_bytes_fraction_of_fp32", "choice")}
        return q

    def static(method: str, backend: str = "torch") -> Callable[[torch.nn.Module], Any]:
        cal = calib if backend == "torch" else calib[:8]
        return lambda m: Q.quantize_static(m, cal, Q.QuantizeStatic(method=method, backend=backend, guard=False), tok)

    return {
        "static int8 minmax (torch)": wrap(static("minmax")),
        "static int8 percentile 99.99 (torch)": wrap(static("percentile")),
        "static int8 entropy (torch)": wrap(static("entropy")),
        "static int8 percentile (onnxruntime QDQ)": wrap(static("percentile", "onnxruntime")),
        "weights 8-bit per-row RTN": wrap(lambda m: Q.quantize_weights(m, Q.QuantizeWeights(bits=8, group_size=None))),
        "weights 4-bit g128 RTN": wrap(lambda m: Q.quantize_weights(m, Q.QuantizeWeights(bits=4))),
        "weights 4-bit g128 GPTQ": wrap(lambda m: Q.quantize_weights(m, Q.QuantizeWeights(bits=4, method="gptq"),
                                                                     calib[:8])),
        "mixed int4/int8/fp32 (budget 0.2)": wrap(mixed),
    }


def qat_builder(fp: torch.nn.Module, tok: Any, t: Any, args: argparse.Namespace, info: dict[str, Any]
                ) -> Callable[[], tuple[Any, int, str]]:
    def b() -> tuple[Any, int, str]:
        from slimformer.quantize.qat import QuantizeQAT, quantize_qat_step
        from slimformer.steps import Context

        work = CACHE / "work" / "quant-qat" / args.task
        shutil.rmtree(work, ignore_errors=True)
        ctx = Context(tokenizer=tok, task=t, work_dir=work, teacher=fp, max_len=64)
        cfg = QuantizeQAT(epochs=1, max_train_examples=args.qat_examples, lr=2e-5, distill=True, guard=False)
        q = quantize_qat_step(copy.deepcopy(fp), cfg, ctx)
        info["qat"] = {"train_examples": args.qat_examples, "epochs": 1, "max_len": 64, "distill": True,
                       "alpha": cfg.alpha, "train": ctx.info.get("train")}
        shutil.rmtree(work, ignore_errors=True)
        return q, size_of(q, tok), "safetensors"
    return b


def measure(cands: dict[str, tuple[Any, int, str]], tok: Any, t: Any, args: argparse.Namespace,
            toks: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Dev metric of every candidate (with its own tokenizer from `toks`, default `tok`), then interleaved
    latency at batch 1 and 32 (FP32 first; random ids valid for the smallest vocabulary)."""
    toks = toks or {}
    from slimformer.bench import compare_latency
    from slimformer.evaluate import evaluate_task

    rows = []
    for name, (m, size, how) in cands.items():
        s = time.perf_counter()
        metrics = {t.main_metric: float("nan")}
        if not args.latency_only:
            with torch.inference_mode():
                metrics = evaluate_task(m, toks.get(name, tok), t, "dev", 128, args.max_examples)
        print(f"{name}: {metrics} ({time.perf_counter() - s:.0f}s)", flush=True)
        rows.append({"method": name, **{k: round(100 * v, 2) for k, v in metrics.items()},
                     "size_mb": round(size / 1e6, 2), "size_from": how})
    models = {k: v[0] for k, v in cands.items()}
    tok = min([tok, *toks.values()], key=len)
    lat1 = compare_latency(models, tok, 1, 128, args.threads, warmup=3, runs=args.b1_runs, budget_s=args.budget)
    lat32 = compare_latency(models, tok, 32, 128, args.threads, runs=args.b32_runs)
    base = rows[0]
    for r in rows:
        k = r["method"]
        r["drop_pts"] = round(base[t.main_metric] - r[t.main_metric], 2)
        r["x_smaller"] = round(base["size_mb"] / r["size_mb"], 2)
        r["b1_ms"] = round(lat1[k].median_ms, 2)
        r["b32_ms"] = round(lat32[k].median_ms, 1)
        r["b1_speedup"] = round(lat1[FP32].median_ms / lat1[k].median_ms, 2)
        r["b32_speedup"] = round(lat32[FP32].median_ms / lat32[k].median_ms, 2)
        r["threads"] = lat1[k].threads
        r["b1_runs"], r["b32_runs"] = lat1[k].runs, lat32[k].runs
        r["b1"], r["b32"] = lat1[k].summary(), lat32[k].summary()  # spread and reliability
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--task", default="sst2")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--qat", action="store_true", help="add QAT (1 epoch, distilled, max_len 64)")
    p.add_argument("--qat-examples", type=int, default=2000)
    p.add_argument("--parts", default="side,methods")
    p.add_argument("--max-examples", type=int, default=None, help="dry run: evaluate on N dev examples")
    p.add_argument("--b32-runs", type=int, default=3)
    p.add_argument("--budget", type=float, default=25.0, help="seconds for the batch-1 round robin")
    p.add_argument("--b1-runs", type=int, default=None, help="batch-1 rounds (default: from --budget)")
    p.add_argument("--latency-only", action="store_true",
                   help="no dev evaluation; one candidate per distinct kernel path; writes quant_latency_<task>")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from slimformer.quantize.advice import int8_advice
    from slimformer.quantize.guard import calibration_batches

    start = time.perf_counter()
    fp, tok = teacher(args.task)
    t = task(args.task)
    calib = calibration_batches(tok, t, 256, 128, seed=0)
    info: dict[str, Any] = {"int8_advice": int8_advice(fp)}
    scratch = Path(tempfile.mkdtemp(prefix="sfq-"))
    parts = args.parts.split(",")
    builders: dict[str, Callable[[], tuple[Any, int, str]]] = {}
    if "side" in parts:
        builders.update(side_builders(fp, tok, scratch))
    if "methods" in parts:
        builders.update(method_builders(fp, tok, calib, info))
    if args.latency_only:  # same kernels as a kept one: other calibrations, GPTQ (RTN), 8-bit weights, QAT
        builders = {k: v for k, v in builders.items() if k not in SAME_KERNELS}
    if args.qat and not args.latency_only:
        builders["QAT int8 (distilled, 1 epoch on 2k)"] = qat_builder(fp, tok, t, args, info)
    cands: dict[str, tuple[Any, int, str]] = {FP32: (fp, size_of(fp, tok), "safetensors")}
    build_s: dict[str, float] = {}
    for name, b in builders.items():
        s = time.perf_counter()
        try:
            cands[name] = b()
        except Exception as e:  # report, do not die (torchao and exporters move fast)
            print(f"{name} failed: {type(e).__name__}: {e}", flush=True)
            continue
        build_s[name] = round(time.perf_counter() - s, 1)
        print(f"built {name} in {build_s[name]}s", flush=True)
    auto = cands.get("slimformer dynamic (default: auto)")
    if auto is not None:
        info["auto_backend"] = auto[0].config.slimformer.get("quantize_backend")
    rows = measure(cands, tok, t, args)
    for r in rows:
        r["quantize_s"] = build_s.get(r["method"])
    side = [r for r in rows if r["method"] == FP32 or r["method"] in SIDE]
    meth = [r for r in rows if r["method"] not in SIDE or r["method"].startswith("slimformer")]
    title = f"MiniLM {args.task} dev, seq 128, {args.threads} threads"
    common = {"task": args.task, "seq_len": 128, "threads": args.threads, "max_examples": args.max_examples,
              "total_s": round(time.perf_counter() - start, 1), **info}
    if args.latency_only:
        print_table(rows, f"Latency only, {title}")
        write_result(f"quant_latency_{args.task}", {**common, "rows": rows})
        return
    if len(side) > 1:
        print_table(side, f"Dynamic INT8 side by side, {title}")
        write_result(f"quant_side_by_side_{args.task}", {**common, "rows": side})
    if len(meth) > 1 and "methods" in parts:
        print_table(meth, f"Quantization methods, {title}")
        write_result(f"quant_methods_{args.task}", {**common, "rows": meth})
    shutil.rmtree(scratch, ignore_errors=True)


SIDE = {"slimformer dynamic (default: auto)", "slimformer dynamic (torch fbgemm)", "slimformer dynamic (onnxruntime)",
        "slimformer dynamic (onnxruntime, unfused)",
        "torch.ao quantize_dynamic", "ORT fp32 (reference)", "ORT quantize_dynamic (defaults)",
        "torchao Int8DynActInt8W (eager)"}

SAME_KERNELS = {"static int8 minmax (torch)", "static int8 entropy (torch)", "weights 8-bit per-row RTN",
                "weights 4-bit g128 GPTQ"}

if __name__ == "__main__":
    main()
