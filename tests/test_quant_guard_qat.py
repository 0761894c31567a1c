"""The accuracy guard fires on a broken quantization and names the layer; QAT converts to what it trained."""
import copy
from pathlib import Path

import torch

from quant_helpers import toy_task
from slimformer.quantize import QuantizeDynamic, check_accuracy, quantize_dynamic
from slimformer.quantize.qat import FakeQuantLinear, QuantizeQAT, convert_qat, prepare_qat
from slimformer.quantize.ops import select_linears
from slimformer.steps import Context, apply_step


def test_guard_quiet_when_fine_and_fires_on_broken_layer(tiny_bert, tokenizer, capsys):
    model = tiny_bert(hidden=64, ffn=128)
    with torch.no_grad():  # a decisive head, so that a broken layer flips predictions
        model.classifier.weight.mul_(100)
        model.classifier.bias.zero_()
        model.bert.pooler.dense.weight.mul_(10)
    task = toy_task(model, tokenizer)
    good = quantize_dynamic(copy.deepcopy(model), QuantizeDynamic(backend="torch", embeddings=False))
    rep = check_accuracy(model, good, tokenizer, task, tolerance=20.0)
    assert rep["ok"] and rep["before"] == 1.0
    broken = copy.deepcopy(good)
    bad = broken.bert.encoder.layer[1].output.dense
    bad.scale.mul_(-40.0)  # a deliberately wrong scale
    rep = check_accuracy(model, broken, tokenizer, task, tolerance=1.0)
    assert not rep["ok"] and rep["drop_points"] > 1.0
    assert rep["suspects"][0]["layer"] == "bert.encoder.layer.1.output.dense"
    assert "QUANTIZATION ACCURACY WARNING" in capsys.readouterr().err


def test_qat_conversion_equals_fake_quant_model(tiny_bert, batch):
    model = tiny_bert(hidden=64, ffn=128)
    fake = prepare_qat(copy.deepcopy(model), select_linears(model))
    assert isinstance(fake.bert.encoder.layer[0].output.dense, FakeQuantLinear)
    with torch.no_grad():
        y_fake = fake(**batch).logits
        real = convert_qat(copy.deepcopy(fake))
        y_real = real(**batch).logits
        y_fp = model(**batch).logits
    assert (y_real - y_fake).abs().max() < 0.1 * (y_fp - y_fake).abs().max() + 1e-4
    assert torch.allclose(y_real, y_fake, atol=2e-3)


def test_qat_step_trains_and_converts(tiny_bert, tokenizer, tmp_path: Path):
    model = tiny_bert(hidden=32, ffn=64)
    task = toy_task(model, tokenizer, n_train=16, n_dev=8)
    ctx = Context(tokenizer=tokenizer, task=task, work_dir=tmp_path, teacher=copy.deepcopy(model), max_len=32)
    cfg = QuantizeQAT(max_steps=2, batch_size=8, distill=True, tolerance=100.0)
    out = apply_step(model, cfg, ctx)
    assert type(out.bert.encoder.layer[0].attention.self.query).__name__ == "QLinear"
    assert ctx.info["guard"]["ok"] and "train" in ctx.info
