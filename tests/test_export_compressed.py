"""export --compressed-tensors: a weight-only quantized LM as a folder transformers loads on its own."""
from __future__ import annotations

import pytest
import torch
from cli_helpers import invoke
from families import tiny
from safetensors import safe_open
from transformers import AutoModelForCausalLM

import slimformer as sf
from slimformer.errors import SlimformerError
from slimformer.export_compressed import write_compressed_tensors
from slimformer.quantize import QuantizeWeights, quantize_weights
from slimformer.quantize.modules import QLinear


def _quantized(bits: int, group_size: int | None):
    torch.manual_seed(0)
    return quantize_weights(tiny("llama"), QuantizeWeights(bits=bits, group_size=group_size, embeddings=False,
                                                           guard=False))


@pytest.mark.parametrize("bits, group_size", [(4, 16), (3, None), (8, 16)])
def test_transformers_loads_the_folder_with_the_models_logits(tokenizer, tmp_path, bits, group_size):
    model = _quantized(bits, group_size)
    info = write_compressed_tensors(model, tokenizer, tmp_path / "ct")
    assert info["layers"] == 14 and info["max_abs_diff"] == 0.0
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ct").eval()  # no slimformer code involved
    ids = torch.randint(1000, 2000, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    with safe_open(str(tmp_path / "ct" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        packed = f.get_tensor("model.layers.0.mlp.up_proj.weight_packed")
    assert "model.layers.0.mlp.up_proj.weight" not in keys and packed.dtype == torch.int32
    assert packed.numel() * 32 == 48 * 32 * bits  # the codes at `bits` bits each, nothing more


def test_refuses_a_float_model_and_a_pruned_one_in_one_line(tokenizer, tmp_path):
    with pytest.raises(SlimformerError, match="quantize_weights") as e:
        write_compressed_tensors(tiny("llama"), tokenizer, tmp_path / "a")
    assert "\n" not in str(e.value) and not (tmp_path / "a").exists()
    from slimformer.prune.ffn import PruneFFN, prune_ffn

    model = tiny("llama")
    prune_ffn(model, PruneFFN(keep=0.5, criterion="magnitude"))
    model = quantize_weights(model, QuantizeWeights(bits=4, group_size=None, embeddings=False, guard=False))
    assert any(isinstance(m, QLinear) for m in model.modules())
    with pytest.raises(SlimformerError, match="plain Hugging Face") as e:
        write_compressed_tensors(model, tokenizer, tmp_path / "b")
    assert "\n" not in str(e.value) and not (tmp_path / "b").exists()


def test_cli_exports_a_saved_model(capsys, tokenizer, tmp_path):
    sf.save(_quantized(4, 16), tokenizer, tmp_path / "q")
    code, _ = invoke(capsys, "export", tmp_path / "q", "--compressed-tensors", tmp_path / "ct")
    assert code == 0 and (tmp_path / "ct" / "model.safetensors").is_file()
    code, err = invoke(capsys, "export", tmp_path / "q", "--compressed-tensors", tmp_path / "c2", "--onnx",
                       tmp_path / "x.onnx")
    assert code == 2 and "exactly one" in err


@pytest.mark.parametrize("head", [True, "shared"])  # shared: the table is the head's codes, written dequantized
def test_an_untied_4bit_lm_head_is_packed_too(tokenizer, tmp_path, head):
    torch.manual_seed(0)
    model = quantize_weights(tiny("llama"), QuantizeWeights(bits=4, group_size=16, lm_head=head, guard=False))
    info = write_compressed_tensors(model, tokenizer, tmp_path / "ct")
    assert info["layers"] == 15 and info["max_abs_diff"] == 0.0
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ct").eval()
    assert loaded.lm_head.weight is not loaded.model.embed_tokens.weight
    ids = torch.randint(1000, 2000, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    with safe_open(str(tmp_path / "ct" / "model.safetensors"), "pt") as f:
        assert "lm_head.weight_packed" in set(f.keys())
