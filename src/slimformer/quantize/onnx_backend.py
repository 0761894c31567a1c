"""ONNX Runtime backend: export, then ORT dynamic or static (calibrated QDQ) INT8 quantization.

The result is an `nn.Module` again (a replayable op swaps the model's body for an ORT graph whose bytes are
a uint8 buffer), so it flows through recipes, `models.save`/`models.load`, `evaluate_task` and
`compare_latency` like any other model, and its saved size is the size of the INT8 ONNX graph.
`save_onnx_dir` writes a plain deployment directory (model.onnx + tokenizer + quantization.json) that
`load_onnx_dir` (or any ONNX Runtime user) opens without slimformer's model code.
"""
from __future__ import annotations

import json
import logging
import tempfile
import types
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import SlimformerError
from ..models import apply_op, register_op
from .common import record_meta

ORT_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


class OrtGraph(nn.Module):
    """Holds a serialized ONNX graph as a uint8 buffer and runs it in ONNX Runtime (session per thread count)."""

    def __init__(self, nbytes: int, input_names: Sequence[str]):
        super().__init__()
        self.register_buffer("onnx_bytes", torch.zeros(nbytes, dtype=torch.uint8))
        self.input_names = list(input_names)
        self.bare = False  # set by the op: the graph outputs token states (a sentence encoder), not logits
        self._sessions: dict[int, Any] = {}
        self._key: tuple | None = None

    def session(self) -> Any:
        import onnxruntime as ort

        key = (id(self.onnx_bytes), self.onnx_bytes._version)
        if key != self._key:
            self._sessions, self._key = {}, key
        n = torch.get_num_threads()
        if n not in self._sessions:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = n
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._sessions[n] = ort.InferenceSession(self.onnx_bytes.numpy().tobytes(), opts,
                                                     providers=["CPUExecutionProvider"])
        return self._sessions[n]

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        feed = {k: np.ascontiguousarray(v.numpy()).astype(np.int64) for k, v in inputs.items()
                if k in self.input_names and v is not None}
        return torch.from_numpy(self.session().run(None, feed)[0])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_sessions"], state["_key"] = {}, None
        return state


def _ort_forward(self: nn.Module, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None, **_: Any) -> Any:
    from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput

    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
    if attention_mask is None and input_ids is not None:
        inputs["attention_mask"] = torch.ones_like(input_ids)
    if token_type_ids is None and input_ids is not None:
        inputs["token_type_ids"] = torch.zeros_like(input_ids)
    out = self.ort(**inputs)
    # a bare encoder (a sentence encoder) keeps its token states as last_hidden_state, for mean pooling
    return BaseModelOutput(last_hidden_state=out) if self.ort.bare else SequenceClassifierOutput(logits=out)


@register_op("onnxruntime_graph")
def _onnxruntime_graph(model: nn.Module, nbytes: int, input_names: list[str]) -> None:
    from ..models.io import num_params

    params = num_params(model)  # the weights now live in the graph: keep their count for reports
    bare = getattr(model, "base_model", model) is model  # no task head: the graph outputs token states
    for name in [n for n, _ in model.named_children()]:
        delattr(model, name)
    model.ort = OrtGraph(nbytes, input_names)
    model.ort.bare = bare
    model.forward = types.MethodType(_ort_forward, model)
    model.slimformer_num_params = params


def wrap_onnx(model: nn.Module, onnx_path: str | Path, input_names: Sequence[str], info: dict[str, Any]) -> nn.Module:
    """Turn model (in place) into a module running the ONNX file; records the op so it reloads."""
    data = Path(onnx_path).read_bytes()
    apply_op(model, "onnxruntime_graph", nbytes=len(data), input_names=list(input_names))
    model.ort.onnx_bytes.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    record_meta(model, "onnxruntime", info)
    return model


def matmul_modules(onnx_model: Any, torch_model: nn.Module) -> dict[str, str]:
    """Map ONNX MatMul/Gemm node names to the torch Linear they compute (matched by weight values)."""
    from onnx import numpy_helper

    by_shape: dict[tuple, list[tuple[str, np.ndarray]]] = {}
    for name, mod in torch_model.named_modules():
        if isinstance(mod, nn.Linear):
            w = mod.weight.detach().float().numpy()
            by_shape.setdefault(w.shape, []).append((name, w))
            by_shape.setdefault(w.T.shape, []).append((name, w.T))
    inits = {i.name: i for i in onnx_model.graph.initializer}
    out = {}
    for node in onnx_model.graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        for inp in node.input[1:2]:
            if inp not in inits:
                continue
            arr = numpy_helper.to_array(inits[inp])
            for name, w in by_shape.get(arr.shape, []):
                if np.array_equal(arr, w):
                    out[node.name] = name
                    break
    return out


def excluded_nodes(onnx_model: Any, torch_model: nn.Module, quantize: Iterable[str]) -> list[str]:
    """MatMul/Gemm nodes NOT computing one of the Linear modules to quantize (including attention score
    MatMuls), and fused Attention nodes whose query, key and value projections are not all to be quantized."""
    from .ort_fusion import attention_modules

    wanted = set(quantize)
    mapping = matmul_modules(onnx_model, torch_model)
    fused = attention_modules(onnx_model, torch_model)
    return [n.name for n in onnx_model.graph.node
            if (n.op_type in ("MatMul", "Gemm") and mapping.get(n.name) not in wanted)
            or (n.op_type == "Attention" and not (fused.get(n.name) and set(fused[n.name]) <= wanted))]


class _Reader:
    """CalibrationDataReader over calibration batches, all padded (with 0, attention mask 0) to one length:
    ORT's histogram calibrators stack the activations of all batches."""

    def __init__(self, batches: list[dict[str, torch.Tensor]], input_names: Sequence[str]):
        length = max(v.shape[1] for b in batches for k, v in b.items() if k in input_names)

        def pad(v: torch.Tensor) -> np.ndarray:
            return np.pad(v.numpy().astype(np.int64), ((0, 0), (0, length - v.shape[1])))

        self.feeds = [{k: pad(v) for k, v in b.items() if k in input_names} for b in batches]
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.feeds):
            return None
        self.i += 1
        return self.feeds[self.i - 1]

    def rewind(self) -> None:
        self.i = 0


def ort_unsupported(model: nn.Module) -> str | None:
    """Why the ONNX Runtime quantization path cannot serve this model, or None when it can (an encoder with a
    classification or embedding output; generative models need a KV-cache decoder loop it does not have)."""
    from ..models import get_adapter

    ad = get_adapter(model)
    if ad.is_multi_stack(model) or ad.stacks(model)[0].name != "encoder":
        return (f"the ONNX Runtime INT8 path serves encoder models; {type(model).__name__} is generative "
                f"(use backend: torch)")
    return None


def quantize_onnx(model: nn.Module, tokenizer: Any, modules: Sequence[str], mode: str = "dynamic",
                  calib_batches: list[dict[str, torch.Tensor]] | None = None, method: str = "minmax",
                  percentile: float = 99.99, per_channel: bool = True, embeddings: bool = True,
                  optimize: bool = False) -> nn.Module:
    """Export model to ONNX and quantize the MatMuls of `modules` (and, with `embeddings`, the word embedding
    table: 8-bit weights) with ORT; returns the wrapped module.

    `optimize` runs ORT's transformer optimizer on the float graph first, as ORT recommends before
    quantizing (`ort_fusion.fuse`): whole attention blocks (then QAttention), embeddings + LayerNorm,
    SkipLayerNorm, BiasGelu. A fused graph that does not match PyTorch is not used; `info["fusion"]` says
    what happened."""
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    reason = ort_unsupported(model)
    if reason:
        raise SlimformerError(reason)

    from ..export import to_onnx
    from .ort_fusion import fuse, root_log_level

    with tempfile.TemporaryDirectory() as d:
        fp = Path(d) / "fp32.onnx"
        qp = Path(d) / "int8.onnx"
        fusion: dict[str, Any] = {}
        res: dict[str, Any] | None = None
        if optimize:
            try:
                res = to_onnx(model, tokenizer, fp, seq_len=16, fusable=True, check=False)
                fusion = fuse(fp, model, tokenizer)  # checks the fused graph against PyTorch
            except SlimformerError as e:  # a graph the fusable path cannot handle: plain export, unfused
                fusion, res = {"skipped": str(e)}, None
        if res is None:
            res = to_onnx(model, tokenizer, fp, seq_len=16)
        exclude = excluded_nodes(onnx.load(str(fp)), model, modules)
        ops = ["MatMul", "Gemm", "Attention"] + (["Gather", "EmbedLayerNormalization"] if embeddings else [])
        opts = {"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT}
        if mode == "dynamic":
            with root_log_level(logging.ERROR):  # ORT's quantizer logs a pre-processing hint on every call
                quantize_dynamic(str(fp), str(qp), weight_type=QuantType.QInt8, per_channel=per_channel,
                                 op_types_to_quantize=ops, nodes_to_exclude=exclude, extra_options=opts)
        else:
            if not calib_batches:
                raise SlimformerError("static ONNX Runtime quantization needs calibration data")
            if method not in ORT_METHODS:
                raise SlimformerError(f"unknown calibration method '{method}' (use {', '.join(ORT_METHODS)})")
            with root_log_level(logging.ERROR):
                quantize_static(str(fp), str(qp), _Reader(calib_batches, res["inputs"]),
                                quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, per_channel=per_channel, op_types_to_quantize=ops,
                                nodes_to_exclude=exclude,
                                calibrate_method=getattr(CalibrationMethod, ORT_METHODS[method]),
                                extra_options={**opts, "CalibPercentile": percentile, "CalibMovingAverage": False})
        info = {"mode": mode, "method": method if mode == "static" else None, "per_channel": per_channel,
                "quantized_modules": len(modules), "embeddings": embeddings, "optimized": optimize,
                "exporter": res.get("exporter"), "fusion": fusion}
        return wrap_onnx(model, qp, res["inputs"], info)


def save_onnx_dir(model: nn.Module, tokenizer: Any, out: str | Path) -> Path:
    """Write a deployment directory: model.onnx (the ORT graph) + tokenizer + quantization.json."""
    from ..fsutil import atomic_dir

    if not isinstance(getattr(model, "ort", None), OrtGraph):
        raise SlimformerError("save_onnx_dir needs a model quantized with backend: onnxruntime")
    out = Path(out)
    with atomic_dir(out) as tmp:
        (tmp / "model.onnx").write_bytes(model.ort.onnx_bytes.numpy().tobytes())
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        meta = {"format": "onnxruntime", "inputs": model.ort.input_names,
                "labels": getattr(model.config, "id2label", None), **model.config.slimformer.get("onnxruntime", {})}
        (tmp / "quantization.json").write_text(json.dumps(meta, indent=2, default=str))
    return out


def load_onnx_dir(path: str | Path, threads: int | None = None) -> tuple[Any, Any]:
    """(forward callable inputs-dict -> logits, tokenizer) from a directory written by save_onnx_dir."""
    from transformers import AutoTokenizer

    from ..export import OnnxModel

    path = Path(path)
    if not (path / "model.onnx").is_file():
        raise SlimformerError(f"{path}: no model.onnx")
    return OnnxModel(path / "model.onnx", threads), AutoTokenizer.from_pretrained(str(path))


def is_onnx(model: nn.Module) -> bool:
    return isinstance(getattr(model, "ort", None), OrtGraph)
