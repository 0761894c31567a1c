"""LLM weight quantization on tiny random Llama configs: 3-bit packing, GPTQ (act-order), AWQ and SmoothQuant."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import slimformer as sf
from slimformer.errors import SlimformerError
from slimformer.fsutil import weights_size
from slimformer.quantize import QuantizeDynamic, QuantizeWeights, quantize_dynamic, quantize_weights
from slimformer.quantize.awq import awq_scale
from slimformer.quantize.gptq import gptq_quantize
from slimformer.quantize.modules import QLinear, dequantize_groups, group_params, pack3, quantize_groups, unpack3
from slimformer.quantize.smoothing import scale_groups, smooth
from slimformer.steps import parse_step

VOCAB = 256


def tiny_llama(seed: int = 0, outliers: float = 0.0) -> nn.Module:
    """hidden 64, 2 layers, 4 heads, 2 KV heads; `outliers` > 0 multiplies a few channels of every pre-norm
    weight (the inputs of q/k/v and gate/up then have a few outlier channels, as real LLMs do)."""
    import transformers as tf

    torch.manual_seed(seed)
    cfg = tf.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64, tie_word_embeddings=False,
                         pad_token_id=0)
    model = tf.LlamaForCausalLM(cfg).eval()
    if outliers:
        with torch.no_grad():
            for layer in model.model.layers:
                for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                    norm.weight[[3, 17, 40]] *= outliers
    return model


def batches(n: int = 4, seq: int = 32, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(1, VOCAB, (2, seq), generator=g)
        mask = torch.ones_like(ids)
        mask[1, seq - 5:] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def logits(model: nn.Module, bs: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(**b).logits for b in bs])


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# --- 3-bit storage ------------------------------------------------------------------------------------
def test_pack3_round_trip_and_real_size():
    q = torch.randint(0, 8, (5, 21), dtype=torch.uint8)
    p = pack3(q)
    assert p.shape == (5, 9) and torch.equal(unpack3(p, 21), q)  # 21 codes -> 24 padded -> 9 bytes
    lin = nn.Linear(64, 32)
    q3 = QLinear.from_linear(lin, 3, 16, "none")
    assert q3.qweight.numel() == 32 * 64 * 3 // 8
    codes, s, z = quantize_groups(lin.weight.data, 3, 16)
    assert torch.equal(q3.dequantized_weight(), dequantize_groups(codes, s.half().float(), z, 16))


# --- GPTQ ---------------------------------------------------------------------------------------------
def _layer(outlier_channels: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 16, generator=g) @ torch.randn(16, 64, generator=g)  # correlated inputs
    x += 0.3 * torch.randn(512, 64, generator=g)
    if outlier_channels:
        x[:, [5, 33, 50]] *= 15
    return x, torch.randn(48, 64, generator=g)


def _err(x: torch.Tensor, w: torch.Tensor, wq: torch.Tensor) -> float:
    return rel(x @ wq.T, x @ w.T)


@pytest.mark.parametrize("bits", [3, 4])
def test_gptq_beats_rtn_on_its_calibration_inputs(bits):
    x, w = _layer(False)
    h = 2 * x.T @ x / x.shape[0]
    rtn = dequantize_groups(*quantize_groups(w, bits, 16), 16)
    gptq = dequantize_groups(*gptq_quantize(w, h, bits, 16), 16)
    assert _err(x, w, gptq) < 0.8 * _err(x, w, rtn)


@pytest.mark.parametrize("bits", [3, 4])
def test_act_order_is_not_worse_with_outlier_channels(bits):
    x, w = _layer(True)
    h = 2 * x.T @ x / x.shape[0]
    plain = _err(x, w, dequantize_groups(*gptq_quantize(w, h, bits, 16), 16))
    ordered = _err(x, w, dequantize_groups(*gptq_quantize(w, h, bits, 16, act_order=True), 16))
    rtn = _err(x, w, dequantize_groups(*quantize_groups(w, bits, 16), 16))
    assert ordered < plain and ordered < rtn


def test_mse_grid_clips_outliers_for_a_smaller_error():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(32, 64, generator=g) * torch.where(torch.rand(32, 64, generator=g) < 0.02, 8.0, 1.0)  # heavy tail
    minmax = dequantize_groups(*quantize_groups(w, 4, 32), 32)
    scale, zero = group_params(w, 4, 32, mse=True)
    searched = dequantize_groups(*quantize_groups(w, 4, 32, scale, zero), 32)
    per_group = [(x - w).abs().pow(2.4).reshape(32, 2, 32).sum(-1) for x in (searched, minmax)]
    assert (per_group[0] <= per_group[1] + 1e-6).all() and per_group[0].sum() < 0.99 * per_group[1].sum()
    assert (scale <= group_params(w, 4, 32)[0] + 1e-6).all()  # only ever clips
    x, w2 = _layer(False)
    h = 2 * x.T @ x / x.shape[0]
    assert _err(x, w2, dequantize_groups(*gptq_quantize(w2, h, 3, 16, mse=True), 16)) < _err(
        x, w2, dequantize_groups(*quantize_groups(w2, 3, 16), 16))


def test_mse_grid_is_a_step_option_and_reloads(tokenizer, tmp_path):
    model = tiny_llama()
    ref = copy.deepcopy(model)
    quantize_weights(model, QuantizeWeights(bits=4, group_size=16, grid="mse", embeddings=False, guard=False))
    plain = quantize_weights(copy.deepcopy(ref), QuantizeWeights(bits=4, group_size=16, embeddings=False, guard=False))
    q, p = model.model.layers[0].mlp.up_proj, plain.model.layers[0].mlp.up_proj
    w = ref.model.layers[0].mlp.up_proj.weight
    assert not torch.equal(q.scale, p.scale)
    assert (q.dequantized_weight() - w).abs().pow(2.4).sum() < (p.dequantized_weight() - w).abs().pow(2.4).sum()
    sf.save(model, tokenizer, tmp_path / "m")
    back, _ = sf.load(tmp_path / "m")
    bs = batches()
    assert torch.equal(logits(back, bs), logits(model, bs))


def test_sequential_gptq_fits_each_layer_to_the_quantized_layers_before_it(tokenizer, tmp_path):
    ref = tiny_llama()
    bs = batches()
    models = {}
    for key, cfg in {"rtn": {}, "one pass": {"method": "gptq", "sequential": False}, "sequential": {"method": "gptq"}
                     }.items():
        models[key] = quantize_weights(copy.deepcopy(ref), QuantizeWeights(bits=3, group_size=16, embeddings=False,
                                                                           guard=False, **cfg), bs)
    err = {k: rel(logits(m, bs), logits(ref, bs)) for k, m in models.items()}
    assert err["sequential"] < err["rtn"] and err["one pass"] < err["rtn"]
    first = [m.model.layers[0].self_attn.q_proj.qweight for m in (models["one pass"], models["sequential"])]
    last = [m.model.layers[-1].mlp.down_proj.qweight for m in (models["one pass"], models["sequential"])]
    assert (first[0] == first[1]).float().mean() > 0.99  # layer 0 sees the same inputs in both
    assert not torch.equal(*last)  # later layers see the quantized layers' outputs
    sf.save(models["sequential"], tokenizer, tmp_path / "m")
    back, _ = sf.load(tmp_path / "m")
    assert torch.equal(logits(back, bs), logits(models["sequential"], bs))


def test_gptq_3bit_act_order_model_reloads_identically_and_is_smaller(tokenizer, tmp_path):
    model = tiny_llama()
    bs = batches()
    sizes = {}
    for bits in (4, 3):
        q = quantize_weights(copy.deepcopy(model), QuantizeWeights(bits=bits, group_size=32, method="gptq",
                                                                   act_order=True), bs)
        assert isinstance(q.model.layers[0].self_attn.q_proj, QLinear) and q.model.layers[0].mlp.up_proj.bits == bits
        sf.save(q, tokenizer, tmp_path / f"q{bits}")
        back, _ = sf.load(str(tmp_path / f"q{bits}"))
        assert torch.equal(logits(back, bs), logits(q, bs))
        assert rel(logits(q, bs), logits(model, bs)) < (0.2 if bits == 4 else 0.4)
        sizes[bits] = weights_size(tmp_path / f"q{bits}")
    assert sizes[3] < sizes[4]


def test_act_order_refused_without_gptq():
    with pytest.raises(SlimformerError, match="act_order applies to method gptq"):
        parse_step({"step": "quantize_weights", "method": "rtn", "act_order": True}, 0)


# --- folding, AWQ -------------------------------------------------------------------------------------
def test_scale_groups_come_from_the_adapter():
    names = [g.name for g in scale_groups(tiny_llama())]
    assert names[:2] == ["decoder.0.self.qkv", "decoder.0.self.vo"] and "decoder.1.ffn" in names
    assert "decoder.1.down" in names and len(names) == 8


def test_awq_scaling_alone_keeps_the_function():
    model = tiny_llama(outliers=20)
    bs = batches()
    ref = logits(model, bs)
    report = awq_scale(model, bs, bits=4, group_size=32)
    assert rel(logits(model, bs), ref) < 1e-5
    assert any(a > 0 for a in report["alpha"].values()) and report["error_awq"] <= report["error_rtn"]


def test_awq_4bit_beats_rtn_4bit_with_outlier_channels():
    model = tiny_llama(outliers=20)
    bs = batches()
    ref = logits(model, bs)
    rtn = quantize_weights(copy.deepcopy(model), QuantizeWeights(bits=4, group_size=32, embeddings=False), bs)
    awq = quantize_weights(copy.deepcopy(model), QuantizeWeights(bits=4, group_size=32, method="awq",
                                                                 embeddings=False), bs)
    e_rtn, e_awq = rel(logits(rtn, bs), ref), rel(logits(awq, bs), ref)
    assert e_awq < e_rtn, (e_awq, e_rtn)


@pytest.mark.parametrize("family", ["bert", "marian"])
def test_awq_and_smoothquant_refuse_models_without_a_pre_norm(family):
    from families import tiny

    model = tiny(family)
    for raw in ({"step": "quantize_weights", "method": "awq"}, {"step": "quantize_dynamic", "smoothquant": 0.5}):
        with pytest.raises(SlimformerError, match="needs pre-norm layers") as e:
            parse_step(raw, 0).preflight(model, None)
        assert "\n" not in str(e.value)


def test_folding_keeps_gpt2_with_fused_qkv_and_layernorm_bias():
    import transformers as tf

    torch.manual_seed(0)
    model = tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=VOCAB,
                                             resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)).eval()
    with torch.no_grad():
        for block in model.transformer.h:
            block.ln_1.bias.normal_()
    bs = batches()
    ref = logits(model, bs)
    report = awq_scale(model, bs, bits=4, group_size=16)
    # fused q|k|v: no separate v to fold into o; GELU between c_fc and c_proj: no up -> down group
    assert set(report["alpha"]) == {"decoder.0.self.qkv", "decoder.1.self.qkv", "decoder.0.ffn", "decoder.1.ffn"}
    assert rel(logits(model, bs), ref) < 1e-5


# --- SmoothQuant --------------------------------------------------------------------------------------
def test_smoothing_alone_keeps_the_function():
    model = tiny_llama(outliers=30)
    bs = batches()
    ref = logits(model, bs)
    report = smooth(model, bs, 0.5)
    assert report["groups"] == 4 and report["scale_max"] > 3
    assert rel(logits(model, bs), ref) < 1e-5


def test_smoothquant_int8_beats_plain_int8_with_an_outlier_channel(tokenizer, tmp_path):
    model = tiny_llama(outliers=30)
    bs = batches()
    ref = logits(model, bs)
    plain = quantize_dynamic(copy.deepcopy(model), QuantizeDynamic(backend="torch", embeddings=False))
    smoothed = quantize_dynamic(copy.deepcopy(model), QuantizeDynamic(backend="torch", embeddings=False,
                                                                      smoothquant=0.5), batches=bs)
    lin = smoothed.model.layers[0].self_attn.q_proj
    assert isinstance(lin, QLinear) and lin.act == "dynamic"  # fbgemm INT8 GEMM, activations quantized at run time
    e_plain, e_smooth = rel(logits(plain, bs), ref), rel(logits(smoothed, bs), ref)
    assert e_smooth < 0.8 * e_plain, (e_smooth, e_plain)
    sf.save(smoothed, tokenizer, tmp_path / "sq")
    back, _ = sf.load(str(tmp_path / "sq"))
    assert torch.equal(logits(back, bs), logits(smoothed, bs))



def test_per_token_int8_linear_matches_its_definition():
    torch.manual_seed(0)
    lin = nn.Linear(64, 48)
    q = QLinear.from_linear(lin, 8, None, "token")
    x = torch.randn(2, 5, 64)
    x[..., 7] *= 40  # an outlier channel
    sx = x.abs().amax(-1, keepdim=True) / 127
    xq = torch.clamp(torch.round(x / sx), -127, 127)
    want = (xq @ q.qweight.float().T) * sx * q.scale + lin.bias
    with torch.no_grad():
        got = q(x)
    torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-5)
    assert rel(got, lin(x).detach()) < 0.05


def test_smoothquant_helps_per_token_int8_too_and_reloads(tokenizer, tmp_path):
    model = tiny_llama(outliers=30)
    bs = batches()
    ref = logits(model, bs)
    token = dict(backend="torch", embeddings=False, activations="token")
    plain = quantize_dynamic(copy.deepcopy(model), QuantizeDynamic(**token))
    smoothed = quantize_dynamic(copy.deepcopy(model), QuantizeDynamic(**token, smoothquant=0.5), batches=bs)
    assert smoothed.model.layers[1].mlp.down_proj.act == "token"
    assert rel(logits(smoothed, bs), ref) < rel(logits(plain, bs), ref)
    sf.save(smoothed, tokenizer, tmp_path / "sq")
    back, _ = sf.load(str(tmp_path / "sq"))
    assert torch.equal(logits(back, bs), logits(smoothed, bs))


def test_per_token_needs_the_torch_backend():
    with pytest.raises(SlimformerError, match="activations: token needs backend: torch"):
        parse_step({"step": "quantize_dynamic", "activations": "token"}, 0)


# --- as recipe steps ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fields", [
    {"step": "quantize_weights", "bits": 3, "group_size": 16, "method": "gptq", "act_order": True},
    {"step": "quantize_weights", "bits": 4, "group_size": 16, "method": "awq", "awq_grid": 5},
    {"step": "quantize_dynamic", "backend": "torch", "smoothquant": 0.5},
    {"step": "quantize_dynamic", "backend": "torch", "smoothquant": 0.5, "activations": "token"},
])
def test_llm_steps_run_in_a_recipe_and_reload(fields, tokenizer, tmp_path):
    from families import inputs, tiny
    from slimformer.steps import Context, apply_step
    from slimformer.tasks.language_modeling import LanguageModelingTask, Text

    words = "the cat sat on a mat while two dogs ran in the park near old trees".split()
    rows = [" ".join(words[(i * 5 + j) % len(words)] for j in range(8)) for i in range(12)]
    task = LanguageModelingTask("toy", {"train": [Text(t) for t in rows], "test": [Text(t) for t in rows[:4]]},
                                context=32, stride=16)
    model = tiny("llama")
    cfg = parse_step({**fields, "calib_examples": 8, "guard": False}, 0)
    cfg.preflight(model, task)
    ctx = Context(tokenizer=tokenizer, task=task, work_dir=tmp_path / "work", seed=1, max_len=16)
    out = apply_step(model, cfg, ctx)
    if fields.get("method") == "awq":
        assert ctx.info["awq"]["error_awq"] <= ctx.info["awq"]["error_rtn"]
    if "smoothquant" in fields:
        assert ctx.info["smoothquant"]["groups"] == 4
    batch = inputs(out, seq=8)
    want = logits(out, [batch])
    sf.save(out, tokenizer, tmp_path / "m")
    back, _ = sf.load(str(tmp_path / "m"))
    torch.testing.assert_close(logits(back, [batch]), want, atol=1e-5, rtol=0)
