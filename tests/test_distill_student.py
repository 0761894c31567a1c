"""make_student: DistilBERT-style layer selection copies the right teacher layers and reloads in a fresh process."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from slimformer import models
from slimformer.distill import make_student
from slimformer.distill.student import ClsPooler, NoTokenTypes, layer_origin
from slimformer.errors import SlimformerError
from slimformer.models import get_adapter


def _layer_state(model, i):
    return get_adapter(model).layers(model)[i].state_dict()


def test_every_second_layer_copies_teacher_layers(tiny_bert):
    teacher = tiny_bert(layers=6)
    student = make_student(teacher, every=2)
    assert len(get_adapter(student).layers(student)) == 3
    assert len(get_adapter(teacher).layers(teacher)) == 6  # teacher untouched
    assert layer_origin(student) == [0, 2, 4]
    for s, t in enumerate([0, 2, 4]):
        for k, v in _layer_state(student, s).items():
            assert torch.equal(v, _layer_state(teacher, t)[k]), (s, t, k)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    t_emb = get_adapter(teacher).embedding_modules(teacher)[0].state_dict()
    for k, v in get_adapter(student).embedding_modules(student)[0].state_dict().items():
        assert torch.equal(v, t_emb[k]), k
    for k, v in student.bert.pooler.state_dict().items():
        assert torch.equal(v, teacher.bert.pooler.state_dict()[k]), k


def test_explicit_layers_and_errors(tiny_bert):
    teacher = tiny_bert(layers=4)
    student = make_student(teacher, layers=[1, 3])
    for k, v in _layer_state(student, 1).items():
        assert torch.equal(v, _layer_state(teacher, 3)[k])
    with pytest.raises(SlimformerError, match="make_student"):
        make_student(teacher, layers=[0, 9])
    with pytest.raises(SlimformerError, match="every=5"):
        make_student(teacher, every=5)


def test_drop_token_type_is_exact_for_segment_zero(tiny_bert, batch):
    teacher = tiny_bert(layers=2)
    student = make_student(teacher, layers=[0, 1], drop_token_type=True)
    emb = get_adapter(student).embedding_modules(student)[0]
    assert isinstance(emb.token_type_embeddings, NoTokenTypes)
    with torch.no_grad():
        torch.testing.assert_close(student(**batch).logits, teacher(**batch).logits, atol=1e-5, rtol=1e-4)


def test_drop_pooler_and_fresh(tiny_bert, batch):
    teacher = tiny_bert(layers=2)
    student = make_student(teacher, every=2, drop_pooler=True)
    assert isinstance(get_adapter(student).pooler(student), ClsPooler)
    assert student(**batch).logits.shape == (3, 2)
    fresh = make_student(teacher, fresh={"num_hidden_layers": 1, "hidden_size": 16, "num_attention_heads": 2,
                                         "intermediate_size": 32})
    assert fresh.config.hidden_size == 16 and len(get_adapter(fresh).layers(fresh)) == 1
    with pytest.raises(SlimformerError, match="divisible"):
        make_student(teacher, fresh={"hidden_size": 30})
    with pytest.raises(SlimformerError, match="not an integer field"):
        make_student(teacher, fresh={"hidden": 30})


def test_student_reloads_in_fresh_process(tiny_bert, tokenizer, batch, tmp_path):
    teacher = tiny_bert(layers=4)
    student = make_student(teacher, every=2, drop_token_type=True, drop_pooler=True)
    models.save(student, tokenizer, tmp_path / "s")
    torch.save(dict(batch), tmp_path / "batch.pt")
    code = (
        "import sys, torch; from slimformer import models\n"
        f"m, _ = models.load(r'{tmp_path / 's'}')\n"
        f"b = torch.load(r'{tmp_path / 'batch.pt'}')\n"
        "with torch.no_grad(): torch.save(m(**b).logits, sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "out.pt")], check=True, capture_output=True)
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "out.pt"), student(**batch).logits, atol=0, rtol=0)
