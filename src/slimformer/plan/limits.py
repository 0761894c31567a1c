"""The physical limit: this machine's measured GEMM peak (fp32 in torch, INT8 in ONNX Runtime) and the
FLOPs a model spends per forward, so a report can say how much of the peak a model reaches.

The peak is the best of a few timed products of a BERT-sized matrix pair (tokens x hidden times hidden x
4 hidden); a model's achieved rate is its FLOPs (counted on a float twin: the same architecture without
the INT8 ops, random weights) over its measured latency. INT8 ops count as operations, not FLOPs.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

QUANT_OPS = {"onnxruntime_graph", "quantize_linear", "quantize_embedding"}


def _best_rate(fn: Any, ops: float, seconds: float = 1.0) -> float:
    fn()
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return ops / best / 1e9


def gemm_peak(m: int = 4096, k: int = 384, n: int = 1536, threads: int | None = None) -> dict[str, Any]:
    """GFLOP/s of an fp32 torch matmul and GOP/s of an ONNX Runtime MatMulInteger (uint8 x int8), m x k x n."""
    from ..bench import threads as use_threads

    with use_threads(threads) as nt:
        a, b = torch.randn(m, k), torch.randn(k, n)
        fp32 = _best_rate(lambda: torch.mm(a, b), 2.0 * m * k * n)
        int8 = _int8_rate(m, k, n, nt)
    return {"shape": [m, k, n], "threads": nt, "fp32_gflops": round(fp32, 1),
            "int8_gops": round(int8, 1) if int8 else None}


def _int8_rate(m: int, k: int, n: int, threads: int) -> float | None:
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:  # pragma: no cover - onnxruntime is a dependency
        return None
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.integers(-127, 127, (k, n), dtype=np.int8), "B")
    node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("A", TensorProto.UINT8, [m, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.INT32, [m, n])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    a = rng.integers(0, 255, (m, k), dtype=np.uint8)
    return _best_rate(lambda: sess.run(None, {"A": a}), 2.0 * m * k * n)


def float_twin(path: str | Path, task: Any = None) -> torch.nn.Module:
    """The architecture of a saved slimformer model without its INT8 ops, with random weights (for counting)."""
    from ..models.io import build_with_ops, model_class, read_config
    from ..models.surgery import recorded_ops

    config = read_config(str(path))
    cls, _ = model_class(config, task)
    ops = [op for op in recorded_ops(config) if op.get("op") not in QUANT_OPS]
    model = build_with_ops(str(path), config, cls, ops, task.model_kwargs() if task is not None else {})
    return model.eval()


def forward_flops(model: torch.nn.Module, tokenizer: Any, batch: int, seq_len: int) -> int:
    """FLOPs of one forward at batch x seq_len (torch's FLOP counter: matmuls and attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..data import dummy_inputs

    inputs = dummy_inputs(tokenizer, batch, seq_len, model=model)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(**inputs)
    return int(counter.get_total_flops())
