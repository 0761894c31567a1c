"""The teacher side of distillation: one no-grad forward per batch, the disk cache, the printed layer map,
and masked-LM distillation between models that carry an MLM head."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForMaskedLM

from slimformer.distill import Distill, DistillGeneral, distill, distill_general, make_student
from slimformer.distill import losses as L
from slimformer.distill import mlm as mlm_mod
from slimformer.distill import step as step_mod
from slimformer.distill.trainer import DistillTrainer, LossWeights, teacher_logits_cache

from test_distill_train import WORDS, _task


class _Calls:
    """Counts a module's forward calls and records whether autograd was on in each."""

    def __init__(self, module: torch.nn.Module):
        self.grad: list[bool] = []
        self.handle = module.register_forward_hook(lambda *_: self.grad.append(torch.is_grad_enabled()))


def _params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_teacher_runs_once_per_batch_without_grad_and_stays_frozen(tiny_bert, tokenizer, tmp_path):
    teacher = tiny_bert(layers=4, seed=1)
    before = _params(teacher)
    student = make_student(teacher, every=2)
    calls = _Calls(teacher)  # after make_student: a deep copy would carry the hook along
    cfg = Distill(kd=1, ce=0.5, hidden=1, attention=1, max_steps=3, batch_size=8)
    distill(student, teacher, tokenizer, _task(), cfg, tmp_path, seed=3, max_len=16)
    assert calls.grad == [False, False, False]  # one forward per training step, all under no_grad
    for k, v in _params(teacher).items():
        assert torch.equal(v, before[k]), k
    assert all(p.requires_grad for p in teacher.parameters())  # not frozen for later use (make_student etc.)


def test_cached_teacher_is_not_run_during_training_and_cache_is_reused(tiny_bert, tokenizer, tmp_path):
    teacher = tiny_bert(layers=4, seed=1)
    cfg = Distill(kd=1, ce=0.5, epochs=3, batch_size=8, cache_teacher=True)  # 24 examples: 9 steps
    student, again = make_student(teacher, every=2), make_student(teacher, every=2)
    calls = _Calls(teacher)
    steps = _Calls(student)
    distill(student, teacher, tokenizer, _task(), cfg, tmp_path, seed=3, max_len=16)
    assert len(steps.grad) == 9
    assert calls.grad == [False]  # only the cache: 24 examples in one no-grad batch of 64
    distill(again, teacher, tokenizer, _task(), cfg, tmp_path, seed=3, max_len=16)
    assert len(calls.grad) == 1  # second run: read from disk, the teacher never runs


def test_cache_holds_teacher_logits_and_notices_other_data(tiny_bert, tokenizer, tmp_path):
    from slimformer.data import collator, encode

    teacher = tiny_bert(layers=2, seed=1)
    collate = collator(tokenizer)
    ds = encode(tokenizer, _task().split("train"), 16)
    path = tmp_path / "cache.safetensors"
    logits = teacher_logits_cache(teacher, ds, collate, path, batch_size=5)
    with torch.no_grad():
        direct = teacher(**collate([{k: v for k, v in ds[i].items() if k != "labels"} for i in range(len(ds))]))
    torch.testing.assert_close(logits, direct.logits, atol=1e-5, rtol=1e-4)
    calls = _Calls(teacher)
    teacher_logits_cache(teacher, ds, collate, path)
    assert calls.grad == []
    other = encode(tokenizer, _task(12).split("train")[::-1], 16)
    assert teacher_logits_cache(teacher, other, collate, path).shape[0] == 12 and calls.grad


def test_layer_map_is_printed(tiny_bert, tokenizer, tmp_path, monkeypatch):
    printed: list[str] = []
    monkeypatch.setattr(step_mod.console, "print", lambda *a, **k: printed.append(" ".join(map(str, a))))
    teacher = tiny_bert(layers=6, seed=1)
    cfg = Distill(kd=1, hidden=1, layer_map="last", max_steps=1, batch_size=8)
    _, stats = distill(make_student(teacher, every=2), teacher, tokenizer, _task(), cfg, tmp_path, seed=3,
                       max_len=16)
    text = "student 0 <- teacher 3, student 1 <- teacher 4, student 2 <- teacher 5"
    assert stats["layer_map_text"] == text
    assert any(text in p for p in printed)


def _tiny_mlm(layers: int, seed: int):
    torch.manual_seed(seed)
    cfg = AutoConfig.for_model("bert", vocab_size=30522, hidden_size=32, num_hidden_layers=layers,
                               num_attention_heads=4, intermediate_size=64, max_position_embeddings=160,
                               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return AutoModelForMaskedLM.from_config(cfg).eval()


def test_mlm_kd_and_ce_use_masked_tokens_only():
    """On MLM outputs, kd compares the predictions at masked positions (labels != -100) only; ce is L_mlm."""
    torch.manual_seed(0)
    s_logits, t_logits = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    labels = torch.full((2, 5), -100)
    labels[0, 1], labels[1, 3] = 4, 2
    trainer = DistillTrainer.__new__(DistillTrainer)
    trainer.weights, trainer.layer_map = LossWeights(kd=1, ce=1, temperature=2.0), [(0, 1)]
    terms = trainer.loss_terms(None, {"logits": s_logits}, {"logits": t_logits}, labels, None)
    rows_s = torch.stack([s_logits[0, 1], s_logits[1, 3]])
    rows_t = torch.stack([t_logits[0, 1], t_logits[1, 3]])
    torch.testing.assert_close(terms["kd"], L.kd_loss(rows_s, rows_t, 2.0))
    torch.testing.assert_close(terms["ce"], torch.nn.functional.cross_entropy(rows_s, torch.tensor([4, 2])))


def test_general_distillation_with_mlm_heads(tokenizer, tmp_path):
    text = tmp_path / "wiki.txt"
    text.write_text("\n".join(" ".join(WORDS[i:] + WORDS[:i]) for i in range(14)) * 3)
    teacher = _tiny_mlm(4, seed=1)
    student = make_student(teacher, every=2)
    start = _params(student)
    cfg = DistillGeneral(text=str(text), block_size=16, max_steps=3, batch_size=4, kd=1.0, ce=0.5, hidden=1.0,
                         attention=0.0)
    student, stats = distill_general(student, teacher, tokenizer, cfg, tmp_path / "g", seed=3)
    assert stats["weights"] == {"kd": 1.0, "ce": 0.5, "hidden": 1.0, "temperature": 2.0}
    assert stats["train_loss"] > 0
    assert any(not torch.equal(v, start[k]) for k, v in _params(student).items())


def test_general_distillation_reads_wikitext2(tiny_bert, tokenizer, tmp_path):
    """The shared WikiText-2 files (test + valid; train is absent) feed the task-agnostic step."""
    from pathlib import Path

    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext2"
    if not data.is_dir():
        pytest.skip("WikiText-2 not available")
    teacher = tiny_bert(layers=4, seed=1)
    cfg = DistillGeneral(text=str(data), block_size=32, max_blocks=8, max_steps=2, batch_size=4)
    _, stats = distill_general(make_student(teacher, every=2), teacher, tokenizer, cfg, tmp_path, seed=3)
    assert stats["blocks"] == 8


def test_general_distillation_resume_matches_uninterrupted(tiny_bert, tokenizer, tmp_path, monkeypatch):
    """The masked positions come from the RNG the Trainer checkpoints, so a resumed run ends identically."""
    from test_distill_train import _Interrupt

    text = tmp_path / "wiki.txt"
    text.write_text("\n".join(" ".join(WORDS[i:] + WORDS[:i]) for i in range(14)) * 3)
    teacher = tiny_bert(layers=4, seed=1)
    cfg = DistillGeneral(text=str(text), block_size=16, max_steps=6, save_steps=2, batch_size=4)
    full, _ = distill_general(make_student(teacher, every=2), teacher, tokenizer, cfg, tmp_path / "full", seed=3)
    run = step_mod.run_distillation
    with monkeypatch.context() as mp:
        mp.setattr(mlm_mod, "run_distillation", lambda *a, **k: run(*a, **k, callbacks=[_Interrupt()]))
        with pytest.raises(KeyboardInterrupt):
            distill_general(make_student(teacher, every=2), teacher, tokenizer, cfg, tmp_path / "cut", seed=3)
    resumed, stats = distill_general(make_student(teacher, every=2), teacher, tokenizer, cfg, tmp_path / "cut",
                                     seed=3, resume=True)
    assert stats["resumed_from"].endswith("checkpoint-2")
    bad = {k: (v - _params(resumed)[k]).abs().max().item() for k, v in _params(full).items()
           if not torch.allclose(_params(resumed)[k], v, atol=1e-6, rtol=1e-5)}
    assert not bad, bad


def test_masked_blocks_corrupt_15_percent_reproducibly(tokenizer):
    from slimformer.tasks.text import mlm_blocks

    lines = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(14)] * 40
    blocks = mlm_blocks(tokenizer, lines, 64)
    data = mlm_mod.MaskedBlocks(blocks, tokenizer, 0.15, seed=3)
    picked = total = 0
    for i in range(len(data)):
        a, b = data[i], data[i]
        assert torch.equal(a["input_ids"], b["input_ids"])  # the same block always gets the same mask
        orig = torch.tensor(blocks[i]["input_ids"])
        sel = a["labels"].ne(-100)
        assert not sel[0] and not sel[-1]  # [CLS] and [SEP] are never picked
        assert torch.equal(a["labels"][sel], orig[sel])
        assert torch.equal(a["input_ids"][~sel], orig[~sel])  # only picked tokens change
        picked, total = picked + int(sel.sum()), total + len(orig) - 2
    assert 0.12 < picked / total < 0.18
    other = mlm_mod.MaskedBlocks(blocks, tokenizer, 0.15, seed=4)
    assert not torch.equal(other[0]["labels"], data[0]["labels"])
