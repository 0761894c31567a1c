"""Distillation with augmented copies of the training set: the copies are altered as the rules say, their labels
are the teacher's predictions, and the options that cannot work say so."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from slimformer.distill import Distill, distill, make_student
from slimformer.distill.augment import augment_examples, relabel
from slimformer.errors import SlimformerError
from slimformer.tasks.base import Example

from test_distill_train import _task


def test_copies_are_deterministic_altered_and_keep_pairs_whole():
    exs = [Example(" ".join(f"w{i}{j}" for j in range(12)), i % 2) for i in range(40)]
    a = augment_examples(exs, 3, seed=5, mask_token="[MASK]")
    assert a == augment_examples(exs, 3, seed=5, mask_token="[MASK]")
    assert len(a) == 120 and [x.label for x in a] == [e.label for e in exs] * 3
    words = {w for e in exs for w in e.text.split()}
    assert any("[MASK]" in x.text for x in a)  # masked words
    assert any(len(x.text.split()) <= 5 for x in a)  # n-gram cuts (every original has 12 words)
    assert all(set(x.text.split()) <= words | {"[MASK]"} for x in a)  # swaps draw from the training words
    assert sum(x.text != e.text for x, e in zip(a, exs * 3)) > 100
    dropped = augment_examples(exs, 1, seed=5, mask_token=None)
    assert all("[MASK]" not in x.text and x.text for x in dropped)
    pairs = [Example("a b c d e f g h", 1, "i j k l m n o p") for _ in range(50)]
    cut = augment_examples(pairs, 1, seed=0, mask_token="[MASK]")
    assert all(len(x.text.split()) == 8 and len(x.text_pair.split()) == 8 for x in cut)  # no n-gram on pairs


def test_relabel_takes_argmax_or_regression_value():
    feats = [{"labels": 0} for _ in range(4)]
    logits = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0], [5.0, 1.0]])
    assert relabel(feats, logits, 2, "logits") == 2
    assert [f["labels"] for f in feats] == [0, 0, 1, 0]
    relabel(feats, logits, 1, "regression")
    assert [f["labels"] for f in feats] == [0, 2.0, 0.0, 5.0]


def test_distill_trains_on_teacher_labelled_copies(tiny_bert, tokenizer, tmp_path):
    from slimformer.data import collator
    from slimformer.train import TrainConfig, train_dataset

    teacher = tiny_bert(layers=4, seed=1)
    task = _task()  # 24 examples
    cfg = Distill(kd=1, ce=0.5, augment=2, epochs=1, batch_size=8, cache_teacher=True)
    student = make_student(teacher, every=2)
    steps: list[int] = []
    student.register_forward_hook(lambda *_: steps.append(1))
    student, stats = distill(student, teacher, tokenizer, task, cfg, tmp_path, seed=3, max_len=16)
    assert stats["augment"]["examples"] == 48 and len(steps) == 9  # 72 examples, batches of 8
    # the labels the run trained on: the copies get the teacher's argmax on exactly those altered texts
    exs = list(task.split("train"))
    copies = augment_examples(exs, 2, seed=3, mask_token=tokenizer.mask_token)
    ds = train_dataset(tokenizer, task, TrainConfig(max_len=16), exs + copies)
    with torch.no_grad():
        want = teacher(**collator(tokenizer)([{k: v for k, v in ds[i].items() if k != "labels"}
                                              for i in range(24, 72)])).logits.argmax(-1)
    logits = load_file(str(tmp_path / "teacher_logits.safetensors"))["logits"]
    assert torch.equal(logits[24:].argmax(-1), want)


def test_augment_needs_a_task_teacher_and_a_sentence_task(tiny_bert, tokenizer, tmp_path):
    teacher = tiny_bert(layers=2, seed=1, num_labels=3)
    with pytest.raises(SlimformerError, match="augment needs a teacher"):
        distill(make_student(tiny_bert(layers=2, seed=1), every=1), teacher, tokenizer, _task(),
                Distill(kd=0, ce=1, augment=1, max_steps=1), tmp_path)
