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
from ..tasks.base import Task
from ..tasks.metrics import change
from .modules import QEmbedding, QLinear

log = logging.getLogger("slimformer.quantize")
QUANT_TYPES = (QLinear, QEmbedding)


def calibration_batches(tokenizer: Any, task: Task, n: int = 128, max_len: int = 128, batch_size: int = 16,
                        seed: int = 0, split: str = "train", model: nn.Module | None = None
                        ) -> list[dict[str, torch.Tensor]]:
    """Model-input batches (no labels) from n examples of a split, drawn with a fixed seed. Encoder-decoders
    get the decoder inputs of the reference targets; language models get blocks of max_len tokens."""
    import random

    examples = list(task.split(split))
    if n < len(examples):
        examples = random.Random(seed).sample(examples, n)
    seq2seq = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    ds = task.encode(tokenizer, examples, max_len, with_labels=seq2seq or task.kind == "language_modeling")
    collate = task.collator(tokenizer, model)
    out = []
    for s in range(0, len(ds), batch_size):
        b = dict(collate([ds[i] for i in range(s, min(s + batch_size, len(ds)))]))
        b.pop("labels", None)
        out.append(b)
    return out


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


def compare_metrics(task: Task, before: dict[str, float], after: dict[str, float],
                    tolerance: float) -> list[dict[str, Any]]:
    """One row per metric of the task: before, after, change (positive = better; points, or % for perplexity)
    and whether the loss exceeds the tolerance."""
    rows = []
    for m in task.metrics:
        if m not in before or m not in after:
            continue
        gain, text = change(m, before[m], after[m])
        rows.append({"metric": m, "before": round(before[m], 4), "after": round(after[m], 4), "change": text,
                     "loss": round(max(0.0, -gain), 3), "over": -gain > tolerance})
    return rows


def recall_drops(before: dict[str, float], after: dict[str, float], limit: float) -> list[dict[str, Any]]:
    """Classes whose recall fell by more than `limit` points."""
    out = []
    for cls, r0 in before.items():
        d = 100.0 * (r0 - after.get(cls, 0.0))
        if d > limit:
            out.append({"class": cls, "recall_before": round(r0, 4), "recall_after": round(after.get(cls, 0.0), 4),
                        "drop_points": round(d, 2)})
    return sorted(out, key=lambda r: -r["drop_points"])


def check_accuracy(reference: nn.Module | Callable, quantized: nn.Module | Callable, tokenizer: Any, task: Task,
                   tolerance: float = 1.0, max_len: int = 128, max_examples: int | None = None,
                   batches: list[dict[str, torch.Tensor]] | None = None, top: int = 3,
                   baseline: dict[str, float] | None = None) -> dict[str, Any]:
    """Compare EVERY metric of the task before and after; warn when any gets worse by more than `tolerance`
    (points; percent of the value for perplexity). Classification also compares per-class recall and names
    classes that lost more than 5 x tolerance points (a collapse the averages hide).

    Returns {metric, before, after, drop_points, ok, metrics: [...], classes: [...], suspects}; suspects are
    the quantized layers with the largest output error, filled when the guard fires (both models must be torch
    modules; an ONNX Runtime model's layers are estimated on the same INT8 grid in torch).
    """
    split = task.eval_split(task.default_split)
    metric = task.main_metric
    before = baseline or evaluate_task(reference, tokenizer, task, split, max_len, max_examples)
    after = evaluate_task(quantized, tokenizer, task, split, max_len, max_examples)
    rows = compare_metrics(task, before, after, tolerance)
    classes: list[dict[str, Any]] = []
    if task.kind == "classification":
        d0 = task.details(reference, tokenizer, split, max_len, max_examples).get("per_class_recall", {})
        d1 = task.details(quantized, tokenizer, split, max_len, max_examples).get("per_class_recall", {})
        classes = recall_drops(d0, d1, 5.0 * max(tolerance, 1.0))
    main = next(r for r in rows if r["metric"] == metric)
    fired = any(r["over"] for r in rows) or bool(classes)
    report: dict[str, Any] = {"metric": metric, "split": split, "before": main["before"], "after": main["after"],
                              "drop_points": main["loss"], "tolerance_points": tolerance, "ok": not fired,
                              "metrics": rows, "classes": classes, "suspects": []}
    if fired:
        if isinstance(reference, nn.Module) and isinstance(quantized, nn.Module):
            if batches is None:
                batches = calibration_batches(tokenizer, task, 32, max_len, split=split, model=reference)
            errs = layer_errors(reference, _torch_proxy(reference, quantized), batches)
            worst = sorted(errs.items(), key=lambda kv: -kv[1])[:top]
            report["suspects"] = [{"layer": n, "rel_error": round(e, 4)} for n, e in worst]
        names = ", ".join(f"{s['layer']} ({s['rel_error']:.3f})" for s in report["suspects"]) or "unknown"
        bad = "; ".join(f"{r['metric']} {r['before']:.4f} -> {r['after']:.4f} ({r['change']})"
                        for r in rows if r["over"])
        cls = "; ".join(f"class {c['class']} recall -{c['drop_points']:.1f} pt" for c in classes)
        msg = (f"QUANTIZATION ACCURACY WARNING on {split}: {'; '.join(x for x in (bad, cls) if x)} "
               f"(tolerance {tolerance:g}). Layers with the largest quantization error: {names}. Exclude them "
               f"(exclude: [...]) or use quantize_static with percentile/entropy calibration, quantize_qat, or "
               f"quantize_mixed.")
        log.warning(msg)
        print(f"\n{'!' * 100}\n{msg}\n{'!' * 100}\n", file=sys.stderr, flush=True)
    return report
