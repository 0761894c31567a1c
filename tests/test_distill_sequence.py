"""Sequence-level knowledge distillation (distill targets: teacher) on a tiny random Marian."""
from __future__ import annotations

import copy
import json

import pytest

from families import tiny
from slimformer.distill import sequence_level as S
from slimformer.errors import SlimformerError
from slimformer.steps import Context, apply_step, parse_step
from test_pet_share import toy_translation


def _step(**over):
    return parse_step({"step": "distill", "targets": "teacher", "kd": 0.0, "ce": 1.0, "max_steps": 2,
                       "batch_size": 4, **over}, 0)


def test_training_targets_are_the_teacher_translations_cached_and_reused(tokenizer, tmp_path, monkeypatch):
    teacher = tiny("marian").eval()
    task = toy_translation()
    examples = task.split("train")
    want = task.translate(teacher, tokenizer, [e.text for e in examples], max_len=16, beams=2)
    got, info = S.with_teacher_targets(task, examples, teacher, tokenizer, tmp_path, beams=2, max_len=16)
    kept = [(e.text, h) for e, h in zip(examples, want) if h]
    assert [(e.text, e.target) for e in got] == kept
    assert info["examples"] == len(kept) and info["dropped_empty"] == len(examples) - len(kept)
    assert json.loads((tmp_path / "teacher_targets.json").read_text())["targets"] == want

    def no_translate(*a, **k):
        raise AssertionError("translated again instead of reusing the cache")

    monkeypatch.setattr(type(task), "translate", no_translate)
    again, _ = S.with_teacher_targets(task, examples, teacher, tokenizer, tmp_path, beams=2, max_len=16)
    assert again == got
    with pytest.raises(AssertionError):  # other beams: a different cache key
        S.with_teacher_targets(task, examples, teacher, tokenizer, tmp_path, beams=3, max_len=16)


def test_interrupted_translation_resumes_from_the_last_chunk(tokenizer, tmp_path, monkeypatch):
    teacher = tiny("marian").eval()
    task = toy_translation()
    sources = [e.text for e in task.split("train")]
    monkeypatch.setattr(S, "CHUNK", 10)
    calls = []
    real = type(task).translate

    def counting(self, *a, **k):
        calls.append(len(a[2]))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(type(task), "translate", counting)
    with pytest.raises(KeyboardInterrupt):
        S.teacher_translations(teacher, tokenizer, task, sources, tmp_path / "t.json", 1, 16)
    calls.clear()
    monkeypatch.setattr(type(task), "translate", real)
    full = S.teacher_translations(teacher, tokenizer, task, sources, tmp_path / "t.json", 1, 16)
    assert full == real(task, teacher, tokenizer, sources, max_len=16, beams=1)
    assert len(json.loads((tmp_path / "t.json").read_text())["targets"]) == len(sources)


def test_distill_step_with_teacher_targets(tokenizer, tmp_path):
    teacher = tiny("marian").eval()
    student = copy.deepcopy(teacher)
    ctx = Context(tokenizer=tokenizer, task=toy_translation(), work_dir=tmp_path, teacher=teacher, seed=1,
                  max_len=16)
    before = student.model.encoder.layers[0].fc1.weight.detach().clone()
    out = apply_step(student, _step(target_beams=2), ctx)
    assert ctx.info["distill"]["sequence_level"]["beams"] == 2
    assert not out.model.encoder.layers[0].fc1.weight.detach().equal(before)  # trained


def test_teacher_targets_refused_outside_translation(tiny_bert):
    from slimformer.distill.step import fits
    from slimformer.tasks.classification import TaskData

    task = TaskData("t", ["neg", "pos"], {"train": []})
    with pytest.raises(SlimformerError, match="sequence-level KD\\) needs a translation task"):
        fits(_step(), tiny_bert(), task)
