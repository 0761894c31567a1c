"""PET sharing in an encoder-decoder: stored once, reloads identically, the Q/K swap computes what it claims."""
from __future__ import annotations

import copy

import pytest
import torch

import slimformer as sf
from families import inputs, logits, tiny
from slimformer.errors import SlimformerError
from slimformer.models import get_adapter, num_params
from slimformer.models.resize import resized_config
from slimformer.share import SharePairs, pairings, pet_share, share_pairs


def tiny_4x4(family: str = "marian", seed: int = 0) -> torch.nn.Module:
    """A tiny random encoder-decoder with 4 encoder and 4 decoder layers (built through the family table)."""
    base = tiny(family)
    cfg = resized_config(base.config, stacks={"encoder": {"layers": 4}, "decoder": {"layers": 4}})
    torch.manual_seed(seed)
    return type(base)(cfg).eval()


def _enc(model, i):
    return get_adapter(model).layers(model, "encoder")[i]


def _dec(model, i):
    return get_adapter(model).layers(model, "decoder")[i]


def test_pairs_alias_parameters_and_save_once(tokenizer, tmp_path):
    model = tiny_4x4()
    before = num_params(model)
    per_layer = {s: sum(p.numel() for p in layer.parameters()) for s, layer in (("e", _enc(model, 0)),
                                                                                 ("d", _dec(model, 0)))}
    sf.save(model, tokenizer, tmp_path / "dense")
    share_pairs(model, SharePairs())
    e0, e2, d1, d3 = _enc(model, 0), _enc(model, 2), _dec(model, 1), _dec(model, 3)
    assert e2.self_attn.q_proj.weight is e0.self_attn.k_proj.weight  # swapped on the second pass
    assert e2.self_attn.k_proj.weight is e0.self_attn.q_proj.weight
    assert e2.fc1.weight is e0.fc1.weight and e2 is not e0
    assert d3.self_attn.v_proj.weight is d1.self_attn.v_proj.weight
    assert d1.encoder_attn.q_proj.weight is d1.self_attn.q_proj.weight  # decoder Query tied
    assert d1.encoder_attn.k_proj.weight is not d1.self_attn.k_proj.weight
    q = d1.self_attn.q_proj.weight.numel() + d1.self_attn.q_proj.bias.numel()
    # two encoder and two decoder layers are reused, and the two kept decoder layers store one Query each
    assert num_params(model) == before - 2 * per_layer["e"] - 2 * per_layer["d"] - 2 * q
    sf.save(model, tokenizer, tmp_path / "pet")
    from safetensors import safe_open

    from slimformer.fsutil import weights_size

    with safe_open(str(tmp_path / "pet" / "model.safetensors"), "pt") as f:
        assert sum(1 for k in f.keys() if k.endswith("fc1.weight")) == 4  # 2 encoder + 2 decoder, not 8
    assert weights_size(tmp_path / "dense") - weights_size(tmp_path / "pet") >= 4 * (before - num_params(model)) - 4096
    batch = inputs(model, seq=8)
    reloaded, _ = sf.load(str(tmp_path / "pet"))
    torch.testing.assert_close(logits(reloaded, batch), logits(model, batch), atol=0, rtol=0)
    assert _enc(reloaded, 2).self_attn.q_proj.weight is _enc(reloaded, 0).self_attn.k_proj.weight
    assert num_params(reloaded) == num_params(model)


def test_qk_swap_equals_an_unshared_model_holding_the_swapped_weights():
    model = tiny_4x4(seed=3)
    with torch.no_grad():  # sharper attention than the random init's near-uniform one, so a swap shows
        for i in range(4):
            _enc(model, i).self_attn.q_proj.weight.mul_(30)
            _enc(model, i).self_attn.k_proj.weight.mul_(30)
    ref = copy.deepcopy(model)
    pet_share(model, "encoder", [[0, 2], [1, 3]], swap_qk=True)
    with torch.no_grad():
        for first, second in ((0, 2), (1, 3)):
            src, dst = _enc(ref, first), _enc(ref, second)
            dst.load_state_dict(src.state_dict())
            for a, b in (("q_proj", "k_proj"), ("k_proj", "q_proj")):
                getattr(dst.self_attn, a).weight.copy_(getattr(src.self_attn, b).weight)
                getattr(dst.self_attn, a).bias.copy_(getattr(src.self_attn, b).bias)
    batch = inputs(model, seq=9)
    torch.testing.assert_close(logits(model, batch), logits(ref, batch), atol=1e-6, rtol=0)
    # and it is not a no-op: without the swap the same sharing computes something else
    plain = copy.deepcopy(ref)
    with torch.no_grad():
        for first, second in ((0, 2), (1, 3)):
            _enc(plain, second).load_state_dict(_enc(plain, first).state_dict())
    assert not torch.allclose(logits(plain, batch), logits(model, batch), atol=1e-4)


def test_beam_search_is_token_identical_after_reload(tokenizer, tmp_path):
    model = tiny_4x4(seed=1)
    share_pairs(model, SharePairs())
    sf.save(model, tokenizer, tmp_path / "pet")
    reloaded, _ = sf.load(str(tmp_path / "pet"))
    batch = inputs(model, seq=8)
    batch.pop("decoder_input_ids")
    kw = dict(num_beams=5, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    with torch.no_grad():
        want, got = model.generate(**batch, **kw), reloaded.generate(**batch, **kw)
    assert torch.equal(want, got)


@pytest.mark.parametrize("family", ["bart", "t5"])
def test_other_encoder_decoders_share_and_reload(family, tokenizer, tmp_path):
    model = tiny_4x4(family)
    before = num_params(model)
    share_pairs(model, SharePairs())
    att = {a.unit: a for a in get_adapter(model).attention(model)}
    assert att["encoder.2.self"].q.weight is att["encoder.0.self"].k.weight
    assert att["decoder.3.cross"].q.weight is att["decoder.1.self"].q.weight
    assert num_params(model) < before
    batch = inputs(model, seq=8)
    sf.save(model, tokenizer, tmp_path / "m")
    reloaded, _ = sf.load(str(tmp_path / "m"))
    torch.testing.assert_close(logits(reloaded, batch), logits(model, batch), atol=0, rtol=0)


def test_pairings_and_bad_pairs():
    assert pairings(4) == [[[0, 1], [2, 3]], [[0, 2], [1, 3]], [[0, 3], [1, 2]]]
    assert len(pairings(6)) == 15 and [[0, 1]] in pairings(3)
    model = tiny_4x4()
    for pairs, msg in (([[0, 2], [2, 3]], "more than one pair"), ([[0, 4]], "unknown layer index 4"),
                       ([[0]], "two layer indices")):
        with pytest.raises(SlimformerError, match=msg):
            SharePairs(encoder=pairs).preflight(model, None)
    with pytest.raises(SlimformerError, match="search needs task data"):
        SharePairs(decoder="search").preflight(model, None)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_refuses_single_stack_models_in_one_line(family):
    with pytest.raises(SlimformerError, match="encoder-decoder") as e:
        SharePairs().preflight(tiny(family), None)
    assert "\n" not in str(e.value)


def toy_translation(n: int = 24):
    from slimformer.tasks.translation import Pair, TranslationTask

    words = "the cat sat on a mat while two dogs ran in the park near old trees and a small river".split()
    rows = [" ".join(words[(i * 7 + j) % len(words)] for j in range(6 + i % 5)) for i in range(n)]
    pairs = [Pair(t, " ".join(reversed(t.split()))) for t in rows]
    return TranslationTask("toy", {"train": pairs, "dev": pairs[:6]}, beams=1, max_new_tokens=4)


def test_search_scores_candidates_by_a_short_run_and_keeps_the_best(tokenizer, tmp_path):
    from slimformer.steps import Context, apply_step, parse_step

    model = tiny_4x4()
    ctx = Context(tokenizer=tokenizer, task=toy_translation(), work_dir=tmp_path, seed=1, max_len=16)
    cfg = parse_step({"step": "share_pairs", "encoder": "search", "decoder": None, "search_steps": 2,
                      "search_examples": 4, "max_candidates": 2, "batch_size": 4}, 0)
    out = apply_step(model, cfg, ctx)
    found = ctx.info["search_encoder"]
    assert [c["pairs"] for c in found["candidates"]] == pairings(4)[:2]
    loss = {str(c["pairs"]): c["dev_loss"] for c in found["candidates"]}
    assert loss[str(found["best"])] == min(loss.values())
    first, second = found["best"][0]
    assert _enc(out, second).fc1.weight is _enc(out, first).fc1.weight
    assert _dec(out, 1).fc1.weight is not _dec(out, 0).fc1.weight  # decoder left unshared
    assert not list(tmp_path.glob("share-search-*"))  # the candidates' runs are cleaned up
