"""Quantization: dynamic and static INT8, QAT, weight-only 8/4/3-bit (RTN, GPTQ, AWQ), mixed precision, half
precision (bf16 / fp16); torch and ONNX Runtime backends; every artifact reloads in a fresh process."""
from .dynamic import QuantizeDynamic, quantize_dynamic
from .guard import check_accuracy
from .half import HalfPrecision, half_precision
from .mixed import QuantizeMixed, quantize_mixed
from .modules import QEmbedding, QLinear
from .onnx_backend import load_onnx_dir, save_onnx_dir
from .qat import QuantizeQAT
from .static import QuantizeStatic, quantize_static
from .weight_only import QuantizeWeights, quantize_weights

__all__ = ["QuantizeDynamic", "quantize_dynamic", "QuantizeStatic", "quantize_static", "QuantizeQAT",
           "QuantizeWeights", "quantize_weights", "QuantizeMixed", "quantize_mixed", "HalfPrecision", "half_precision",
           "check_accuracy", "QEmbedding", "QLinear", "load_onnx_dir", "save_onnx_dir"]
