"""When a timing can be trusted, and how to print it so that an untrustworthy figure never looks clean.

A timing is flagged unreliable (with the reason in `warning`) when any of these holds:
- other processes kept more than `OTHERS_TOL` cores (plus the tick-accounting error of the window) busy
  beyond the cores our threads leave free, or we run more threads than usable cores;
- without /proc/stat: the load average minus our threads exceeds the free cores by `LOAD_TOL`;
- a candidate's spread is wide: IQR over median above `MAX_IQR`;
- a candidate drifted: the median of the second half of its runs differs from the first half's by more
  than `MAX_DRIFT`
(spreads and drifts under `NOISE_MS` are ignored: timer noise on sub-millisecond calls).
Pure functions of the numbers, so the rules are testable without a busy machine.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

OTHERS_TOL = 0.3  # cores
LOAD_TOL = 0.5  # load-average units, fallback only
MAX_IQR = 0.25  # IQR / median
NOISE_MS = 0.02  # spreads and drifts below this are timer noise, whatever the ratio
MAX_DRIFT = 0.20  # |median(second half) / median(first half) - 1|
RUN_DRIFT = 0.25  # same model timed at the start and at the end of a run (recipe runner)


def quantile(sorted_xs: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of an already sorted, non-empty sequence."""
    pos = q * (len(sorted_xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def spread(samples_ms: Sequence[float]) -> dict[str, float]:
    """min, p25, median, p75, p90, max (ms) of the samples."""
    xs = sorted(samples_ms)
    return {"min_ms": xs[0], "p25_ms": quantile(xs, 0.25), "median_ms": quantile(xs, 0.5),
            "p75_ms": quantile(xs, 0.75), "p90_ms": quantile(xs, 0.9), "max_ms": xs[-1]}


def drift(samples_ms: Sequence[float]) -> float:
    """Relative change of the median from the first half of the samples (time order) to the second."""
    if len(samples_ms) < 4:
        return 0.0
    half = len(samples_ms) // 2
    a, b = sorted(samples_ms[:half]), sorted(samples_ms[-half:])
    return quantile(b, 0.5) / quantile(a, 0.5) - 1.0


@dataclass(frozen=True)
class MachineLoad:
    """What the machine looked like during a timing."""

    threads: int
    usable: int  # cores this process may use
    cpus: int  # CPUs watched for other processes' work
    others: float | None  # average cores used by other processes (None: unknown)
    resolution: float = 0.0  # how far `others` may be off (tick accounting over a short window)
    load_before: float | None = None
    load_after: float | None = None


def machine_problems(m: MachineLoad) -> list[tuple[float, str]]:
    """(severity > 1, reason) for each machine condition that makes a timing untrustworthy."""
    out = []
    if m.threads > m.usable:
        out.append((1.0 + m.threads / m.usable, f"{m.threads} threads on {m.usable} usable cores"))
    spare = max(0, m.cpus - m.threads)
    if m.others is not None:
        tol = OTHERS_TOL + m.resolution
        if m.others > spare + tol:
            out.append((1.0 + (m.others - spare) / max(tol, 1e-9),
                        f"other processes used {m.others:.1f} of {m.cpus} cores during the timing"))
    elif m.load_after is not None and m.load_after - m.threads > spare + LOAD_TOL:
        out.append((1.0 + (m.load_after - m.threads - spare) / LOAD_TOL,
                    f"load average {m.load_after:.1f} on {m.usable} cores"))
    return out


def sample_problems(samples_ms: Sequence[float]) -> list[tuple[float, str]]:
    """(severity > 1, reason) for a wide spread or a drift of one candidate's samples (time order)."""
    out = []
    s = spread(samples_ms)
    iqr = s["p75_ms"] - s["p25_ms"]
    if iqr > NOISE_MS and iqr > MAX_IQR * s["median_ms"]:
        out.append((1.0 + iqr / s["median_ms"] / MAX_IQR, f"spread too wide (IQR {100 * iqr / s['median_ms']:.0f}% "
                                                          "of the median)"))
    d = drift(samples_ms)
    if abs(d) > MAX_DRIFT and abs(d) * s["median_ms"] > NOISE_MS:
        out.append((1.0 + abs(d) / MAX_DRIFT, f"drifted {100 * d:+.0f}% from the first to the second half"))
    return out


def speedup(before: Mapping[str, Any], after: Mapping[str, Any], names: tuple[str, str] = ("before", "after")
            ) -> dict[str, Any]:
    """before/after latency summaries -> ratio of medians, an IQR band (p25/p75 against p75/p25), reliability.
    The warning lists reasons shared by both timings once, and names the timing of any other reason."""
    ratio = before["median_ms"] / after["median_ms"]
    lo = before.get("p25_ms", before["median_ms"]) / after.get("p75_ms", after["median_ms"])
    hi = before.get("p75_ms", before["median_ms"]) / after.get("p25_ms", after["median_ms"])
    parts = [[p for p in (s.get("warning") or "").split("; ") if p] for s in (before, after)]
    reasons = [p for p in parts[0] if p in parts[1]]
    reasons += [f"{names[i]}: {p}" for i in (0, 1) for p in parts[i] if p not in parts[1 - i]]
    return {"speedup": round(ratio, 3), "speedup_lo": round(lo, 3), "speedup_hi": round(hi, 3),
            "reliable": bool(before.get("reliable", True) and after.get("reliable", True)),
            "warning": "; ".join(dict.fromkeys(reasons))}


def speedup_text(d: Mapping[str, Any]) -> str:
    """`3.89x (3.70-4.05)`; with a `?` and the reason when unreliable or when the band includes 1."""
    r = d["speedup"]
    lo, hi = d.get("speedup_lo"), d.get("speedup_hi")
    band = f" ({lo:.2f}-{hi:.2f})" if lo is not None and hi is not None else ""
    if not d.get("reliable", True):
        return f"{r:.2f}x?{band} unreliable: {d.get('warning') or 'see the spread'}"
    if lo is None or hi is None:
        return f"{r:.2f}x? (no spread recorded)"
    if lo <= 1.0 <= hi:
        return f"{r:.2f}x?{band} no clear difference: the band includes 1"
    return f"{r:.2f}x{band}"


def latency_cell(median_ms: float | None, summary: Mapping[str, Any] | None, digits: int = 1) -> str:
    """`17.1 (16.9-17.4)`, `17.1? (...)` when unreliable, the bare median for rows without a spread."""
    if median_ms is None:
        return "-"
    if not summary:
        return f"{median_ms:.{digits}f}"
    mark = "" if summary.get("reliable", True) else "?"
    return f"{median_ms:.{digits}f}{mark} ({summary['p25_ms']:.{digits}f}-{summary['p75_ms']:.{digits}f})"


def latency_text(summary: Mapping[str, Any]) -> str:
    """One latency summary as a sentence fragment: median, IQR, range, runs, threads, and any warning."""
    s = summary
    text = (f"{s['median_ms']:.2f} ms median (IQR {s['p25_ms']:.2f}-{s['p75_ms']:.2f}, range {s['min_ms']:.2f}-"
            f"{s['max_ms']:.2f}, {s['runs']} runs, {s.get('threads', '?')} threads)")
    return text if s.get("reliable", True) else f"{text}? unreliable: {s.get('warning')}"
