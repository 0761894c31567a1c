"""One-shot pruning from calibration data (Wanda, SparseGPT, N:M) and ShortGPT's block-influence layer dropping."""
from __future__ import annotations

import copy

import pytest
import torch
from families import inputs, logits, tiny

import slimformer as sf
from slimformer.errors import SlimformerError
from slimformer.models.linear import weight_oi
from slimformer.prune.layers import block_influence
from slimformer.prune.layerwise import for_each_layer
from slimformer.prune.oneshot import (
    PruneOneShot,
    hessian,
    prune_oneshot,
    row_mask,
    sparsegpt_prune,
    wanda_scores,
)
from slimformer.prune.unstructured import prunable


def _batches(model, n=3):
    return [inputs(model, batch=2, seq=8, seed=s) for s in range(n)]


def test_row_mask_unstructured_and_n_m():
    score = torch.rand(6, 16)
    m = row_mask(score, 0.25, None)
    assert (m.sum(1) == 4).all()
    assert (score[m].max() <= score[~m].reshape(6, -1).max())
    m24 = row_mask(score, None, (2, 4))
    groups = m24.reshape(6, 4, 4)
    assert (groups.sum(-1) == 2).all()
    s = score.reshape(6, 4, 4)  # the two pruned are the two lowest of each group
    assert torch.equal(groups, s <= s.sort(-1).values[..., 1:2])


def test_wanda_scores_are_weight_times_input_norm():
    w = torch.randn(3, 4)
    xs = [torch.randn(5, 4), torch.randn(2, 4)]
    norm = torch.cat(xs).norm(dim=0)
    torch.testing.assert_close(wanda_scores(w, xs), w.abs() * norm[None, :])


def test_sparsegpt_reconstructs_better_than_magnitude():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 32, generator=g) @ torch.randn(32, 32, generator=g)  # correlated inputs
    w = torch.randn(16, 32, generator=g)
    for nm, sp in ((None, 0.5), ((2, 4), None)):
        pruned = sparsegpt_prune(w, hessian([x], 32), sp, nm, block=8)
        mag = w.masked_fill(row_mask(w.abs(), sp, nm), 0.0)
        assert (pruned == 0).float().mean() == pytest.approx(0.5)
        if nm:
            assert ((pruned == 0).reshape(16, 8, 4).sum(-1) == 2).all()
        err = ((pruned - w) @ x.T).norm()
        assert err < 0.9 * ((mag - w) @ x.T).norm()  # the OBS update compensates (about 0.8 here)


def test_layerwise_feeds_each_layer_its_real_inputs():
    model = tiny("llama")
    b = _batches(model, 1)
    seen_q: list[torch.Tensor] = []
    names = {n: m for n, m in model.named_modules() if n.endswith("self_attn.q_proj")}
    for_each_layer(model, b, names, lambda layer, seen: seen_q.extend(v[0] for v in seen.values()))
    ref: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda m, a, o: ref.append(a[0][b[0]["attention_mask"].bool()]))
             for m in names.values()]
    with torch.no_grad():
        model(**b[0])
    for h in hooks:
        h.remove()
    assert len(seen_q) == len(ref) == 2
    for a, r in zip(seen_q, ref):
        torch.testing.assert_close(a, r, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["bert", "marian", "llama", "gpt2"])
@pytest.mark.parametrize("method", ["wanda", "sparsegpt", "magnitude"])
def test_every_pruned_matrix_has_the_pattern(family, method):
    model = tiny(family)
    cfg = PruneOneShot(method=method, pattern="2:4")
    info = prune_oneshot(model, cfg, _batches(model))
    assert info["sparsity"] == pytest.approx(0.5)
    for name, mod in prunable(model).items():
        w = weight_oi(mod)  # [out, in] (GPT-2's Conv1D stores [in, out])
        assert ((w == 0).reshape(w.shape[0], -1, 4).sum(-1) >= 2).all(), name
    assert torch.isfinite(logits(model, inputs(model))).all()


def test_pattern_and_sparsity_are_validated():
    for bad in ({"sparsity": 1.0}, {"pattern": "4:2"}, {"pattern": "2-4"}, {}, {"sparsity": 0.5, "pattern": "2:4"}):
        with pytest.raises(SlimformerError):
            PruneOneShot(**bad)


def test_block_influence_drops_the_layer_that_does_nothing(tokenizer, tmp_path):
    import transformers as tf
    from test_step_matrix import _task

    from slimformer.steps import Context, apply_step, parse_step

    cfg = tf.LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, vocab_size=30522)
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # pre-norm layer 1 with zero output projections passes its input through
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()
    bi = block_influence(model, _batches(model))
    assert bi[1] == pytest.approx(0.0, abs=1e-6) and min(bi[0], bi[2]) > 1e-3
    ctx = Context(tokenizer=tokenizer, task=_task("decoder"), work_dir=tmp_path, seed=1, max_len=16)
    ref = copy.deepcopy(model)
    out = apply_step(model, parse_step({"step": "drop_layers", "keep": 2, "strategy": "block_influence",
                                        "calib_examples": 8}, 0), ctx)
    assert ctx.info["kept_layers"] == [0, 2]
    batch = inputs(out)
    torch.testing.assert_close(logits(out, batch), logits(ref, batch), atol=1e-5, rtol=0)  # it really did nothing
    sf.save(out, tokenizer, tmp_path / "m")
    torch.testing.assert_close(logits(sf.load(str(tmp_path / "m"))[0], batch), logits(out, batch), atol=1e-5, rtol=0)


@pytest.mark.parametrize("step", ["distill", "finetune"])
def test_recovery_keeps_the_zeros_of_a_one_shot_prune(step, tokenizer, tmp_path):
    from slimformer.steps import Context, apply_step, parse_step
    from test_step_matrix import _task

    model = tiny("llama")
    ctx = Context(tokenizer=tokenizer, task=_task("decoder"), work_dir=tmp_path, teacher=copy.deepcopy(model),
                  seed=1, max_len=16)
    model = apply_step(model, parse_step({"step": "prune_oneshot", "method": "wanda", "pattern": "2:4",
                                          "calib_examples": 8}, 0), ctx)
    zeros = {n: m.weight == 0 for n, m in prunable(model).items()}
    before = {n: m.weight.detach().clone() for n, m in prunable(model).items()}
    train = {"distill": {"kd": 1.0, "max_steps": 3, "batch_size": 4, "lr": 1e-2},
             "finetune": {"epochs": 1, "max_train_examples": 12, "batch_size": 4, "lr": 1e-2}}[step]
    model = apply_step(model, parse_step({"step": step, "keep_zeros": True, **train}, 1), ctx)
    after = prunable(model)
    assert any(not torch.equal(after[n].weight, w) for n, w in before.items())  # it trained
    for n, z in zeros.items():
        assert (after[n].weight[z] == 0).all(), n
