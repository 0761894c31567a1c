"""4-bit decoder export (ONNX Runtime MatMulNBits), the ONNX decoder loop's timing and perplexity, and the
bytes-per-token / bandwidth arithmetic behind the batch-1 decoding bound."""
from __future__ import annotations

import onnx
import pytest
import torch
from families import tiny

from slimformer.deploy import export_onnx
from slimformer.errors import SlimformerError
from slimformer.export_generative import OrtDecoder
from slimformer.generation import ort_generation_profile
from slimformer.quantize.onnx_int4 import (
    bytes_read_per_token,
    greedy_agreement,
    read_bandwidth,
)
from slimformer.tasks.language_modeling import perplexity


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tokenizer):
    model = tiny("llama")
    d = tmp_path_factory.mktemp("int4")
    fp32 = export_onnx(model, tokenizer, d / "fp32.onnx")
    int4 = export_onnx(model, tokenizer, d / "int4.onnx", int4=16)
    return model, d, fp32, int4


def test_int4_graph_uses_the_low_bit_kernel_and_is_smaller(exported):
    model, d, fp32, int4 = exported
    ops = [n.op_type for n in onnx.load(str(d / "int4.onnx")).graph.node]
    assert ops.count("MatMulNBits") == int4["int4"]["matmulnbits_nodes"] >= 2 * 7  # 7 Linears per layer
    assert bytes_read_per_token(d / "int4.onnx") < 0.4 * bytes_read_per_token(d / "fp32.onnx")
    assert ops.count("GatherBlockQuantized") == 1  # the embedding table is 4-bit too: no fp32 copy is left
    table = list(model.model.embed_tokens.weight.shape)
    assert not any(list(i.dims) in (table, table[::-1]) and i.data_type == onnx.TensorProto.FLOAT
                   for i in onnx.load(str(d / "int4.onnx")).graph.initializer)
    assert (d / "int4.onnx").stat().st_size < 0.5 * (d / "fp32.onnx").stat().st_size  # tiny: the graph is a large share
    assert 0 <= int4["top1_agreement"] <= 1 and int4["relative_error"] < 0.5


def test_bytes_per_token_skip_tables_only_gathered(exported):
    model, d, _, _ = exported
    total = sum(t.numel() * 4 for t in model.state_dict().values())
    table = model.model.embed_tokens.weight.numel() * 4  # tied: read whole by the LM head, so it counts
    got = bytes_read_per_token(d / "fp32.onnx")
    assert got <= total and got >= total - table - 1024


def test_ort_loop_scores_the_perplexity_of_pytorch(exported):
    model, d, _, _ = exported
    ids = torch.randint(1000, 2000, (1, 40), generator=torch.Generator().manual_seed(0))[0].tolist()
    ref = perplexity(model, ids, context=16, stride=8)
    assert perplexity(OrtDecoder(d / "fp32.onnx"), ids, context=16, stride=8) == pytest.approx(ref, rel=1e-4)


def test_ort_generation_profile(exported):
    _, d, _, _ = exported
    prof = ort_generation_profile(OrtDecoder(d / "int4.onnx", threads=1), 30522, prompt_len=8, new_tokens=3,
                                  runs=1, n_threads=1)
    assert prof["prefill_ms"] > 0 and prof["tokens_per_s"] > 0 and len(prof["decode_spread"]) > 0


def test_int4_refused_on_an_encoder_in_one_line(tokenizer, tmp_path):
    with pytest.raises(SlimformerError, match="decoder-only") as e:
        export_onnx(tiny("bert"), tokenizer, tmp_path / "x.onnx", int4=32)
    assert "\n" not in str(e.value) and not list(tmp_path.iterdir())


def test_helpers():
    import numpy as np

    ref = np.array([[1, 2, 3, 4, 5]])
    assert greedy_agreement(ref, np.array([[1, 2, 3, 9, 5]]), 2) == pytest.approx(1 / 3)
    assert greedy_agreement(ref, ref, 2) == 1.0
    bw = read_bandwidth(gib=0.05, repeats=2, threads=1)
    assert bw["best_gb_s"] > 0


def _weight_only_4bit(group_size):
    from slimformer.quantize import QuantizeWeights, quantize_weights

    torch.manual_seed(0)
    model = tiny("llama")
    return quantize_weights(model, QuantizeWeights(bits=4, group_size=group_size, embeddings=False, guard=False))


@pytest.mark.parametrize("group_size, carried", [(16, 14), (None, 12)])  # None: down_proj's 48 inputs have no block
def test_own_codes_on_matmulnbits_give_the_quantized_models_logits(tmp_path, group_size, carried):
    """Exact layout check: with fp32 compute (accuracy level 0) the graph computes what the PyTorch model does."""
    from slimformer.export_generative import export_decoder
    from slimformer.quantize.onnx_codes import carried_layers, carry_codes, dequantized_twin

    model = _weight_only_4bit(group_size)
    path = tmp_path / "codes.onnx"
    export_decoder(dequantized_twin(model), path)
    info = carry_codes(path, carried_layers(model), accuracy_level=0)
    assert info["carried_matmuls"] == carried
    graph = onnx.load(str(path)).graph
    assert sum(n.op_type == "MatMulNBits" for n in graph.node) == carried
    assert not any(i.name.endswith("q_proj.weight") for i in graph.initializer)  # the float copies are gone
    ids = torch.randint(1000, 2000, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(input_ids=ids).logits.numpy()
    got = OrtDecoder(path).prefill_logits(ids.numpy())
    assert abs(got - ref).max() < 1e-4


def test_export_of_a_4bit_model_keeps_its_codes_without_int4(tmp_path, tokenizer):
    model = _weight_only_4bit(16)
    info = export_onnx(model, tokenizer, tmp_path / "q.onnx")
    assert info["int4"]["matmulnbits_nodes"] == 14 and info["top1_agreement"] > 0.9
    both = export_onnx(model, tokenizer, tmp_path / "q2.onnx", int4=16)  # + the tied LM head rounded by ORT
    assert both["int4"]["matmulnbits_nodes"] == 15


def test_a_gptq_lm_head_is_untied_quantized_reloaded_and_exported_with_its_codes(tmp_path, tokenizer):
    """lm_head: the tied head gets its own 4-bit GPTQ codes (Hessians from the quantized layers' outputs), the
    table its own 4-bit codes; the pair reloads identically and the ONNX graph carries all 15 MatMuls' codes."""
    import slimformer as sf
    from slimformer.quantize import QuantizeWeights, quantize_weights
    from slimformer.quantize.modules import QEmbedding, QLinear

    torch.manual_seed(0)
    model = tiny("llama")
    assert model.lm_head.weight is model.model.embed_tokens.weight
    g = torch.Generator().manual_seed(2)
    bs = [{"input_ids": torch.randint(1000, 2000, (2, 16), generator=g),
           "attention_mask": torch.ones(2, 16, dtype=torch.long)} for _ in range(4)]
    cfg = QuantizeWeights(bits=4, group_size=16, method="gptq", act_order=True, lm_head=True, guard=False)
    q = quantize_weights(model, cfg, bs)
    assert isinstance(q.lm_head, QLinear) and isinstance(q.model.embed_tokens, QEmbedding)
    assert q.lm_head.group_size == 16 and not q.config.tie_word_embeddings
    ids = bs[0]["input_ids"]
    sf.save(q, tokenizer, tmp_path / "m")
    back, _ = sf.load(str(tmp_path / "m"))
    assert isinstance(back.lm_head, QLinear) and isinstance(back.model.embed_tokens, QEmbedding)
    with torch.no_grad():
        ref = q(input_ids=ids).logits
        assert torch.equal(back(input_ids=ids).logits, ref)
    info = export_onnx(q, tokenizer, tmp_path / "q.onnx", int4=16, int4_accuracy=0)
    assert info["int4"]["matmulnbits_nodes"] == 15 and "(block 16" in info["notes"][0]
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    assert sum(n.op_type == "GatherBlockQuantized" for n in graph.node) == 1
    got = OrtDecoder(tmp_path / "q.onnx").prefill_logits(ids.numpy())
    assert abs(got - ref.numpy()).max() < 1e-4


def test_lm_head_needs_a_language_model():
    from slimformer.quantize import QuantizeWeights, quantize_weights

    with pytest.raises(SlimformerError, match="lm_head"):
        quantize_weights(tiny("bert"), QuantizeWeights(bits=4, group_size=16, lm_head=True, guard=False))


def test_a_shared_lm_head_stores_one_4bit_copy_for_the_head_and_the_table(tmp_path, tokenizer):
    """lm_head: shared: GPTQ codes of the tied head serve the lookups too, in PyTorch, on disk (once), after a
    reload and in the ONNX graph (the lookup reads the head's MatMulNBits codes through a Reshape)."""
    import slimformer as sf
    from slimformer.quantize import QuantizeWeights, quantize_weights
    from slimformer.quantize.modules import QEmbedding, QLinear

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    bs = [{"input_ids": torch.randint(1000, 2000, (2, 16), generator=g),
           "attention_mask": torch.ones(2, 16, dtype=torch.long)} for _ in range(4)]
    cfg = dict(bits=4, group_size=16, method="gptq", guard=False)
    own = quantize_weights(tiny("llama"), QuantizeWeights(lm_head=True, **cfg), bs)
    torch.manual_seed(0)
    q = quantize_weights(tiny("llama"), QuantizeWeights(lm_head="shared", **cfg), bs)
    head, emb = q.lm_head, q.model.embed_tokens
    assert isinstance(head, QLinear) and isinstance(emb, QEmbedding) and emb.qweight is head.qweight
    assert torch.equal(emb.weight, head.dequantized_weight())  # the lookup rows are the head's rows
    ids = bs[0]["input_ids"]
    sf.save(own, tokenizer, tmp_path / "own")
    sf.save(q, tokenizer, tmp_path / "m")
    table = emb.qweight.numel() + emb.scale.numel() * 2 + emb.zero.numel()
    saved = lambda d: (tmp_path / d / "model.safetensors").stat().st_size  # noqa: E731
    assert saved("own") - saved("m") >= 0.95 * table  # the shared file holds the codes once
    back, _ = sf.load(str(tmp_path / "m"))
    assert back.model.embed_tokens.qweight is back.lm_head.qweight
    with torch.no_grad():
        ref = q(input_ids=ids).logits
        assert torch.equal(back(input_ids=ids).logits, ref)
    info = export_onnx(q, tokenizer, tmp_path / "q.onnx", int4=16, int4_accuracy=0)
    export_onnx(own, tokenizer, tmp_path / "own.onnx", int4=16, int4_accuracy=0)
    assert "one copy for both" in info["notes"][0]
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    gather = next(n for n in graph.node if n.op_type == "GatherBlockQuantized")
    nbits = {n.input[1] for n in graph.node if n.op_type == "MatMulNBits"}
    reshape = next(n for n in graph.node if n.output[0] == gather.input[0])
    assert reshape.op_type == "Reshape" and reshape.input[0] in nbits
    assert not any(i.name.endswith("_q4") for i in graph.initializer)
    assert (tmp_path / "own.onnx").stat().st_size - (tmp_path / "q.onnx").stat().st_size >= 0.9 * table
    got = OrtDecoder(tmp_path / "q.onnx").prefill_logits(ids.numpy())
    assert abs(got - ref.numpy()).max() < 1e-4


def test_shared_lm_head_needs_a_tied_head():
    from slimformer.quantize import QuantizeWeights, quantize_weights

    with pytest.raises(SlimformerError, match="tied"):
        quantize_weights(tiny("bert"), QuantizeWeights(bits=4, group_size=16, lm_head="shared", guard=False))
    with pytest.raises(SlimformerError, match="embedding_bits"):
        QuantizeWeights(bits=4, lm_head="shared", embedding_bits=8)
