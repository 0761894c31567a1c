"""Backend choice (measured), the 'INT8 will not pay off' advice, the guard on ONNX Runtime models, QAT reload."""
import copy
from pathlib import Path

import torch

from quant_helpers import fresh_logits, toy_task
from slimformer.models import save
from slimformer.quantize import QuantizeDynamic, QuantizeQAT, check_accuracy, quantize_dynamic
from slimformer.quantize.advice import int8_advice, slow_warning
from slimformer.quantize.modules import QLinear
from slimformer.steps import Context, apply_step

TEXTS = ["a fine film , well acted", "dull and far too long to sit through", "ok"]


def test_advice_names_missing_vnni_and_tiny_matrices(tiny_bert):
    model = tiny_bert(hidden=64, ffn=128)
    lines = int8_advice(model, flags={"avx2", "fma"})
    assert any("no VNNI" in s and "AVX2" in s for s in lines)
    assert any("tiny" in s and "64x128" in s for s in lines)
    assert int8_advice(None, flags={"avx512f", "avx512_vnni"}) == []
    rep = {"chosen": "torch", "latency_ms_b1": {"fp32": 1.0, "torch": 1.2}, "seq_len": 128, "threads": 2,
           "speedup_vs_fp32": 0.83}
    assert "0.83x" in slow_warning(rep)[0]
    assert slow_warning({**rep, "speedup_vs_fp32": 2.0}) == []


def test_auto_backend_measures_keeps_the_faster_and_reloads(tiny_bert, tokenizer, tmp_path: Path, capsys):
    model = tiny_bert(hidden=64, ffn=128)
    q = quantize_dynamic(copy.deepcopy(model), QuantizeDynamic(), tokenizer)
    rep = q.config.slimformer["quantize_backend"]
    ms = rep["latency_ms_b1"]
    assert set(ms) == {"fp32", "torch", "onnxruntime"}
    assert ms[rep["chosen"]] == min(ms["torch"], ms["onnxruntime"])
    is_torch = isinstance(q.bert.encoder.layer[0].output.dense, QLinear) if hasattr(q, "bert") else False
    assert is_torch == (rep["chosen"] == "torch")
    if rep["speedup_vs_fp32"] < 1.1:  # tiny matrices: the user is told
        assert "INT8 WILL NOT PAY OFF" in capsys.readouterr().err
    save(q, tokenizer, tmp_path / "auto")
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = q(**dict(enc)).logits
    assert torch.allclose(fresh_logits(tmp_path / "auto", TEXTS), want, atol=1e-6)


def test_guard_names_layers_for_a_model_without_visible_layers(tiny_bert, tokenizer):
    model = tiny_bert(hidden=64, ffn=128)
    with torch.no_grad():
        model.classifier.weight.mul_(100)
    task = toy_task(model, tokenizer)
    opaque = copy.deepcopy(model)  # stands in for an ORT graph: no QLinear inside, and clearly broken
    with torch.no_grad():
        opaque.classifier.weight.neg_()
    rep = check_accuracy(model, opaque, tokenizer, task, tolerance=1.0)
    assert not rep["ok"] and len(rep["suspects"]) == 3
    assert all(s["layer"].startswith("bert.") for s in rep["suspects"])


def test_qat_artifact_reloads_in_fresh_process(tiny_bert, tokenizer, tmp_path: Path):
    model = tiny_bert(hidden=32, ffn=64)
    task = toy_task(model, tokenizer, n_train=16, n_dev=8)
    ctx = Context(tokenizer=tokenizer, task=task, work_dir=tmp_path / "w", teacher=copy.deepcopy(model), max_len=32)
    out = apply_step(model, QuantizeQAT(max_steps=1, batch_size=8, guard=False), ctx)
    save(out, tokenizer, tmp_path / "qat")
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = out(**dict(enc)).logits
    assert torch.allclose(fresh_logits(tmp_path / "qat", TEXTS), want, atol=1e-6)
