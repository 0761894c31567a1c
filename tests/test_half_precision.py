"""`half_precision`: the whole model in bfloat16 / float16, half the file, reloads and exports as cast."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import slimformer as sf
from families import FAMILIES, inputs, logits, tiny
from quant_helpers import SRC
from slimformer.errors import SlimformerError
from slimformer.fsutil import weights_size
from slimformer.quantize import HalfPrecision, QuantizeDynamic, half_precision, quantize_dynamic
from slimformer.quantize.half import advice
from slimformer.recipe import validate_order
from slimformer.steps import parse_step

GENERATE = """
import json, sys, torch
import slimformer as sf
model, _ = sf.load(sys.argv[1])
out = model.generate(torch.tensor(json.loads(sys.argv[2])), max_new_tokens=8, do_sample=False)
print(json.dumps({"dtype": str(model.dtype), "tokens": out.tolist()}))
"""


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_every_family_casts_stays_close_and_halves_its_file(family, dtype, tokenizer, tmp_path):
    model = tiny(family)
    batch = inputs(model)
    want = logits(model, batch)
    sf.save(model, tokenizer, tmp_path / "fp32")
    half_precision(model, HalfPrecision(dtype=dtype))
    assert {p.dtype for p in model.parameters()} == {getattr(torch, dtype)}
    got = logits(model, batch)
    assert rel(got, want) < (3e-2 if dtype == "bfloat16" else 3e-3)  # 8 / 11 mantissa bits
    sf.save(model, tokenizer, tmp_path / "half")
    assert weights_size(tmp_path / "half") < 0.51 * weights_size(tmp_path / "fp32")
    back, _ = sf.load(tmp_path / "half")
    assert back.dtype == getattr(torch, dtype)
    assert torch.equal(logits(back, batch), got)


def test_a_bf16_llama_reloads_in_a_fresh_process_generating_the_same_tokens(tokenizer, tmp_path):
    model = half_precision(tiny("llama"))
    prompt = [[1005, 1017, 1042, 1009]]
    with torch.no_grad():
        want = model.generate(torch.tensor(prompt), max_new_tokens=8, do_sample=False).tolist()
    sf.save(model, tokenizer, tmp_path / "m")
    out = subprocess.run([sys.executable, "-c", GENERATE, str(tmp_path / "m"), json.dumps(prompt)],
                         capture_output=True, text=True, check=True,
                         env={"SLIMFORMER_QUIET": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                              "PYTHONPATH": SRC})
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"dtype": "torch.bfloat16", "tokens": want}


def test_onnx_export_writes_an_fp32_graph_and_leaves_the_model_as_it_was(tiny_bert, tokenizer, tmp_path):
    from slimformer.deploy import export_onnx

    model = half_precision(tiny_bert())
    info = export_onnx(model, tokenizer, tmp_path / "m.onnx")
    assert any("exported as fp32" in n for n in info["notes"])
    assert info["max_abs_diff"] < 1e-4  # the graph matches the fp32 copy it was traced from
    assert model.bert.encoder.layer[0].output.dense.weight.dtype == torch.bfloat16


def test_the_step_is_a_final_step_and_refuses_quantized_models(tiny_bert):
    with pytest.raises(SlimformerError, match="must be the last step"):
        validate_order([parse_step({"step": "half_precision"}, 0), parse_step({"step": "prune_heads", "keep": 0.5}, 1)])
    with pytest.raises(SlimformerError, match="dtype"):
        parse_step({"step": "half_precision", "dtype": "float8"}, 0)
    q = quantize_dynamic(tiny_bert(), QuantizeDynamic(backend="torch", guard=False))
    with pytest.raises(SlimformerError, match="already has quantized layers"):
        half_precision(q)


def test_advice_names_the_missing_instructions():
    assert advice("bfloat16", {"avx2", "avx512f", "avx512_bf16"}) == []
    assert advice("float16", {"avx2", "amx_fp16"}) == []
    [line] = advice("bfloat16", {"avx2", "fma"})
    assert "avx512_bf16" in line and "slower than fp32" in line
    assert advice("bfloat16", set()) == []  # flags unknown (not Linux): no claim either way
