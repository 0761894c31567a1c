"""How busy the machine is: the cores this process may use, and the CPU other processes take meanwhile.

`usable_cores()` is the default thread count (CPU affinity, capped by a cgroup CPU quota). `CpuSample`
snapshots per-CPU busy time (/proc/stat, restricted to our CPUs), this process's own CPU time and the load
average; `others_cores(a, b)` is the average number of our cores that OTHER processes kept busy between
two snapshots: busy time of our CPUs minus our own CPU time, over the wall time. It reacts within a
second, unlike the load average (a one-minute mean that also counts us).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

TICK_S = 1.0 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


def allowed_cpus() -> set[int]:
    """The CPUs this process may run on."""
    with contextlib.suppress(AttributeError, OSError):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def _cgroup_quota() -> float | None:
    """CPU quota in cores (cgroup v2 cpu.max or v1 cfs_quota_us), None when unlimited or unknown."""
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    with contextlib.suppress(OSError, ValueError):
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    return None


def usable_cores() -> int:
    """Cores this process may really use: its CPU affinity, capped by a cgroup CPU quota (at least 1)."""
    n = len(allowed_cpus())
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, math.ceil(quota))
    return max(1, n)


def _busy_seconds(cpus: set[int]) -> float | None:
    """Summed non-idle time (user, nice, system, irq, softirq, steal) of `cpus` from /proc/stat."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    ticks = 0
    seen = False
    for line in lines:
        name, *vals = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        v = [int(x) for x in vals[:8]] + [0] * (8 - len(vals[:8]))
        ticks += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
        seen = True
    return ticks * TICK_S if seen else None


def loadavg() -> float | None:
    with contextlib.suppress(AttributeError, OSError):
        return os.getloadavg()[0]
    return None


@dataclass(frozen=True)
class CpuSample:
    """One snapshot: wall clock, busy seconds of our CPUs (None off Linux), our CPU seconds, load average."""

    wall: float
    busy: float | None
    own: float
    load1: float | None
    cpus: int

    @classmethod
    def take(cls) -> CpuSample:
        cpus = allowed_cpus()
        return cls(time.perf_counter(), _busy_seconds(cpus), time.process_time(), loadavg(), len(cpus))


def others_cores(a: CpuSample, b: CpuSample) -> float | None:
    """Average cores of our CPUs used by other processes between snapshots a and b (None if unknown)."""
    wall = b.wall - a.wall
    if a.busy is None or b.busy is None or wall <= 0:
        return None
    return max(0.0, ((b.busy - a.busy) - (b.own - a.own)) / wall)


def resolution_cores(cpus: int, wall_s: float) -> float:
    """How far others_cores can be off from tick accounting alone over a window of wall_s seconds."""
    return 2 * cpus * TICK_S / max(wall_s, 1e-3)
