"""PET's distillation loss and the `pet` step end to end on tiny random encoder-decoders."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import slimformer as sf
from families import inputs, logits, tiny
from slimformer.distill import losses as L
from slimformer.distill.pet import Pet, PetStudent, build_student
from slimformer.distill.pet_loss import PROJ, seq2seq_hidden_loss, stack_layer_maps
from slimformer.errors import SlimformerError
from slimformer.models import get_adapter, num_params
from slimformer.steps import Context, apply_step, parse_step
from test_pet_share import toy_translation


def test_label_smoothed_ce_matches_its_definition():
    torch.manual_seed(0)
    logits_, gold = torch.randn(2, 5, 7), torch.tensor([[1, 2, 3, -100, -100], [0, 6, 5, 4, 1]])
    eps, keep = 0.1, gold.ne(-100)
    logp = logits_.log_softmax(-1)[keep]
    want = ((1 - eps) * -logp.gather(-1, gold[keep].unsqueeze(-1)).squeeze(-1) - eps * logp.mean(-1)).mean()
    torch.testing.assert_close(L.hard_ce(logits_, gold, smoothing=eps), want, atol=1e-6, rtol=0)
    torch.testing.assert_close(L.hard_ce(logits_, gold), F.cross_entropy(logits_[keep], gold[keep]), atol=1e-6, rtol=0)


def test_hidden_term_averages_both_stacks_layer_maps_on_real_tokens():
    teacher = tiny("marian")
    student = build_student(teacher, PetStudent(width=16, encoder_layers=1, decoder_layers=2, heads=2))
    maps = stack_layer_maps(student, teacher)
    assert maps == {"encoder": [(0, 1)], "decoder": [(0, 0), (1, 1)]}
    torch.manual_seed(0)
    s = {f"{st}_hidden_states": tuple(torch.randn(2, 5, 32) for _ in range(n + 1))
         for st, n in (("encoder", 1), ("decoder", 2))}
    t = {f"{st}_hidden_states": tuple(torch.randn(2, 5, 32) for _ in range(3)) for st in ("encoder", "decoder")}
    masks = {"encoder": torch.ones(2, 5), "decoder": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])}
    got = seq2seq_hidden_loss(s, t, maps, masks)
    m = masks["decoder"].bool()

    def mse(a, b, keep=None):
        per = ((a - b) ** 2).mean(-1)
        return per[keep].mean() if keep is not None else per.mean()

    want = (mse(s["encoder_hidden_states"][1], t["encoder_hidden_states"][2])
            + mse(s["decoder_hidden_states"][1], t["decoder_hidden_states"][1], m)
            + mse(s["decoder_hidden_states"][2], t["decoder_hidden_states"][2], m)) / 3
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_student_is_built_through_the_family_table():
    teacher = tiny("marian")
    student = build_student(teacher, PetStudent(width=16, encoder_ffn=24, decoder_ffn=20, heads=2))
    ad = get_adapter(student)
    assert student.config.d_model == 16 and len(ad.layers(student, "encoder")) == 4
    assert [f.width for f in ad.ffn(student)] == [24] * 4 + [20] * 4
    assert all(a.heads == 2 for a in ad.attention(student))
    assert student.config.vocab_size == teacher.config.vocab_size
    assert teacher.config.d_model == 32  # untouched


def _ctx(tokenizer, tmp_path, model):
    return Context(tokenizer=tokenizer, task=toy_translation(), work_dir=tmp_path / "work",
                   teacher=copy.deepcopy(model).eval(), seed=1, max_len=16)


@pytest.mark.parametrize("head", ["mapping", "linear"])
def test_pet_step_end_to_end(head, tokenizer, tmp_path):
    teacher = tiny("marian")
    ctx = _ctx(tokenizer, tmp_path, teacher)
    cfg = parse_step({"step": "pet", "student": {"width": 16, "encoder_ffn": 24, "decoder_ffn": 20, "heads": 2},
                      "warmup": {"max_steps": 2, "head": head}, "max_steps": 2, "batch_size": 4, "save_steps": 1}, 0)
    cfg.preflight(teacher, ctx.task)
    student = apply_step(teacher, cfg, ctx)
    assert num_params(student) < num_params(teacher)
    info = ctx.info
    assert info["pet_share"]["params_before_after"][1] < info["pet_share"]["params_before_after"][0]
    assert sum(info["pet_warmup"]["label_shares"].values()) == pytest.approx(1.0, abs=1e-3)
    assert info["pet_distill"]["layer_maps"]["encoder"] == [[0, 0], [1, 0], [2, 1], [3, 1]]
    assert info["pet_distill"]["projections"] == 2
    assert not hasattr(student, PROJ) and not hasattr(student, "sf_warmup_head")
    assert (tmp_path / "work" / "distill" / "checkpoints").exists()  # Trainer checkpoints of a shared model
    ad = get_adapter(student)
    assert ad.layers(student, "encoder")[2].fc1.weight is ad.layers(student, "encoder")[0].fc1.weight
    sf.save(student, tokenizer, tmp_path / "pet")
    reloaded, _ = sf.load(str(tmp_path / "pet"))
    batch = inputs(student, seq=8)
    torch.testing.assert_close(logits(reloaded, batch), logits(student, batch), atol=0, rtol=0)


def test_pet_on_the_current_model_without_sharing_or_warmup(tokenizer, tmp_path):
    model = tiny("marian")
    ctx = _ctx(tokenizer, tmp_path, model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = apply_step(model, Pet(share=None, warmup=None, hidden=1.0, max_steps=2, batch_size=4), ctx)
    assert "pet_warmup" not in ctx.info and "pet_share" not in ctx.info
    assert ctx.info["pet_distill"]["projections"] == 0  # same width as the teacher: no projection
    assert any(not torch.equal(v, out.state_dict()[k]) for k, v in before.items())


def test_refusals_in_one_line():
    model = tiny("marian")
    for cfg, msg in ((Pet(student=PetStudent(encoder_layers=2)), "unknown layer index 2"),
                     (Pet(layer_map=[[0, 0]]), "layer_map is a strategy"),
                     (Pet(ce=0, kd=0, hidden=0), "every loss weight is 0")):
        with pytest.raises(SlimformerError, match=msg):
            cfg.preflight(model, toy_translation())
    for family in ("bert", "llama"):
        with pytest.raises(SlimformerError, match="inside an encoder-decoder"):
            Pet().preflight(tiny(family), None)


def test_a_pet_student_quantizes_to_int8_and_reloads(tokenizer, tmp_path):
    from test_pet_share import tiny_4x4

    from slimformer.share import SharePairs, share_pairs

    model, _ = share_pairs(tiny_4x4(), SharePairs())
    ctx = Context(tokenizer=tokenizer, task=None, work_dir=tmp_path / "work")
    out = apply_step(model, parse_step({"step": "quantize_dynamic", "backend": "torch", "guard": False}, 0), ctx)
    enc = get_adapter(out).layers(out, "encoder")
    assert enc[2].fc1 is enc[0].fc1 and enc[2].self_attn.q_proj is enc[0].self_attn.k_proj  # INT8 shared too
    sf.save(out, tokenizer, tmp_path / "q")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "q" / "model.safetensors"), "pt") as f:
        assert sum(1 for k in f.keys() if k.endswith("fc1.qweight")) == 4  # 2 encoder + 2 decoder, not 8
    reloaded, _ = sf.load(str(tmp_path / "q"))
    assert get_adapter(reloaded).layers(reloaded, "encoder")[3].fc2 is get_adapter(reloaded).layers(reloaded,
                                                                                                   "encoder")[1].fc2
    batch = inputs(out, seq=8)
    torch.testing.assert_close(logits(reloaded, batch), logits(out, batch), atol=1e-5, rtol=0)


def test_resized_config_refuses_what_the_family_cannot_express():
    from slimformer.models.resize import resized_config

    t5 = tiny("t5").config
    cfg = resized_config(t5, 16, {"encoder": {"layers": 3, "ffn": 24}, "decoder": {"ffn": 24, "heads": 2}})
    assert (cfg.d_model, cfg.num_layers, cfg.d_ff, cfg.num_heads, cfg.d_kv) == (16, 3, 24, 2, 8)
    for args, msg in (((16, {"encoder": {"ffn": 24}, "decoder": {"ffn": 20}}), "one config key"),
                      ((18, {"encoder": {"heads": 4}}), "not divisible"),
                      ((16, {"middle": {"layers": 2}}), "no middle stack"),
                      ((16, {"encoder": {"depth": 2}}), "unknown size field")):
        with pytest.raises(SlimformerError, match=msg):
            resized_config(t5, *args)
    with pytest.raises(SlimformerError, match="names no config key"):
        resized_config(tiny("bert").config, 16)
