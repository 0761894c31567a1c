"""Conformance of every registered architecture family, on tiny random configs built in the test.

For each family: the adapter finds every part; a head (or a key/value group under GQA) gated to 0 equals its
physical removal; a gated FFN pruned equals the masked one; layers dropped per stack; and the reshaped model
reloads with identical outputs (and identical greedy generations for generative models)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import slimformer as sf
from families import FAMILIES, inputs, logits, tiny
from slimformer.models import get_adapter, supported_model_types
from slimformer.prune.ffn import keep_ffn
from slimformer.prune.gates import gated, mask_gates
from slimformer.prune.heads import keep_heads
from slimformer.prune.layers import keep_layers


def test_every_family_is_tested():
    tested = {tiny(f).config.model_type for f in FAMILIES}
    assert tested | {"roberta", "xlm-roberta", "electra", "camembert", "roberta-prelayernorm", "mbart", "mistral",
                     "qwen2"} == set(supported_model_types())


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_finds_every_part(family):
    m = tiny(family)
    ad = get_adapter(m)
    stacks = [s.name for s in ad.stacks(m)]
    assert stacks == (["encoder", "decoder"] if m.config.is_encoder_decoder else
                      ["decoder"] if family in ("llama", "gpt2") else ["encoder"])
    att = ad.attention(m)
    kinds = [a.unit for a in att]
    expect = [f"{s}.{i}.{k}" for s in stacks for i in range(2)
              for k in (("self", "cross") if s == "decoder" and m.config.is_encoder_decoder else ("self",))]
    assert kinds == expect
    for a in att:
        assert a.heads == 4 and a.head_dim == 8
        assert a.kv_heads == (2 if family == "llama" else 4) and a.group == a.heads // a.kv_heads
    ffn = ad.ffn(m)
    assert [f.unit for f in ffn] == [f"{s}.{i}" for s in stacks for i in range(2)]
    assert all(f.width == 48 for f in ffn) and all(len(f.up) == (2 if family in ("llama", "t5") else 1) for f in ffn)
    comps = ad.component_map(m)
    params = {n.rsplit(".", 1)[0] for n, _ in m.named_parameters()}
    unassigned = sorted(p for p in params if comps.get(p, "other") == "other")
    assert not unassigned, unassigned  # every parameter belongs to a named component
    assert ad.lm_head_tied(m) == (family in ("llama", "gpt2", "bart", "marian", "t5"))


def _keep_pattern(model: torch.nn.Module) -> dict[str, list[int]]:
    """A different subset of heads (or KV groups) per attention block, never empty."""
    out = {}
    for i, a in enumerate(get_adapter(model).attention(model)):
        out[a.unit] = [j for j in range(a.units) if (j + i) % 2 == 0] or [0]
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_head_gate_zero_equals_physical_removal(family):
    m = tiny(family)
    batch = inputs(m)
    keep = _keep_pattern(m)
    full = logits(m, batch)
    with gated(m, heads=mask_gates(m, "heads", keep)):
        ref = logits(m, batch)
    keep_heads(m, keep)
    got = logits(m, batch)
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=0)
    assert not torch.equal(full, got)  # pruning changed the function
    for a in get_adapter(m).attention(m):
        assert a.kv_heads == len(keep[a.unit]) and a.heads == len(keep[a.unit]) * a.group


@pytest.mark.parametrize("family", FAMILIES)
def test_ffn_gate_zero_equals_physical_removal(family):
    m = tiny(family)
    batch = inputs(m)
    keep = {f.unit: list(range(i % 3, 48, 3)) for i, f in enumerate(get_adapter(m).ffn(m))}
    with gated(m, neurons=mask_gates(m, "ffn", keep)):
        ref = logits(m, batch)
    keep_ffn(m, keep)
    torch.testing.assert_close(logits(m, batch), ref, atol=2e-5, rtol=0)
    assert all(f.width == 16 for f in get_adapter(m).ffn(m))


def _reshape(m: torch.nn.Module) -> None:
    """Drop the first layer of every stack, then prune heads and FFN neurons."""
    for st in get_adapter(m).stacks(m):
        keep_layers(m, [1], st.name)
    keep_heads(m, _keep_pattern(m))
    keep_ffn(m, {f.unit: list(range(0, 48, 2)) for f in get_adapter(m).ffn(m)})


def _generate(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    enc = {k: v for k, v in batch.items() if not k.startswith("decoder")}
    with torch.no_grad():
        return m.generate(**enc, max_new_tokens=6, do_sample=False, num_beams=1)


@pytest.mark.parametrize("family", FAMILIES)
def test_layers_heads_ffn_pruned_model_reloads_identically(family, tmp_path, tokenizer):
    m = tiny(family)
    batch = inputs(m)
    before = sf.models.num_params(m)
    _reshape(m)
    assert sf.models.num_params(m) < before
    assert all(len(s.layers) == 1 for s in get_adapter(m).stacks(m))
    want = logits(m, batch)
    gen = _generate(m, batch) if hasattr(m, "generate") and m.can_generate() else None
    sf.save(m, tokenizer, tmp_path / "m")
    r, _ = sf.load(str(tmp_path / "m"))
    assert type(r) is type(m)
    torch.testing.assert_close(logits(r, batch), want, atol=0, rtol=0)
    if gen is not None:
        assert torch.equal(_generate(r, batch), gen)


@pytest.mark.parametrize("family", ["llama", "marian"])
def test_generation_after_reload_in_a_fresh_process(family, tmp_path, tokenizer):
    import json
    import subprocess
    import sys

    m = tiny(family)
    _reshape(m)
    batch = inputs(m)
    sf.save(m, tokenizer, tmp_path / "m")
    code = ("import json, sys, torch, slimformer as sf\n"
            "m, _ = sf.load(sys.argv[1]); b = {k: torch.tensor(v) for k, v in json.loads(sys.argv[2]).items()}\n"
            "print(json.dumps(m.generate(**b, max_new_tokens=6, do_sample=False, num_beams=1).tolist()))")
    enc = {k: v.tolist() for k, v in batch.items() if not k.startswith("decoder")}
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m"), json.dumps(enc)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-1500:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == _generate(m, batch).tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_profile_and_generation_profile(family, tokenizer):
    from slimformer.generation import generation_profile
    from slimformer.profile import profile_model

    m = tiny(family)
    prof = profile_model(m, tokenizer, seq_len=8, batch=1, n_threads=1, runs=2)
    kinds = set(prof["by_kind"])
    assert {"embeddings", "attention", "ffn"} <= kinds
    assert ("cross-attention" in kinds) == bool(m.config.is_encoder_decoder)
    assert sum(r["params"] for r in prof["rows"]) == sf.models.num_params(m)
    if m.can_generate():
        g = generation_profile(m, tokenizer, prompt_len=8, new_tokens=3, runs=1)
        assert g["tokens_per_s"] > 0 and g["kv_cache_bytes"] > 0


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_decoder_onnx_export_with_kv_cache_generates_the_same_tokens(family, tmp_path, tokenizer):
    from slimformer.deploy import export_onnx
    from slimformer.export_generative import OrtDecoder

    m = tiny(family)
    keep_heads(m, _keep_pattern(m))  # uneven head counts per layer
    info = export_onnx(m, tokenizer, tmp_path / "m.onnx")
    assert info["kind"] == "decoder with KV cache" and info["generated_tokens_equal"] and info["max_abs_diff"] < 1e-4
    prompt = torch.randint(1000, 2000, (1, 5))
    with torch.no_grad():
        ref = m.generate(input_ids=prompt, max_new_tokens=5, do_sample=False, num_beams=1)
    assert (OrtDecoder(tmp_path / "m.onnx").generate(prompt.numpy(), 5) == ref.numpy()).all()


@pytest.mark.parametrize("family", ["marian", "t5"])
def test_encoder_decoder_onnx_export_with_kv_cache_translates_the_same(family, tmp_path, tokenizer):
    from slimformer.deploy import export_onnx
    from slimformer.export_generative import OrtSeq2Seq

    m = tiny(family)
    keep_heads(m, _keep_pattern(m))  # self and cross attention pruned differently per layer
    info = export_onnx(m, tokenizer, tmp_path / "m.onnx")
    assert info["kind"] == "encoder-decoder with KV cache" and info["generated_tokens_equal"]
    assert sorted(f.name for f in tmp_path.glob("*.onnx")) == ["m.decoder-init.onnx", "m.decoder.onnx", "m.onnx"]
    ids = torch.randint(1000, 2000, (1, 6))
    with torch.no_grad():
        ref = m.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False,
                         num_beams=1, forced_eos_token_id=None)
    got = OrtSeq2Seq(tmp_path / "m.onnx").generate(ids.numpy(), np.ones((1, 6), np.int64), 5)
    assert (got == ref.numpy()).all()
