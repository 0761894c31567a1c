"""When INT8 will (not) pay off, and which INT8 backend is fastest on this machine (measured, not guessed).

`int8_advice` looks at the CPU (VNNI / AMX int8 dot products) and at the matrix sizes; `choose_backend`
times FP32, the torch (fbgemm) and the ONNX Runtime INT8 models interleaved at batch 1 and keeps the fastest,
warning clearly when neither beats FP32.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any, Mapping

from torch import nn

log = logging.getLogger("slimformer.quantize")
TINY = 256  # Linear layers narrower than this (in and out) gain nothing from INT8 GEMMs
INT8_DOT = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags() -> set[str]:
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def int8_advice(model: nn.Module | None = None, flags: set[str] | None = None) -> list[str]:
    """Reasons INT8 may not be faster than FP32 here (empty when nothing speaks against it)."""
    flags = cpu_flags() if flags is None else flags
    out = []
    if flags and not any(f in flags for f in INT8_DOT):
        simd = "AVX2" if "avx2" in flags else "no AVX2"
        out.append(f"this CPU has no VNNI/AMX int8 dot-product instructions ({simd}): INT8 GEMMs are emulated "
                   "with 16-bit multiply-adds, expect little or no speed-up (the file still shrinks)")
    if model is not None:
        sizes = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
        if sizes and max(min(i, o) for i, o in sizes) < TINY:
            i, o = max(sizes, key=lambda s: s[0] * s[1])
            out.append(f"the matrices are tiny (largest Linear {i}x{o}): quantizing activations at run time "
                       "costs about as much as the INT8 GEMM saves, expect no speed-up")
    return out


def warn(lines: list[str]) -> None:
    """Log and print the advice so that nobody misses it."""
    for line in lines:
        msg = f"INT8 WILL NOT PAY OFF: {line}"
        log.warning(msg)
        print(msg, file=sys.stderr, flush=True)


def choose_backend(fp32: nn.Module, candidates: Mapping[str, nn.Module], tokenizer: Any, seq_len: int = 128,
                   threads: int | None = None, budget_s: float = 3.0) -> tuple[str, dict[str, Any]]:
    """The fastest INT8 candidate at batch 1 (timed interleaved with fp32); report with the timings."""
    from ..bench import compare_latency
    from ..reliability import speedup

    limit = getattr(getattr(fp32, "config", None), "max_position_embeddings", seq_len) or seq_len
    seq = min(seq_len, int(limit))
    lat = compare_latency({"fp32": fp32, **candidates}, tokenizer, 1, seq, threads, warmup=1, budget_s=budget_s)
    ms = {k: round(v.median_ms, 3) for k, v in lat.items()}
    best = min(candidates, key=lambda k: ms[k])
    sp = speedup(lat["fp32"].summary(), lat[best].summary(), ("fp32", best))
    report: dict[str, Any] = {"chosen": best, "latency_ms_b1": ms, "seq_len": seq,
                              "threads": lat["fp32"].threads, "speedup_vs_fp32": round(ms["fp32"] / ms[best], 2),
                              "speedup_band": [round(sp["speedup_lo"], 2), round(sp["speedup_hi"], 2)],
                              "reliable": sp["reliable"], "warning": sp["warning"]}
    return best, report


def slow_warning(report: Mapping[str, Any], model: nn.Module | None = None, min_speedup: float = 1.1) -> list[str]:
    """Advice lines when the measured speed-up of the chosen backend is below `min_speedup`."""
    sp = report.get("speedup_vs_fp32")
    if sp is None or sp >= min_speedup:
        return []
    ms = report["latency_ms_b1"]
    doubt = "" if report.get("reliable", True) else f"; timing unreliable: {report.get('warning')}"
    return [f"measured on this machine at batch 1, seq {report['seq_len']}, {report['threads']} threads: INT8 "
            f"({report['chosen']}) {ms[report['chosen']]:.2f} ms vs FP32 {ms['fp32']:.2f} ms ({sp:.2f}x{doubt})",
            *int8_advice(model)]

