"""Accuracy guard: evaluate before/after quantization on the dev split, warn loudly on a large drop and name
the layers most responsible (relative output error of each quantized layer on the same inputs)."""
from __future__ import annotations

import copy
import logging
import sys
from typing import Any, Callable

import torch
from torch import nn

from ..evaluate import evaluate_task
from ..tasks.base import TaskData
from .modules import QEmbedding, QLinear

log = logging.getLogger("slimformer.quantize")
QUANT_TYPES = (QLinear, QEmbedding)


def calibration_batches(tokenizer: Any, task: TaskData, n: int = 128, max_len: int = 128, batch_size: int = 16,
                        seed: int = 0, split: str = "train") -> list[dict[str, torch.Tensor]]:
    """Padded input batches (no labels) from n examples of a split, drawn with a fixed seed."""
    import random

    from ..data import collator, encode

    examples = list(task.split(split))
    if n < len(examples):
        examples = random.Random(seed).sample(examples, n)
    ds = encode(tokenizer, examples, max_len, with_labels=False)
    collate = collator(tokenizer)
    return [dict(collate([ds[i] for i in range(s, min(s + batch_size, len(ds)))]))
            for s in range(0, len(ds), batch_size)]


@torch.no_grad()
def layer_errors(reference: nn.Module, quantized: nn.Module, batches: list[dict[str, torch.Tensor]],
                 max_batches: int = 2) -> dict[str, float]:
    """Relative output error ||q(x) - f(x)|| / ||f(x)|| of every quantized module, fed the reference's inputs."""
    qmods = {n: m for n, m in quantized.named_modules() if isinstance(m, QUANT_TYPES)}
    fmods = dict(reference.named_modules())
    err: dict[str, list[float]] = {n: [] for n in qmods if n in fmods}
    hooks = []

    def hook(name: str) -> Callable:
        def fn(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
            q = qmods[name](args[0])
            err[name].append(float((q.float() - out.float()).norm() / out.float().norm().clamp(min=1e-12)))
        return fn

    for name in err:
        hooks.append(fmods[name].register_forward_hook(hook(name)))
    try:
        reference.eval()
        for b in batches[:max_batches]:
            reference(**b)
    finally:
        for h in hooks:
            h.remove()
    return {n: sum(v) / len(v) for n, v in err.items() if v}


def _torch_proxy(reference: nn.Module, quantized: nn.Module) -> nn.Module:
    """The quantized model itself, or, for a model whose layers are not visible (an ONNX Runtime graph), the
    reference with every Linear on the same INT8 grid in torch: per-layer errors then estimate ORT's."""
    if any(isinstance(m, QUANT_TYPES) for m in quantized.modules()):
        return quantized
    from .ops import quantize_embeddings, quantize_linears, select_linears

    proxy = copy.deepcopy(reference)
    quantize_linears(proxy, select_linears(proxy), bits=8, act="dynamic")
    quantize_embeddings(proxy, bits=8)
    return proxy


def check_accuracy(reference: nn.Module | Callable, quantized: nn.Module | Callable, tokenizer: Any, task: TaskData,
                   tolerance: float = 1.0, max_len: int = 128, max_examples: int | None = None,
                   batches: list[dict[str, torch.Tensor]] | None = None, top: int = 3,
                   baseline: dict[str, float] | None = None) -> dict[str, Any]:
    """Compare the task metric (in points) before and after; warn when it drops by more than `tolerance`.

    Returns {metric, before, after, drop, ok, suspects}; suspects (layer, relative error) are the quantized
    layers with the largest output error, filled when the guard fires (both models must be torch modules; an
    ONNX Runtime model's layers are estimated on the same INT8 grid in torch).
    """
    split = task.eval_split()
    metric = task.main_metric
    before = baseline or evaluate_task(reference, tokenizer, task, split, max_len, max_examples)
    after = evaluate_task(quantized, tokenizer, task, split, max_len, max_examples)
    drop = 100.0 * (before[metric] - after[metric])
    report: dict[str, Any] = {"metric": metric, "split": split, "before": round(before[metric], 4),
                              "after": round(after[metric], 4), "drop_points": round(drop, 2),
                              "tolerance_points": tolerance, "ok": drop <= tolerance, "suspects": []}
    if drop > tolerance:
        if isinstance(reference, nn.Module) and isinstance(quantized, nn.Module):
            if batches is None:
                batches = calibration_batches(tokenizer, task, 32, max_len, split=split)
            errs = layer_errors(reference, _torch_proxy(reference, quantized), batches)
            worst = sorted(errs.items(), key=lambda kv: -kv[1])[:top]
            report["suspects"] = [{"layer": n, "rel_error": round(e, 4)} for n, e in worst]
        names = ", ".join(f"{s['layer']} ({s['rel_error']:.3f})" for s in report["suspects"]) or "unknown"
        msg = (f"QUANTIZATION ACCURACY WARNING: {metric} on {split} fell {drop:.2f} points "
               f"({before[metric]:.4f} -> {after[metric]:.4f}), more than the tolerance of {tolerance:g}. "
               f"Layers with the largest quantization error: {names}. Exclude them (exclude: [...]) or use "
               f"quantize_static with percentile/entropy calibration, quantize_qat, or quantize_mixed.")
        log.warning(msg)
        print(f"\n{'!' * 100}\n{msg}\n{'!' * 100}\n", file=sys.stderr, flush=True)
    return report
