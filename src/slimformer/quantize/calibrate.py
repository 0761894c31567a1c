"""Activation range calibration for static INT8: min-max, percentile (clips outliers), entropy (KL, TensorRT).

An `Observer` keeps the running min/max and a bounded random sample of the values it sees; `range(method)`
turns them into a clipping range (lo, hi), and `qparams` into an asymmetric uint8 (scale, zero_point).
"""
from __future__ import annotations

from typing import Callable, Literal

import numpy as np
import torch
from torch import nn

Method = Literal["minmax", "percentile", "entropy"]


class Observer:
    """Running min/max and a uniform sample (at most `keep` values) of a tensor stream."""

    def __init__(self, keep: int = 200_000, seed: int = 0):
        self.lo, self.hi = float("inf"), float("-inf")
        self.keep = keep
        self.samples: list[torch.Tensor] = []
        self.gen = torch.Generator().manual_seed(seed)

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().float().reshape(-1)
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        per = max(1, self.keep // 16)
        if x.numel() > per:
            x = x[torch.randint(0, x.numel(), (per,), generator=self.gen)]
        self.samples.append(x.clone())

    def values(self) -> torch.Tensor:
        v = torch.cat(self.samples)
        return v if v.numel() <= self.keep else v[torch.randperm(v.numel(), generator=self.gen)[: self.keep]]

    def range(self, method: Method = "minmax", percentile: float = 99.99) -> tuple[float, float]:
        if method == "minmax":
            return self.lo, self.hi
        v = self.values()
        if method == "percentile":
            q = torch.tensor([1 - percentile / 100, percentile / 100])
            lo, hi = torch.quantile(v, q).tolist()
            return min(lo, 0.0), max(hi, 0.0)
        if method == "entropy":
            t = entropy_threshold(v.abs().numpy())
            return max(self.lo, -t), min(self.hi, t)
        raise ValueError(f"unknown calibration method {method}")


def entropy_threshold(absvals: np.ndarray, bins: int = 2048, levels: int = 128) -> float:
    """The clipping threshold T minimising KL(P || Q) between the |x| histogram clipped at T and its
    `levels`-level quantization (the TensorRT calibration procedure)."""
    hist, edges = np.histogram(absvals, bins=bins, range=(0, float(absvals.max()) or 1.0))
    hist = hist.astype(np.float64)
    best, best_kl = bins, float("inf")
    for i in range(levels, bins + 1, 16):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()  # the clipped tail goes to the last bin
        nz = p > 0
        chunks = np.array_split(np.arange(i), levels)
        q = np.zeros(i)
        for c in chunks:
            mass, used = hist[c].sum(), (hist[c] > 0).sum()
            if used:
                q[c] = np.where(hist[c] > 0, mass / used, 0)
        q_sum, p_sum = q.sum(), p.sum()
        if q_sum == 0:
            continue
        pn, qn = p / p_sum, q / q_sum
        ok = nz & (qn > 0)
        if (nz & ~ok).any():  # Q has no mass where P does: smooth instead of infinite KL
            qn = np.where(nz & ~ok, 1e-9, qn)
        kl = float(np.sum(pn[nz] * np.log(pn[nz] / qn[nz])))
        if kl < best_kl:
            best, best_kl = i, kl
    return float(edges[best])


def qparams(lo: float, hi: float, levels: int = 255) -> tuple[float, int]:
    """Asymmetric uint8 (scale, zero_point) covering [lo, hi] (which always includes 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / levels, 1e-8)
    return scale, int(min(levels, max(0, round(-lo / scale))))


@torch.no_grad()
def observe(model: nn.Module, names: list[str], batches: list[dict[str, torch.Tensor]], outputs: bool = True,
            keep: int = 200_000) -> dict[str, tuple[Observer, Observer]]:
    """Run the batches and observe the input (and output) of each named module."""
    mods = dict(model.named_modules())
    obs = {n: (Observer(keep), Observer(keep)) for n in names}

    def hook(name: str) -> Callable:
        def fn(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
            obs[name][0].update(args[0])
            if outputs:
                obs[name][1].update(out)
        return fn

    handles = [mods[n].register_forward_hook(hook(n)) for n in names]
    try:
        model.eval()
        for b in batches:
            model(**b)
    finally:
        for h in handles:
            h.remove()
    return obs
