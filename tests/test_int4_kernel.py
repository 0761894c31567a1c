"""Weight-only layers on torch's CPU int4 kernel (`kernel: int4`): same codes, bf16 arithmetic, reloads as run."""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import slimformer as sf
from quant_helpers import SRC
from slimformer.errors import SlimformerError
from slimformer.quantize import QuantizeWeights, quantize_weights
from slimformer.quantize import int4_cpu
from slimformer.quantize.modules import QLinear
from slimformer.quantize.ops import use_weight_kernel
from slimformer.steps import parse_step
from test_quant_llm import batches, logits, rel, tiny_llama

pytestmark = pytest.mark.skipif(not int4_cpu.available(), reason="this torch has no CPU int4 kernel")

GENERATE = """
import json, sys, torch
import slimformer as sf
model, _ = sf.load(sys.argv[1])
kernels = sorted({m.kernel for m in model.modules() if hasattr(m, "kernel")})
out = model.generate(torch.tensor(json.loads(sys.argv[2])), max_new_tokens=8, do_sample=False)
print(json.dumps({"kernels": kernels, "tokens": out.tolist()}))
"""


@pytest.mark.parametrize("bits", [4, 3])
def test_the_kernel_multiplies_by_the_layers_own_codes(bits):
    torch.manual_seed(0)
    lin = torch.nn.Linear(128, 48)
    q = QLinear.from_linear(lin, bits, 32, "none")
    x = torch.randn(5, 128)
    use = copy.deepcopy(q)
    use.kernel = "int4"
    with torch.no_grad():
        ref, y = F.linear(x, q.dequantized_weight(), q.bias), use(x)
    assert y.dtype == torch.float32 and y.shape == ref.shape
    assert 0 < rel(y, ref) < 1e-2  # bf16 activations, scales and zeros: close, not bit-equal
    assert torch.equal(use(x.requires_grad_()), F.linear(x, q.dequantized_weight(), q.bias))  # training: fp32


def test_a_model_on_the_kernel_stays_close_and_reloads_generating_the_same_tokens(tokenizer, tmp_path):
    model = tiny_llama()
    bs = batches()
    cfg = dict(bits=4, group_size=32, method="gptq", embeddings=False, guard=False)
    plain = quantize_weights(copy.deepcopy(model), QuantizeWeights(**cfg), bs)
    fast = quantize_weights(copy.deepcopy(model), QuantizeWeights(kernel="int4", **cfg), bs)
    linears = [m for m in fast.modules() if isinstance(m, QLinear)]
    assert len(linears) == 14 and all(m.kernel == "int4" for m in linears)
    assert fast.config.slimformer["weight_kernel"] == {"kernel": "int4", "layers": 14, "kept": {}}
    assert torch.equal(fast.model.layers[1].mlp.down_proj.qweight, plain.model.layers[1].mlp.down_proj.qweight)
    assert rel(logits(fast, bs), logits(plain, bs)) < 2e-2
    sf.save(fast, tokenizer, tmp_path / "m")
    back, _ = sf.load(tmp_path / "m")
    assert back.model.layers[0].self_attn.k_proj.kernel == "int4"
    assert torch.equal(logits(back, bs), logits(fast, bs))
    prompt = [[5, 17, 42, 9]]
    with torch.no_grad():
        want = fast.generate(torch.tensor(prompt), max_new_tokens=8, do_sample=False).tolist()
    out = subprocess.run([sys.executable, "-c", GENERATE, str(tmp_path / "m"), json.dumps(prompt)],
                         capture_output=True, text=True, check=True,
                         env={"SLIMFORMER_QUIET": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                              "PYTHONPATH": SRC})
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"kernels": ["int4"], "tokens": want}


def test_layers_the_kernel_cannot_take_keep_dequantizing():
    model = tiny_llama()
    quantize_weights(model, QuantizeWeights(bits=4, group_size=16, embeddings=False, guard=False))
    used = use_weight_kernel(model, "int4")
    assert used["layers"] == [] and len(used["kept"]) == 14
    assert "group size 16" in next(iter(used["kept"].values()))
    assert int4_cpu.unsupported(40, 64, 4, 32) and int4_cpu.unsupported(48, 64, 8, 32)
    assert int4_cpu.unsupported(48, 64, 4, 32) is None


def test_the_step_refuses_the_kernel_for_8_bit_codes():
    with pytest.raises(SlimformerError, match="kernel int4"):
        parse_step({"step": "quantize_weights", "bits": 8, "kernel": "int4"}, 0)


def test_an_encoder_on_the_kernel_exports_to_onnx_as_its_dequantized_twin(tiny_bert, tokenizer, tmp_path):
    from slimformer.deploy import export_onnx

    model = tiny_bert()
    quantize_weights(model, QuantizeWeights(bits=4, group_size=32, kernel="int4", guard=False))
    assert model.config.slimformer["weight_kernel"]["layers"] == 12
    info = export_onnx(model, tokenizer, tmp_path / "m.onnx")
    assert info["max_abs_diff"] < 1e-4
    assert model.bert.encoder.layer[0].output.dense.kernel == "int4"  # the input model is left as it was


def test_a_torch_without_the_kernel_loads_the_model_dequantizing(tokenizer, tmp_path, monkeypatch, capsys):
    model = tiny_llama()
    quantize_weights(model, QuantizeWeights(bits=4, group_size=32, kernel="int4", embeddings=False, guard=False))
    sf.save(model, tokenizer, tmp_path / "m")
    monkeypatch.setattr(int4_cpu, "available", lambda: False)
    back, _ = sf.load(tmp_path / "m")
    assert {m.kernel for m in back.modules() if isinstance(m, QLinear)} == {"dequant"}
    assert "dequantize instead" in capsys.readouterr().err
    bs = batches()
    assert rel(logits(back, bs), logits(model, bs)) < 2e-2
