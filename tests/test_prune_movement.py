"""Learned-score movement pruning: the straight-through gradient of the scores, the cubic schedule, folding the
masks, block mode's physical removal, and the step on a tiny task."""
from __future__ import annotations

import copy

import pytest
import torch

import slimformer as sf
from conftest import write_tiny_sst2
from families import inputs, logits, tiny
from slimformer.errors import SlimformerError
from slimformer.prune.movement import PruneMovement, build_groups, prune_movement, remove_empty_units
from slimformer.prune.movement_masks import HOLDER, Plan, attach, fold, keep_fraction, kept_count, unit_masks


def _plan(model, variant="hard", block=False, keep=1.0):
    plan = Plan(variant, build_groups(model, PruneMovement(sparsity=0.5, block=block)))
    attach(model, plan)
    plan.set_keep(keep)
    return plan


@pytest.mark.parametrize("variant,keep", [("hard", 1.0), ("hard", 0.4), ("soft", 0.4)])
def test_scores_get_the_papers_gradient_dL_dWmasked_times_W(variant, keep):
    """Straight-through estimator (Sanh et al. eq. 4-5): dL/dS = dL/dW' * W, with W' = W * M the weight used;
    checked against autograd on W' as a leaf of the same model."""
    model = tiny("bert")
    batch = inputs(model)
    ref = copy.deepcopy(model)  # a plain model: its weights will be the leaves W' = W * M
    plan = _plan(model, variant, keep=keep)
    torch.manual_seed(0)
    for s in plan.scores.values():  # distinct scores, so the top-k is well defined
        s.data.normal_()
    plan.set_keep(keep)
    model(**batch).logits.square().sum().backward()
    ref_mods = dict(ref.named_modules())
    for name, mod in plan.modules.items():
        ref_mods[name].weight.data.copy_(mod.weight.detach())
    ref(**batch).logits.square().sum().backward()
    for g in plan.groups.values():
        name = g.targets[0][0]
        w = plan.modules[name].parametrizations.weight.original.detach()
        torch.testing.assert_close(plan.scores[g.key].grad, ref_mods[name].weight.grad * w, atol=1e-6, rtol=1e-5)
    if keep < 1:
        assert any(bool((plan.scores[g.key].grad[plan.modules[g.targets[0][0]].weight == 0] != 0).any())
                   for g in plan.groups.values())  # pruned weights still get a score gradient (the STE)


def test_magnitude_learns_nothing_and_keeps_the_largest_weights():
    model = tiny("bert")
    plan = _plan(model, "magnitude", keep=0.25)
    assert plan.scores is None and not hasattr(model, HOLDER)
    for name, m in plan.modules.items():
        w = m.parametrizations.weight.original.detach().abs()
        kept = m.weight.detach() != 0
        assert int(kept.sum()) == kept_count(0.25, w.numel())
        assert w[kept].min() >= w[~kept].max()


def test_cubic_schedule_hits_its_sparsity_at_every_step():
    total, warm, cool, final = 40, 4, 8, 0.1
    ks = [keep_fraction(t, total, warm, cool, final) for t in range(total)]
    assert ks[:warm] == [1.0] * warm and ks[-cool:] == [final] * cool
    assert all(a >= b for a, b in zip(ks, ks[1:]))  # never un-prunes
    for t in range(warm, total - cool):  # s_t = s_f + (s_i - s_f)(1 - x)^3 (Zhu & Gupta; reference schedule)
        x = (t - warm) / (total - warm - cool)
        assert ks[t] == pytest.approx(final + (1 - final) * (1 - x) ** 3)
    model = tiny("bert")
    plan = _plan(model, "hard")
    for s in plan.scores.values():
        s.data.normal_()
    for t in range(total):  # the masks the model computes with carry exactly the scheduled sparsity
        plan.set_keep(ks[t])
        for m in plan.modules.values():
            assert int((m.weight != 0).sum()) == kept_count(ks[t], m.weight.numel())


def test_soft_threshold_keeps_the_scheduled_fraction_overall():
    model = tiny("bert")
    plan = _plan(model, "soft")
    for s in plan.scores.values():
        s.data.normal_()
    plan.set_keep(0.3)
    kept = sum(int((m.weight != 0).sum()) for m in plan.modules.values())
    total = sum(m.weight.numel() for m in plan.modules.values())
    assert abs(kept / total - 0.3) < 0.01
    reg = plan.regularizer()
    assert 0 < float(reg.detach()) < 1 and reg.requires_grad


def test_per_kind_threshold_keeps_the_fraction_of_heads_and_of_neurons_separately():
    model = tiny("bert")
    plan = Plan("soft", build_groups(model, PruneMovement(sparsity=0.5, block=True)), by_kind=True)
    attach(model, plan)
    for g in plan.groups.values():  # heads score far above neurons: one global threshold keeps heads first
        plan.scores[g.key].data = torch.randn(g.shape) + (10.0 if g.kind == "heads" else 0.0)

    def kept(kind):
        groups = [g for g in plan.groups.values() if g.kind == kind]
        total = sum(g.weights * g.shape[0] for g in groups)
        return sum(g.weights * int(unit_masks(plan)[g.key].sum()) for g in groups) / total, \
            max(g.weights for g in groups) / total

    plan.set_keep(0.5)
    for kind in ("heads", "ffn"):
        frac, unit = kept(kind)
        assert abs(frac - 0.5) <= unit + 1e-9
    plan.by_kind = False
    plan.set_keep(0.5)
    assert kept("heads")[0] > 0.5 + kept("heads")[1] and kept("ffn")[0] < 0.5
    with pytest.raises(SlimformerError, match="per_kind"):
        PruneMovement(sparsity=0.5, threshold="per_kind")


def test_folding_reproduces_the_masked_model_and_leaves_a_plain_model():
    model = tiny("bert")
    batch = inputs(model)
    plan = _plan(model, "hard")
    for s in plan.scores.values():
        s.data.normal_()
    plan.set_keep(0.2)
    want = logits(model, batch)
    fold(model, plan)
    assert not hasattr(model, HOLDER) and not any(hasattr(m, "parametrizations") for m in model.modules())
    torch.testing.assert_close(logits(model, batch), want, atol=1e-6, rtol=0)
    assert set(model.state_dict()) == set(tiny("bert").state_dict())


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_block_pruned_model_equals_the_physically_sliced_one(family):
    """Whole heads (whole key/value groups under GQA) and neurons emptied by block scores, then removed."""
    model = tiny(family)
    batch = inputs(model)
    plan = _plan(model, "hard", block=True)
    for s in plan.scores.values():
        s.data.normal_()
    plan.set_keep(0.5)
    masks = unit_masks(plan)
    assert all(0 < int(m.sum()) < m.numel() for m in masks.values())
    want = logits(model, batch)
    params = sum(p.numel() for p in model.parameters())
    fold(model, plan)
    torch.testing.assert_close(logits(model, batch), want, atol=1e-5, rtol=0)
    info = remove_empty_units(model, plan, masks)
    assert sum(p.numel() for p in model.parameters()) < params - sum(s.numel() for s in plan.scores.values())
    assert all(v == 1 for v in info["heads_kept"].values()) or family == "bert"
    torch.testing.assert_close(logits(model, batch), want, atol=1e-5, rtol=0)


def test_block_mode_refuses_a_fused_qkv_model_in_one_line():
    with pytest.raises(SlimformerError, match="fused qkv") as e:
        PruneMovement(sparsity=0.5, block=True, kd=0).preflight(tiny("gpt2"), None)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("variant,block", [("hard", False), ("soft", False), ("magnitude", False), ("hard", True)])
def test_step_trains_prunes_to_the_target_and_reloads(variant, block, tiny_bert, tokenizer, tmp_path):
    (tmp_path / "data").mkdir()
    task = write_tiny_sst2(tmp_path / "data", n=32)
    model = tiny_bert(layers=2, heads=4, hidden=32, ffn=64)
    teacher = copy.deepcopy(model)
    cfg = PruneMovement(variant=variant, sparsity=0.75, block=block, max_steps=8, batch_size=8, save_steps=8,
                        score_lr=0.1, lr=1e-3)
    out, info = prune_movement(model, teacher, tokenizer, task, cfg, tmp_path / "work", max_len=16)
    assert info["train"]["train_loss"] is not None
    if block:
        assert info["heads_kept"] and all(v == 1 for v in info["heads_kept"].values())
        assert all(v == 16 for v in info["ffn_kept"].values())
    else:
        assert info["sparsity"] == pytest.approx(0.75, abs=0.01 if variant != "soft" else 0.03)
    assert info["remaining"] == pytest.approx(0.25, abs=0.03)
    batch = inputs(out)
    sf.save(out, tokenizer, tmp_path / "m")
    again, _ = sf.load(str(tmp_path / "m"))
    torch.testing.assert_close(logits(again, batch), logits(out, batch), atol=1e-5, rtol=0)


def test_sparse_format_reloads_identical_weights_and_is_smaller(tokenizer, tmp_path):
    from slimformer.prune.sparse_io import SPARSE_FILE, load_sparse, save_sparse

    model = tiny("bert")
    plan = _plan(model, "hard")
    for s in plan.scores.values():
        s.data.normal_()
    plan.set_keep(0.1)
    fold(model, plan)
    sf.save(model, tokenizer, tmp_path / "dense")
    save_sparse(model, tokenizer, tmp_path / "sparse")
    assert not (tmp_path / "sparse" / "model.safetensors").exists()
    dense_bytes = (tmp_path / "dense" / "model.safetensors").stat().st_size
    assert (tmp_path / "sparse" / SPARSE_FILE).stat().st_size < dense_bytes
    back, _ = load_sparse(tmp_path / "sparse")
    want = model.state_dict()
    assert set(back.state_dict()) == set(want)
    assert all(torch.equal(v, want[k]) for k, v in back.state_dict().items())
    with pytest.raises(SlimformerError, match="no model.sparse.safetensors"):
        load_sparse(tmp_path / "dense")


def test_kernel_curve_checks_the_sparse_product_and_reports_both_kernels():
    from slimformer.prune.sparse_io import kernel_curve

    rows = kernel_curve(out_features=16, in_features=8, rows=4, threads=1, sparsities=[0.5], budget_s=0.01)
    assert rows[0]["sparsity"] == 0.5 and rows[0]["dense_ms"] > 0 and rows[0]["csr_ms"] > 0


@pytest.mark.parametrize("shape", ["encoder-decoder", "decoder"])
def test_weight_level_movement_runs_on_generative_shapes(shape, tokenizer, tmp_path):
    """The step matrix runs block mode; this runs the weight-level scores on Marian and Llama."""
    from test_step_matrix import SHAPES, _task

    model = tiny(SHAPES[shape])
    cfg = PruneMovement(sparsity=0.5, max_steps=2, batch_size=4, kd=0, ce=1)
    out, info = prune_movement(model, model, tokenizer, _task(shape), cfg, tmp_path / "w", max_len=16)
    assert info["remaining"] == pytest.approx(0.5, abs=0.01)
    assert torch.isfinite(logits(out, inputs(out))).all()


def test_an_interrupted_run_resumes_to_the_same_model(tiny_bert, tokenizer, tmp_path, monkeypatch):
    """Scores and masked weights are in the Trainer's checkpoints: killed after step 2 of 4, resumed, the folded
    model equals an uninterrupted run's."""
    import slimformer.prune.movement as mv

    (tmp_path / "data").mkdir()
    task = write_tiny_sst2(tmp_path / "data", n=32)
    cfg = PruneMovement(sparsity=0.75, max_steps=4, batch_size=8, save_steps=2, lr=1e-3, kd=0, ce=1)
    want, _ = prune_movement(tiny_bert(), None, tokenizer, task, cfg, tmp_path / "a", max_len=16)

    plain = mv.schedule_callback

    def dying(plan, c):
        cb = plain(plan, c)
        step_begin = cb.on_step_begin

        def on_step_begin(args, state, control, **kw):
            if state.global_step == 2:
                raise KeyboardInterrupt
            step_begin(args, state, control, **kw)

        cb.on_step_begin = on_step_begin
        return cb

    monkeypatch.setattr(mv, "schedule_callback", dying)
    with pytest.raises(KeyboardInterrupt):
        prune_movement(tiny_bert(), None, tokenizer, task, cfg, tmp_path / "b", max_len=16)
    monkeypatch.setattr(mv, "schedule_callback", plain)
    got, info = prune_movement(tiny_bert(), None, tokenizer, task, cfg, tmp_path / "b", max_len=16, resume=True)
    assert str(info["train"]["resumed_from"]).endswith("checkpoint-2")
    for k, v in want.state_dict().items():
        torch.testing.assert_close(got.state_dict()[k], v, atol=1e-6, rtol=0)


def test_magnitude_score_init_starts_from_magnitude_pruning():
    """score_init magnitude: hard movement's first masks are magnitude pruning's (weights mode), and block scores
    rank heads and neurons by the norm of the weights they own (as prune_heads / prune_ffn's magnitude does)."""
    from slimformer.prune.importance import magnitude_importance

    model, ref = tiny("bert"), tiny("bert")
    plan = Plan("hard", build_groups(model, PruneMovement(sparsity=0.5)))
    attach(model, plan, "magnitude")
    plan.set_keep(0.25)
    mag = _plan(ref, "magnitude", keep=0.25)
    for name, m in plan.modules.items():
        assert torch.equal(m.weight != 0, mag.modules[name].weight != 0)
    model = tiny("llama")
    plan = Plan("hard", build_groups(model, PruneMovement(sparsity=0.5, block=True)))
    want = {**magnitude_importance(model, "heads"), **magnitude_importance(model, "ffn")}
    attach(model, plan, "magnitude")
    for g in plan.groups.values():
        expect = want[g.unit] / want[g.unit].mean()
        torch.testing.assert_close(plan.scores[g.key].detach(), expect, atol=1e-5, rtol=1e-5)


def test_gradient_score_init_ranks_heads_and_neurons_like_prune_heads(tiny_bert, tokenizer, tmp_path):
    """score_init gradient (block only): the first scores are prune_heads / prune_ffn's gradient importance on
    the same examples, scaled to mean 1; weight-level mode refuses it in one line."""
    from slimformer.prune.importance import importance, importance_batches
    from slimformer.prune.movement import gradient_init

    (tmp_path / "data").mkdir()
    task = write_tiny_sst2(tmp_path / "data", n=32)
    model = tiny_bert(layers=2, heads=4, hidden=32, ffn=64)
    groups = build_groups(model, PruneMovement(sparsity=0.5, block=True, score_init="gradient"))
    got = gradient_init(model, groups, tokenizer, task, 16, seed=3, examples=32)
    batches = importance_batches(tokenizer, task, 32, 16, 32, 3, model)
    want = {**importance(model, "heads", "gradient", batches, normalize=False, task=task),
            **importance(model, "ffn", "gradient", batches, normalize=False, task=task)}
    for g in groups.values():
        torch.testing.assert_close(got[g.key], want[g.unit] / want[g.unit].mean(), atol=1e-5, rtol=1e-5)
    plan = Plan("hard", groups)
    attach(model, plan, got)
    plan.set_keep(0.5)
    masks = unit_masks(plan)
    for g in groups.values():  # the kept half is the most important half
        top = torch.topk(want[g.unit], g.shape[0] // 2).indices
        assert set(masks[g.key].nonzero().flatten().tolist()) == set(top.tolist())
    with pytest.raises(SlimformerError, match="needs block: true"):
        PruneMovement(sparsity=0.5, score_init="gradient")
