"""Latency, size and parameter measurement shared by evaluate, profile, the recipe runner and benchmarks.

`compare_latency` is the one timing function. Several candidates are measured interleaved (round robin)
in the same process, so machine noise hits them alike and their ratio is meaningful. Each result carries
the spread (min, p25, median, p75, p90, max over `runs` calls), the thread count, and whether it can be
trusted: the machine is watched during the timing (cores other processes took, see cpuload.py) and the
samples are checked for spread and drift (rules in reliability.py). An unreliable timing is repeated up to
`retries` more times with the same budget; if it stays unreliable the least bad attempt is kept, flagged,
with the reason in `warning`.
"""
from __future__ import annotations

import contextlib
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Mapping

import torch

from .cpuload import CpuSample, allowed_cpus, others_cores, resolution_cores, usable_cores
from .data import dummy_inputs
from .fsutil import weights_size
from .reliability import MachineLoad, machine_problems, sample_problems, spread

Forward = Callable[[dict[str, torch.Tensor]], Any]


@dataclass
class Latency:
    """One candidate's timing: the spread of its calls (ms), how it was measured, and whether to trust it."""

    batch: int
    seq_len: int
    threads: int
    median_ms: float
    p90_ms: float
    runs: int
    min_ms: float = float("nan")
    p25_ms: float = float("nan")
    p75_ms: float = float("nan")
    max_ms: float = float("nan")
    reliable: bool = True
    warning: str = ""
    usable_cores: int | None = None
    others_cores: float | None = None  # average cores other processes kept busy during the timing
    load_before: float | None = None
    load_after: float | None = None
    attempts: int = 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """The JSON form stored beside a median (`latency_b1` next to `latency_b1_ms`)."""
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()
                if k not in ("batch", "seq_len", "p90_ms")}


def default_threads() -> int:
    """The thread count used when none is given: the cores this process may really use."""
    return usable_cores()


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[int]:
    """Fix torch's intra-op thread count for the block (default: `default_threads()`)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n or default_threads())
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


def _attempt(fwds: Mapping[str, Forward], inputs: dict[str, torch.Tensor], warmup: int, runs: int | None,
             budget_s: float, block: int | None) -> tuple[dict[str, list[float]], CpuSample, CpuSample]:
    """One interleaved timing: per-candidate call times (ms, in time order) and CPU snapshots around it."""
    times: dict[str, list[float]] = {k: [] for k in fwds}
    start = CpuSample.take()
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
                    times[k].append((time.perf_counter() - t) * 1000)
    return times, start, CpuSample.take()


def _judge(times: dict[str, list[float]], a: CpuSample, b: CpuSample, batch: int, seq_len: int, nt: int
           ) -> tuple[dict[str, Latency], float]:
    """Latency per candidate with its reliability, and the attempt's worst severity (0: all reliable)."""
    cpus = len(allowed_cpus())
    load = MachineLoad(threads=nt, usable=usable_cores(), cpus=cpus, others=others_cores(a, b),
                       resolution=resolution_cores(cpus, b.wall - a.wall), load_before=a.load1, load_after=b.load1)
    shared = machine_problems(load)
    out, worst = {}, 0.0
    for k, ts in times.items():
        problems = shared + sample_problems(ts)
        worst = max([worst, *(sev for sev, _ in problems)])
        out[k] = Latency(batch=batch, seq_len=seq_len, threads=nt, runs=len(ts), **spread(ts),
                         reliable=not problems, warning="; ".join(r for _, r in problems), usable_cores=load.usable,
                         others_cores=None if load.others is None else round(load.others, 2),
                         load_before=a.load1, load_after=b.load1)
    return out, worst


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
    retries: int = 1,
) -> dict[str, Latency]:
    """Latency of each candidate (module or forward callable), interleaved in one process, with its spread.

    Candidates take turns in blocks of `block` consecutive calls and the first call of each block is not
    counted: switching between runtimes (torch's OpenMP pool, ONNX Runtime's spinning pool) slows the next
    call, and per-call alternation would charge that to everyone. `block` defaults to 1 for calls over
    0.2 s (the switch is noise there) and 6 otherwise; `runs` is the number of rounds (default: from
    budget_s). Threads default to the usable cores. A timing flagged unreliable is repeated up to
    `retries` times; the least bad attempt is returned, still flagged if no attempt was clean."""
    inputs = dummy_inputs(tokenizer, batch, seq_len,
                          model=next((c for c in candidates.values() if isinstance(c, torch.nn.Module)), None))
    fwds = {k: as_forward(v) for k, v in candidates.items()}
    best: dict[str, Latency] = {}
    best_sev = float("inf")
    with threads(n_threads) as nt:
        for attempt in range(1, max(0, retries) + 2):
            times, a, b = _attempt(fwds, inputs, warmup, runs, budget_s, block)
            res, sev = _judge(times, a, b, batch, seq_len, nt)
            if sev < best_sev:
                best, best_sev = res, sev
            if sev == 0:
                break
    for lat in best.values():
        lat.attempts = attempt
        if attempt > 1 and not lat.reliable:
            lat.warning += f"; best of {attempt} attempts"
    return best


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
        "usable_cores": usable_cores(),
        "avx512_vnni": "avx512_vnni" in flags,
        "avx2": "avx2" in flags,
    }


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (MemAvailable in /proc/meminfo), or None if unknown."""
    with contextlib.suppress(OSError, ValueError):
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None
