"""Task evaluation: predictions over a split, the task's metrics, and the model's size and speed."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .bench import as_forward, compare_latency, saved_size
from .data import collator, encode
from .models.io import num_params
from .progress import track
from .tasks.base import Task


def logits_of(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (list, tuple)):
        return torch.as_tensor(output[0])
    return output.logits


def predict(model: Any, tokenizer: Any, examples: list, max_len: int = 128, batch_size: int = 64,
            desc: str = "predict", task: Task | None = None) -> np.ndarray:
    """Logits for examples, batched and padded per batch; model is a module or a forward callable."""
    fwd = as_forward(model)
    ds = task.encode(tokenizer, examples, max_len, with_labels=False) if task else encode(tokenizer, examples,
                                                                                          max_len, with_labels=False)
    collate = task.collator(tokenizer) if task else collator(tokenizer)
    out = []
    for start in track(range(0, len(ds), batch_size), desc=desc, total=(len(ds) + batch_size - 1) // batch_size):
        batch = collate([ds[i] for i in range(start, min(start + batch_size, len(ds)))])
        out.append(logits_of(fwd(dict(batch))).float().numpy())
    return np.concatenate(out)


def evaluate_task(model: Any, tokenizer: Any, task: Task, split: str | None = None, max_len: int = 128,
                  max_examples: int | None = None) -> dict[str, float]:
    """The task's metrics on a split (default: the task's reporting split)."""
    return task.evaluate(model, tokenizer, task.eval_split(split or task.default_split), max_len, max_examples)


def footprint(model: torch.nn.Module, tokenizer: Any, seq_len: int = 128, batches: tuple[int, ...] = (1, 32),
              n_threads: int | None = None, budget_s: float = 6.0) -> dict[str, Any]:
    """Parameters, bytes on disk and latency at the given batch sizes (`latency_b{N}_ms` the median,
    `latency_b{N}` its spread and reliability)."""
    out: dict[str, Any] = {"params": num_params(model), "size_bytes": saved_size(model)}
    for b in batches:
        lat = compare_latency({"m": model}, tokenizer, b, seq_len, n_threads, budget_s=budget_s)["m"]
        out[f"latency_b{b}_ms"] = round(lat.median_ms, 3)
        out[f"latency_b{b}"] = lat.summary()
        out["threads"] = lat.threads
    out["seq_len"] = seq_len
    return out
