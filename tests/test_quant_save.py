"""Every quantized artifact saves, reloads in a fresh process with identical outputs, and is really smaller."""
import copy

import pytest
import torch

from quant_helpers import fresh_logits, toy_task
from slimformer.fsutil import weights_size
from slimformer.models import save
from slimformer.quantize import (QuantizeDynamic, QuantizeMixed, QuantizeStatic, QuantizeWeights, quantize_dynamic,
                                 quantize_mixed, quantize_static, quantize_weights)
from slimformer.quantize.guard import calibration_batches
from slimformer.quantize.modules import QEmbedding, QLinear

TEXTS = ["a fine film , well acted", "dull and far too long to sit through", "ok"]


def _logits(model, tokenizer):
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**dict(enc)).logits


def _roundtrip(model, tokenizer, path, fp32_bytes=None, ratio=1.0):
    save(model, tokenizer, path)
    want = _logits(model, tokenizer)
    got = fresh_logits(path, TEXTS)
    assert torch.allclose(got, want, atol=1e-6), (got, want)
    if fp32_bytes:
        assert weights_size(path) * ratio < fp32_bytes


@pytest.fixture
def setup(tiny_bert, tokenizer, tmp_path):
    model = tiny_bert(hidden=64, ffn=128)
    save(model, tokenizer, tmp_path / "fp32")
    return model, tokenizer, weights_size(tmp_path / "fp32")


def test_dynamic_torch_reloads(setup, tmp_path):
    model, tok, fp = setup
    q = quantize_dynamic(copy.deepcopy(model), QuantizeDynamic(backend="torch"))
    assert isinstance(q.bert.encoder.layer[0].intermediate.dense, QLinear)
    assert isinstance(q.bert.embeddings.word_embeddings, QEmbedding)
    assert not isinstance(q.classifier, QLinear)  # the head is skipped by default
    _roundtrip(q, tok, tmp_path / "dyn", fp, ratio=3.5)
    rel = (_logits(q, tok) - _logits(model, tok)).norm() / _logits(model, tok).norm()
    assert rel < 0.1


def test_static_torch_reloads_with_calibrated_ranges(setup, tmp_path):
    model, tok, fp = setup
    batches = calibration_batches(tok, toy_task(), 32, 32)
    q = quantize_static(copy.deepcopy(model), batches, QuantizeStatic(method="entropy"))
    assert q.bert.encoder.layer[0].attention.self.query.act_qparams[0] != 1.0
    _roundtrip(q, tok, tmp_path / "static", fp, ratio=3.0)


def test_weight_only_gptq_4bit_reloads_and_is_small(setup, tmp_path):
    model, tok, fp = setup
    batches = calibration_batches(tok, toy_task(), 32, 32)
    q = quantize_weights(copy.deepcopy(model), QuantizeWeights(bits=4, group_size=32, method="gptq"), batches)
    _roundtrip(q, tok, tmp_path / "w4", fp, ratio=5.0)


def test_mixed_reloads_and_respects_budget(setup, tmp_path):
    model, tok, fp = setup
    batches = calibration_batches(tok, toy_task(), 16, 32)
    q, info = quantize_mixed(copy.deepcopy(model), batches, QuantizeMixed(budget=0.2, group_size=32))
    assert info["linear_bytes_fraction_of_fp32"] <= 0.2
    assert set(info["choice"].values()) <= {"int4", "int8", "fp32"} and len(info["choice"]) == 12
    q0 = info["per_layer"]["encoder.0.self"]  # the report's per-layer view: bits of q k v o up down
    assert q0.split()[0] == "q" + {"int4": "4", "int8": "8", "fp32": "32"}[
        info["choice"]["bert.encoder.layer.0.attention.self.query"]] and len(info["per_layer"]) == 4
    _roundtrip(q, tok, tmp_path / "mixed", fp, ratio=3.0)


def test_onnxruntime_dynamic_and_static_reload(setup, tmp_path):
    from slimformer.quantize import load_onnx_dir, save_onnx_dir

    model, tok, fp = setup
    q = quantize_dynamic(copy.deepcopy(model), QuantizeDynamic(backend="onnxruntime"), tok)
    _roundtrip(q, tok, tmp_path / "ort")
    rel = (_logits(q, tok) - _logits(model, tok)).norm() / _logits(model, tok).norm()
    assert rel < 0.1
    save_onnx_dir(q, tok, tmp_path / "ort-dir")
    fwd, tok2 = load_onnx_dir(tmp_path / "ort-dir")
    assert torch.allclose(fwd(dict(tok2(TEXTS, padding=True, return_tensors="pt"))), _logits(q, tok), atol=1e-6)
    batches = calibration_batches(tok, toy_task(), 16, 32, batch_size=8)  # two batches of different lengths
    s = quantize_static(copy.deepcopy(model), batches, QuantizeStatic(backend="onnxruntime", method="percentile"), tok)
    _roundtrip(s, tok, tmp_path / "ort-static")
