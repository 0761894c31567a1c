"""Latency, size and parameter measurement shared by evaluate, profile, the recipe runner and benchmarks.

Latency: median of repeated runs after warm-up, thread count fixed and reported. Several candidates are
measured interleaved (round robin) in the same process, so machine noise hits them alike and their ratio
is meaningful.
"""
from __future__ import annotations

import contextlib
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Mapping

import torch

from .data import dummy_inputs
from .fsutil import weights_size

Forward = Callable[[dict[str, torch.Tensor]], Any]


@dataclass
class Latency:
    batch: int
    seq_len: int
    threads: int
    median_ms: float
    p90_ms: float
    runs: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[int]:
    """Fix torch's intra-op thread count for the block."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


def as_forward(model: Any) -> Forward:
    """A callable inputs -> output for a torch module (no grad) or anything already callable."""
    if isinstance(model, torch.nn.Module):
        model.eval()

        def fwd(inputs: dict[str, torch.Tensor]) -> Any:
            with torch.inference_mode():
                return model(**inputs)

        return fwd
    return model


def compare_latency(
    candidates: Mapping[str, Any],
    tokenizer: Any,
    batch: int = 1,
    seq_len: int = 128,
    n_threads: int | None = None,
    warmup: int = 2,
    runs: int | None = None,
    budget_s: float = 6.0,
    block: int | None = None,
) -> dict[str, Latency]:
    """Median latency of each candidate (module or forward callable), interleaved in one process.

    Candidates take turns in blocks of `block` consecutive calls and the first call of each block is not
    counted: switching between runtimes (torch's OpenMP pool, ONNX Runtime's spinning pool) slows the next
    call, and per-call alternation would charge that to everyone. `block` defaults to 1 for calls over
    0.2 s (the switch is noise there) and 6 otherwise; `runs` is the number of rounds (default: from
    budget_s)."""
    inputs = dummy_inputs(tokenizer, batch, seq_len, model=next((c for c in candidates.values() if isinstance(c, torch.nn.Module)), None))
    fwds = {k: as_forward(v) for k, v in candidates.items()}
    times: dict[str, list[float]] = {k: [] for k in fwds}
    with threads(n_threads) as nt:
        for fwd in fwds.values():
            for _ in range(warmup):
                fwd(inputs)
        first = {}
        for k, fwd in fwds.items():
            t = time.perf_counter()
            fwd(inputs)
            first[k] = time.perf_counter() - t
        if block is None:
            block = 1 if max(first.values()) > 0.2 else 6
        if runs is None:
            runs = int(min(50, max(5, budget_s / max(sum(first.values()) * block, 1e-4))))
        skip = 0 if block == 1 else 1  # the first call of a block pays for the switch
        for _ in range(runs):
            for k, fwd in fwds.items():
                for i in range(block):
                    t = time.perf_counter()
                    fwd(inputs)
                    if i >= skip:
                        times[k].append(time.perf_counter() - t)
    out = {}
    for k, ts in times.items():
        ts_ms = sorted(x * 1000 for x in ts)
        out[k] = Latency(batch, seq_len, nt, statistics.median(ts_ms), ts_ms[int(0.9 * (len(ts_ms) - 1))], len(ts_ms))
    return out


def latency(model: Any, tokenizer: Any, batch: int = 1, seq_len: int = 128, n_threads: int | None = None,
            **kw: Any) -> Latency:
    return compare_latency({"m": model}, tokenizer, batch, seq_len, n_threads, **kw)["m"]


def saved_size(model: torch.nn.Module, tokenizer: Any = None) -> int:
    """Bytes of the weights slimformer writes for this model (saved to a temporary directory)."""
    from .models.io import save

    with tempfile.TemporaryDirectory() as d:
        save(model, None, f"{d}/m")
        return weights_size(f"{d}/m")


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    flags = ""
    with contextlib.suppress(OSError):
        flags = open("/proc/cpuinfo").read()
    return {
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "avx512_vnni": "avx512_vnni" in flags,
        "avx2": "avx2" in flags,
    }
