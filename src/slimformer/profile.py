"""Where parameters, FLOPs, time and memory go: embeddings, each layer's attention and FFN, LayerNorm, head.

Latency per component is measured, not derived from FLOPs: forward pre/post hooks on the component modules
time every call (CPU execution is synchronous), nested LayerNorms are subtracted from their parent block,
and "other" is the whole forward minus the components (masks, residual glue). The whole forward is timed
by bench.compare_latency (hooks on), so the total carries its spread and reliability like every latency.
FLOPs are counted by torch.utils.flop_counter (matmuls and attention kernels).
"""
from __future__ import annotations

import statistics
import time
from collections import defaultdict
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .bench import Latency, compare_latency, saved_size, threads
from .data import dummy_inputs
from .models import get_adapter
from .models.io import num_params


def _is_norm(m: nn.Module) -> bool:
    return "LayerNorm" in type(m).__name__ or "RMSNorm" in type(m).__name__ or isinstance(m, nn.LayerNorm)


def _layer_label(ad: Any, model: nn.Module, unit: str, part: str) -> str:
    """'layer 3 attention' for a one-stack model, 'decoder 3 cross-attention' for an encoder-decoder."""
    stack, i = unit.split(".")[:2]
    return f"{stack if ad.is_multi_stack(model) else 'layer'} {i} {part}"


def timed_modules(model: nn.Module) -> list[tuple[str, str, nn.Module]]:
    """(row label, component, module) for every module the profile times."""
    from .models import submodule

    ad = get_adapter(model)
    out: list[tuple[str, str, nn.Module]] = [("embeddings", "embeddings", m) for m in ad.embedding_modules(model)]
    layers = {(st.name, i): layer for st in ad.stacks(model) for i, layer in enumerate(st.layers)}
    for a in ad.attention(model):
        stack, i = a.unit.split(".")[:2]
        assert a.spec is not None
        block = submodule(layers[(stack, int(i))], a.spec.block or a.spec.path)
        part = "attention" if a.kind == "self" else "cross-attention"
        out.append((_layer_label(ad, model, a.unit, part), part, block))
    for f in ad.ffn(model):
        for mod in f.blocks:
            out.append((_layer_label(ad, model, f.unit + ".x", "ffn"), "ffn", mod))
    seen: set[int] = set()
    out = [t for t in out if not (id(t[2]) in seen or seen.add(id(t[2])))]  # type: ignore[func-returns-value]
    names = {id(m) for _, _, m in out}
    for name, mod in model.named_modules():
        if _is_norm(mod) and id(mod) not in names:
            out.append(("layernorm", "layernorm", mod))
    for name in ad.head_modules(model):
        out.append(("head", "head", model.get_submodule(name)))
    return out


def _param_rows(model: nn.Module) -> dict[str, int]:
    ad = get_adapter(model)
    comps = ad.component_map(model)
    rows: dict[str, int] = defaultdict(int)
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        comp = comps.get(name.rsplit(".", 1)[0], "other").replace("norm", "layernorm")
        where = ad.locate(model, name)
        if comp in ("attention", "cross-attention", "ffn") and where is not None:
            label = f"{where[0] if ad.is_multi_stack(model) else 'layer'} {where[1]} {comp}"
        else:
            label = comp
        rows[label] += p.numel()
    return rows


def _flop_rows(model: nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[dict[str, int], int]:
    labels = {id(m): lab for lab, _, m in timed_modules(model)}
    names = {name: labels[id(m)] for name, m in model.named_modules() if id(m) in labels}
    counter = FlopCounterMode(display=False, depth=None)
    with counter, torch.no_grad():
        model(**inputs)
    per_module = counter.get_flop_counts()
    rows: dict[str, int] = defaultdict(int)
    for name, label in names.items():
        fq = f"{type(model).__name__}.{name}" if name else type(model).__name__
        if fq in per_module:
            rows[label] += int(sum(per_module[fq].values()))
    return rows, int(counter.get_total_flops())


def _time_rows(model: nn.Module, tokenizer: Any, batch: int, seq_len: int, n_threads: int, runs: int
               ) -> tuple[dict[str, float], Latency]:
    """Median self time (ms) per label, and the whole-forward timing (bench.compare_latency, hooks on)."""
    mods = timed_modules(model)
    stack: list[list[float]] = []  # [start, child_time]
    acc: dict[str, float] = defaultdict(float)
    handles = []

    def pre(_m: nn.Module, _a: Any) -> None:
        stack.append([time.perf_counter(), 0.0])

    def post_for(label: str) -> Any:
        def post(_m: nn.Module, _a: Any, _o: Any) -> None:
            start, child = stack.pop()
            total = time.perf_counter() - start
            acc[label] += total - child
            if stack:
                stack[-1][1] += total

        return post

    per_call: list[dict[str, float]] = []

    own = dummy_inputs(tokenizer, batch, seq_len, model=model)  # the model's inputs (decoder ids for seq2seq)

    def fwd(_: dict[str, torch.Tensor]) -> None:
        acc.clear()
        with torch.inference_mode():
            model(**own)
        per_call.append({k: v * 1000 for k, v in acc.items()})

    for label, _, mod in mods:
        handles.append(mod.register_forward_pre_hook(pre))
        handles.append(mod.register_forward_hook(post_for(label)))
    best: tuple[list[dict[str, float]], Latency] | None = None
    try:
        for _ in range(2):  # re-measured once if flagged, like compare_latency's retries, keeping calls together
            per_call.clear()
            lat = compare_latency({"model": fwd}, tokenizer, batch, seq_len, n_threads, warmup=1, runs=runs,
                                  block=1, retries=0)["model"]
            if best is None or (lat.reliable and not best[1].reliable):
                best = (per_call[2:], lat)  # the timed calls (not the warm-up and sizing calls)
            if lat.reliable:
                break
    finally:
        for h in handles:
            h.remove()
    timed, lat = best
    labels = {k for r in timed for k in r}
    return {k: statistics.median(r.get(k, 0.0) for r in timed) for k in labels}, lat


def _peak_memory(model: nn.Module, inputs: dict[str, torch.Tensor]) -> int:
    """Peak bytes allocated by the forward pass (activations), from the profiler's allocation trace."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof, torch.inference_mode():
        model(**inputs)
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage != 0), key=lambda e: e.time_range.start)
    cur = peak = 0
    for e in events:  # allocations are attributed to ops, frees to "[memory]" events
        cur += e.self_cpu_memory_usage
        peak = max(peak, cur)
    return peak


def profile_model(model: nn.Module, tokenizer: Any, seq_len: int = 128, batch: int = 1,
                  n_threads: int | None = None, runs: int = 10) -> dict[str, Any]:
    """The profile as a dict: rows per component plus totals (params, FLOPs, ms, memory, bytes on disk)."""
    model.eval()
    inputs = dummy_inputs(tokenizer, batch, seq_len, model=model)
    with threads(n_threads) as nt:
        params = _param_rows(model)
        flops, total_flops = _flop_rows(model, inputs)
        times, lat = _time_rows(model, tokenizer, batch, seq_len, nt, runs)
        peak = _peak_memory(model, inputs)
    total_params, total_ms = num_params(model), lat.median_ms
    order = ["embeddings"] + [k for k in params if k.split()[0] in ("layer", "encoder", "decoder")] + \
        ["layernorm", "head", "other"]
    labels = list(dict.fromkeys(order + [k for k in list(params) + list(times) if k not in order]))
    rows = []
    for lab in labels:
        ms = times.get(lab, 0.0) if lab != "other" else max(total_ms - sum(times.values()), 0.0)
        p, f = params.get(lab, 0), flops.get(lab, 0)
        if not (p or f or ms):
            continue
        rows.append({"component": lab, "params": p, "params_share": p / total_params, "flops": f,
                     "flops_share": f / total_flops if total_flops else 0.0, "ms": ms,
                     "time_share": ms / total_ms if total_ms else 0.0})
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"batch": batch, "seq_len": seq_len, "threads": nt, "runs": lat.runs, "rows": rows,
            "total": {"params": total_params, "flops": total_flops, "ms": total_ms, "latency": lat.summary(),
                      "weights_bytes": weight_bytes, "peak_activation_bytes": peak,
                      "peak_memory_bytes": weight_bytes + peak, "size_on_disk_bytes": saved_size(model)},
            "by_kind": _by_kind(rows)}


def _by_kind(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Shares summed over layers: embeddings / attention / ffn / layernorm / head / other."""
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        kind = r["component"].split()[-1]
        d = out.setdefault(kind, {"params_share": 0.0, "flops_share": 0.0, "time_share": 0.0})
        for k in d:
            d[k] += r[k]
    return out
