"""ONNX export with a parity check in ONNX Runtime, and an ORT runner.

Two exporters: the torch.export-based one (default), and, with `fusable=True`, the TorchScript exporter on
the model switched to eager attention for the export: its graph is the one ONNX Runtime's transformer
optimizer recognises (Attention, EmbedLayerNormalization fusions), which is what makes ORT INT8 fast.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import dummy_inputs
from .errors import SlimformerError, one_line


def to_onnx(model: torch.nn.Module, tokenizer: Any, path: str | os.PathLike, seq_len: int = 16,
            opset: int = 18, atol: float = 1e-4, check: bool = True, fusable: bool = False) -> dict[str, Any]:
    """Export model (dynamic batch and sequence length) to a single .onnx file; verify it against torch.

    `fusable` uses the TorchScript exporter with eager attention (a graph ORT's optimizer can fuse; opset
    17). Returns {"path", "max_abs_diff", "inputs", "exporter"}. Raises SlimformerError when the outputs
    differ by more than atol.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    sample = dummy_inputs(tokenizer, 2, seq_len)
    sample["attention_mask"][1, seq_len // 2:] = 0  # exercise padding
    names = list(sample)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    tmp = path.with_name(f".{path.name}.tmp")
    quiet = io.StringIO()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(quiet), torch.no_grad():
            if fusable:
                _export_torchscript(model, sample, names, tmp, min(opset, 17))
            else:
                program = torch.onnx.export(
                    model, (), kwargs=sample, input_names=names, output_names=["logits"], opset_version=opset,
                    dynamo=True, dynamic_shapes={k: {0: batch, 1: seq} for k in names}, external_data=False,
                )
                program.save(str(tmp))
    except Exception as e:  # the exporter raises many types; the user needs one line
        tmp.unlink(missing_ok=True)
        raise SlimformerError(f"ONNX export failed: {one_line(e)}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    import onnx

    graph_inputs = [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
    result: dict[str, Any] = {"path": str(path), "inputs": [n for n in names if n in graph_inputs],
                              "exporter": "torchscript" if fusable else "dynamo"}
    if check:
        diff = parity(path, model, tokenizer, seq_len)
        result["max_abs_diff"] = diff
        if diff > atol:
            raise SlimformerError(f"ONNX outputs differ from PyTorch by {diff:.2e} (> {atol:g})")
    return result


def parity(path: str | os.PathLike, model: torch.nn.Module, tokenizer: Any, seq_len: int = 16) -> float:
    """Largest |logit difference| between the ONNX graph at path and the torch model, on random inputs of
    length seq_len + 5 with one padded row. Token-level outputs (a bare encoder's states) are compared at the
    real tokens only: what a graph computes at padding positions is never used (pooling masks it out), and
    fused attention kernels compute it differently."""
    probe = dummy_inputs(tokenizer, 3, max(seq_len + 5, 8), seed=1)
    probe["attention_mask"][2, 3:] = 0
    was_training = model.training
    model.eval()  # a model in training mode would compare dropout noise
    try:
        with torch.no_grad():
            ref = _logits(model(**probe))
    finally:
        model.train(was_training)
    diff = (OnnxModel(path)(probe) - ref).abs()
    if diff.dim() == 3 and diff.shape[:2] == probe["attention_mask"].shape:
        diff = diff[probe["attention_mask"].bool()]
    return float(diff.max())


def _export_torchscript(model: torch.nn.Module, sample: dict[str, torch.Tensor], names: list[str], out: Path,
                        opset: int) -> None:
    """TorchScript exporter, attention temporarily switched to the eager implementation (restored after)."""
    import warnings

    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    switch = before not in (None, "eager") and hasattr(model, "set_attn_implementation")
    try:
        if switch:
            model.set_attn_implementation("eager")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(_Positional(model, names), tuple(sample[k] for k in names), str(out),
                              input_names=names, output_names=["logits"], opset_version=opset, dynamo=False,
                              dynamic_axes={k: {0: "batch", 1: "sequence"} for k in names})
    finally:
        if switch:
            model.set_attn_implementation(before)


class _Positional(torch.nn.Module):
    """Calls the model with its inputs by name and returns its first output. The TorchScript exporter passes
    inputs positionally, which a bare encoder's forward (`use_cache` among its first parameters) misreads."""

    def __init__(self, model: torch.nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return _logits(self.model(**dict(zip(self.names, inputs))))


def _logits(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.logits if hasattr(output, "logits") else output[0]


class OnnxModel:
    """A callable inputs-dict -> logits over an ONNX Runtime session (works with evaluate and bench)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        if not Path(path).is_file():
            raise SlimformerError(f"no ONNX file at {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise SlimformerError(f"cannot load ONNX model {path}: {str(e).splitlines()[0]}") from e
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.path = Path(path)

    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        feed = {k: np.ascontiguousarray(v.numpy() if isinstance(v, torch.Tensor) else v).astype(np.int64)
                for k, v in inputs.items() if k in self.input_names}
        return torch.from_numpy(self.session.run(None, feed)[0])
