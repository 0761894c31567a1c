"""Timings that notice when they cannot be trusted, and output that never shows such a figure as clean.

No test asserts a timing value or that a quiet run is reliable (CI machines are shared): the rules are
tested on constructed numbers, and one test checks that a timing under a busy loop is flagged.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from slimformer.bench import compare_latency
from slimformer.cpuload import allowed_cpus
from slimformer.reliability import MachineLoad, machine_problems, sample_problems, speedup, speedup_text, spread
from slimformer.report import comparison_line, figure, rich_table

BUSY = "import os, sys\nos.sched_setaffinity(0, {int(c) for c in sys.argv[1:]})\nwhile True:\n    pass\n"


@pytest.mark.skipif(not (hasattr(os, "sched_setaffinity") and Path("/proc/stat").exists()), reason="needs Linux")
def test_timing_under_busy_loops_is_flagged_unreliable(tiny_bert, tokenizer):
    """Two busy loops per watched CPU compete with the timing: the result must say it is not to be trusted."""
    old = allowed_cpus()
    cpus = set(sorted(old)[:2])  # watch at most 2 CPUs, whatever the machine's size
    os.sched_setaffinity(0, cpus)
    procs = [subprocess.Popen([sys.executable, "-c", BUSY, *map(str, cpus)]) for _ in range(2 * len(cpus))]
    try:
        time.sleep(0.3)
        lat = compare_latency({"m": tiny_bert(hidden=64, ffn=128)}, tokenizer, 2, 32, len(cpus), warmup=1, runs=4,
                              retries=0)["m"]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
        os.sched_setaffinity(0, old)
    assert lat.reliable is False, lat.summary()
    assert lat.warning
    assert lat.summary()["reliable"] is False and lat.summary()["warning"] == lat.warning


def test_summary_carries_the_spread(tiny_bert, tokenizer):
    lat = compare_latency({"m": tiny_bert()}, tokenizer, 1, 8, 1, runs=5, block=6, retries=0)["m"]
    s = lat.summary()
    assert {"min_ms", "p25_ms", "median_ms", "p75_ms", "max_ms", "runs", "threads", "reliable", "warning",
            "usable_cores", "others_cores", "attempts"} <= set(s)
    assert s["min_ms"] <= s["p25_ms"] <= s["median_ms"] <= s["p75_ms"] <= s["max_ms"] and s["runs"] == 5 * 5
    assert s["threads"] == 1 and s["reliable"] == (s["warning"] == "")


def test_unreliable_timing_is_measured_again_then_kept_flagged(tokenizer, monkeypatch):
    import slimformer.bench as bench

    calls = []
    monkeypatch.setattr(bench, "machine_problems", lambda load: [(2.0, "pretend the machine is busy")])
    lat = compare_latency({"f": lambda inputs: calls.append(1)}, tokenizer, 1, 8, 1, warmup=0, runs=3, block=1,
                          retries=2)["f"]
    assert len(calls) == 3 * (1 + 3) and lat.attempts == 3 and lat.reliable is False
    assert lat.warning == "pretend the machine is busy; best of 3 attempts"


def test_machine_rules_on_constructed_loads():
    assert machine_problems(MachineLoad(threads=2, usable=2, cpus=2, others=0.1)) == []
    [(_, why)] = machine_problems(MachineLoad(threads=2, usable=2, cpus=2, others=1.8))
    assert why == "other processes used 1.8 of 2 cores during the timing"
    assert machine_problems(MachineLoad(threads=1, usable=2, cpus=2, others=0.9)) == []  # a core left free
    assert machine_problems(MachineLoad(threads=1, usable=2, cpus=2, others=1.5))
    assert machine_problems(MachineLoad(threads=2, usable=2, cpus=2, others=0.6, resolution=0.5)) == []  # short window
    assert "4 threads on 2 usable cores" in machine_problems(MachineLoad(threads=4, usable=2, cpus=2, others=0.0))[0][1]
    # without /proc/stat the load average decides (minus our own threads)
    assert machine_problems(MachineLoad(threads=2, usable=2, cpus=2, others=None, load_after=2.3)) == []
    assert "load average 3.5" in machine_problems(MachineLoad(threads=2, usable=2, cpus=2, others=None,
                                                              load_after=3.5))[0][1]


def test_sample_rules_on_constructed_samples():
    assert spread([5, 1, 3, 2, 4]) == {"min_ms": 1, "p25_ms": 2, "median_ms": 3, "p75_ms": 4, "p90_ms": 4.6,
                                       "max_ms": 5}
    assert sample_problems([10.0, 10.1, 9.9, 10.2, 10.0, 9.8, 10.1, 10.0]) == []
    assert "spread too wide" in sample_problems([10, 30, 12, 40, 11, 35, 9, 50])[0][1]
    assert any("drifted +50%" in why for _, why in sample_problems([10.0] * 10 + [15.0] * 10))
    assert sample_problems([0.001, 0.003, 0.002, 0.004, 0.001, 0.003]) == []  # timer noise, not a problem


def _s(median: float, p25: float, p75: float, reliable: bool = True, warning: str = "") -> dict:
    return {"median_ms": median, "p25_ms": p25, "p75_ms": p75, "min_ms": p25, "max_ms": p75, "runs": 9,
            "reliable": reliable, "warning": warning}


def test_speedup_text_is_clean_only_when_trustworthy():
    clean = speedup(_s(40, 39, 41), _s(10, 9.8, 10.2))
    assert speedup_text(clean) == "4.00x (3.82-4.18)"
    within_noise = speedup_text(speedup(_s(10, 9, 11), _s(9.8, 9.5, 10.5)))
    assert "?" in within_noise and "includes 1" in within_noise
    busy = speedup(_s(891.2, 500, 1200, False, "other processes used 1.8 of 2 cores during the timing"),
                   _s(17.1, 17, 17.3))
    text = speedup_text(busy)
    assert text.startswith("52.12x?") and "unreliable: before: other processes used 1.8 of 2 cores" in text
    assert "?" in speedup_text({"speedup": 3.9})  # an old summary without a spread
    shared = speedup(_s(40, 39, 41, False, "busy; wide"), _s(10, 9.8, 10.2, False, "busy"), ("input", "output"))
    assert shared["warning"] == "busy; input: wide" and shared["reliable"] is False
    comp = {"threads": 2, "seq_len": 128, "b1": {"input_ms": 891.2, "output_ms": 17.1, **busy,
                                                 "input": _s(891.2, 500, 1200, False, "busy"),
                                                 "output": _s(17.1, 17, 17.3)}}
    line = comparison_line(comp)
    assert "52.12x?" in line and "891.2?" in line and "52.12x " not in line


ROWS = [
    {"index": 0, "step": "input", "metrics": {"accuracy": 0.951234}, "params": 22_700_000, "size_bytes": 90_900_000,
     "seq_len": 128, "threads": 2, "latency_b1_ms": 17.7, "latency_b1": _s(17.7, 17.5, 17.9),
     "latency_b32_ms": 480.0, "latency_b32": _s(480.0, 470.0, 490.0)},
    {"index": 1, "step": "prune_ffn", "metrics": {"accuracy": 0.94}, "params": 15_000_000, "size_bytes": 60_000_000,
     "seq_len": 128, "threads": 2, "latency_b1_ms": 80.4, "latency_b1": _s(80.4, 20.0, 140.0, False, "busy"),
     "latency_b32_ms": 752.1, "latency_b32": _s(752.1, 300.0, 900.0, False, "other processes used 1.7 of 2 cores")},
    {"index": 2, "step": "distill", "metrics": {"accuracy": 0.945}, "params": 15_000_000, "size_bytes": 60_000_000,
     "seq_len": 128, "threads": 2, "latency_b1_ms": 9.1, "latency_b1": _s(9.1, 9.0, 9.3),
     "latency_b32_ms": 250.0, "latency_b32": _s(250.0, 245.0, 255.0)},
]


def test_plot_shows_points_not_a_path():
    import matplotlib.pyplot as plt

    fig = figure(ROWS)
    try:
        for ax in fig.axes:
            assert ax.lines, "no points drawn"
            for line in ax.lines:
                assert line.get_linestyle() in ("None", "none", "") or len(line.get_xdata()) <= 1
        lat_ax = fig.axes[1]
        hollow = [ln for ln in lat_ax.lines if ln.get_marker() == "o" and ln.get_markerfacecolor() == "none"]
        assert len(hollow) == 1  # the unreliable prune_ffn point
        assert any("not to be trusted" in t.get_text() and "prune_ffn" in t.get_text() for t in fig.texts)
    finally:
        plt.close(fig)


def test_tables_print_whole_values_when_not_a_terminal():
    from slimformer.progress import show

    buf = io.StringIO()
    con = Console(file=buf, width=60, force_terminal=False)
    show(rich_table(ROWS), con)
    out = buf.getvalue()
    assert "…" not in out
    assert "0.9512" in out and "752.1? (300.0-900.0)" in out and "17.7 (17.5-17.9)" in out
    assert "other processes used 1.7 of 2 cores" in out
