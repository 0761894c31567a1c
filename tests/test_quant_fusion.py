"""ONNX Runtime fusion before INT8: fused attention on plain and head-pruned models, checked against torch."""
import copy

import onnx
import pytest
import torch

from slimformer import SlimformerError
from slimformer.export import to_onnx
from slimformer.prune.heads import keep_heads
from slimformer.quantize import QuantizeDynamic, quantize_dynamic
from slimformer.quantize.onnx_backend import excluded_nodes
from slimformer.quantize.ort_fusion import attention_modules, fuse

TEXTS = ["a fine film , well acted", "dull and far too long to sit through", "ok"]


def _logits(model, tokenizer):
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**dict(enc)).logits


@pytest.mark.parametrize("pruned", [False, True])
def test_fused_float_graph_matches_torch(tiny_bert, tokenizer, tmp_path, pruned):
    model = tiny_bert(hidden=64, ffn=128, heads=4, layers=2)
    if pruned:  # a different head count per layer: the optimizer's single num_heads is wrong for layer 1
        keep_heads(model, {0: [0, 1, 2, 3], 1: [1, 3]})
    path = tmp_path / "m.onnx"
    res = to_onnx(model, tokenizer, path, fusable=True)
    assert res["exporter"] == "torchscript" and model.config._attn_implementation != "eager"
    info = fuse(path, model, tokenizer)
    assert info["fused"].get("Attention") == 2 and info["max_abs_diff"] < 1e-3
    assert info["num_heads_fixed"] == (1 if pruned else 0)
    graph = onnx.load(str(path))
    heads = [a.i for n in graph.graph.node if n.op_type == "Attention" for a in n.attribute if a.name == "num_heads"]
    assert heads == ([4, 2] if pruned else [4, 4])
    packed = attention_modules(graph, model)
    assert sorted(len(v) for v in packed.values()) == [3, 3]
    # an Attention node is quantized only when its query, key and value are all targets
    excluded = excluded_nodes(graph, model, ["bert.encoder.layer.0.attention.self.query"])
    assert sum(1 for n in graph.graph.node if n.op_type == "Attention" and n.name in excluded) == 2


def test_fused_int8_close_to_fp32_and_records_fusion(tiny_bert, tokenizer):
    model = tiny_bert(hidden=64, ffn=128, heads=4, layers=2)
    keep_heads(model, {0: [0, 2], 1: [0, 1, 2]})
    q = quantize_dynamic(copy.deepcopy(model), QuantizeDynamic(backend="onnxruntime"), tokenizer)
    info = q.config.slimformer["onnxruntime"]
    assert info["exporter"] == "torchscript" and info["fusion"]["fused"]["Attention"] == 2
    graph = onnx.ModelProto.FromString(q.ort.onnx_bytes.numpy().tobytes())
    assert sum(n.op_type == "QAttention" for n in graph.graph.node) == 2
    ref = _logits(model, tokenizer)
    assert float((_logits(q, tokenizer) - ref).norm() / ref.norm()) < 0.1
    unfused = quantize_dynamic(copy.deepcopy(model), QuantizeDynamic(backend="onnxruntime", fuse=False), tokenizer)
    assert unfused.config.slimformer["onnxruntime"]["exporter"] == "dynamo"


def test_fusion_refuses_a_graph_that_differs(tiny_bert, tokenizer, tmp_path):
    model = tiny_bert(hidden=64, ffn=128, heads=4, layers=2)
    path = tmp_path / "m.onnx"
    to_onnx(model, tokenizer, path, fusable=True)
    before = path.read_bytes()
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.classifier.weight.add_(1.0)  # the graph no longer computes this model
    with pytest.raises(SlimformerError, match="differs from PyTorch"):
        fuse(path, other, tokenizer)
    assert path.read_bytes() == before


def test_fusion_check_compares_in_eval_mode_and_at_real_tokens(tokenizer, tmp_path):
    """A bare encoder left in training mode (dropout on) is fused and checked against its eval outputs, at the
    real tokens only; its mode is restored."""
    import transformers as tf

    cfg = tf.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                        max_position_embeddings=64, hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5)
    torch.manual_seed(0)
    model = tf.BertModel(cfg, add_pooling_layer=False).train()
    path = tmp_path / "m.onnx"
    to_onnx(model, tokenizer, path, fusable=True, check=False)
    res = fuse(path, model, tokenizer)
    assert res["fused"].get("Attention") == 2 and res["max_abs_diff"] < 1e-4 and model.training
