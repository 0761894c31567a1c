"""Distillation training on tiny random models: all terms run, determinism, resume, cache, general distillation."""
from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from slimformer.distill import Distill, DistillGeneral, distill, distill_general, make_student
from slimformer.distill.step import run_distillation
from slimformer.distill.trainer import IndexedDataset
from slimformer.tasks import Example, TaskData

WORDS = "good bad fine dull great awful film plot acting long short fun boring lovely".split()


def _task(n: int = 24) -> TaskData:
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n):
        k = int(torch.randint(3, 9, (1,), generator=g))
        words = [WORDS[int(j)] for j in torch.randint(0, len(WORDS), (k,), generator=g)]
        rows.append(Example(" ".join(words), i % 2))
    return TaskData("toy", ["0", "1"], {"train": rows, "dev": rows[:8]})


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _run(tiny_bert, tokenizer, tmp, cfg, student=None, teacher=None, **kw):
    teacher = teacher or tiny_bert(layers=4, seed=1)
    student = student or make_student(teacher, every=2)
    student, stats = distill(student, teacher, tokenizer, _task(), cfg, tmp, seed=3, max_len=16, **kw)
    return student, stats


def test_all_terms_with_projection_and_no_leftovers(tiny_bert, tokenizer, tmp_path):
    teacher = tiny_bert(layers=4, seed=1)
    student = tiny_bert(layers=2, hidden=16, heads=2, ffn=32, seed=2)  # narrower: needs projections
    impl = (student.config._attn_implementation, teacher.config._attn_implementation)
    assert impl != ("eager", "eager")  # so the switch to eager for attention maps is visible
    cfg = Distill(kd=1, ce=0.5, cos=1, hidden=1, attention=1, pkd=1, layer_map="skip", max_steps=3, batch_size=8)
    student, stats = _run(tiny_bert, tokenizer, tmp_path, cfg, student=student, teacher=teacher)
    assert stats["layer_map"] == [[0, 1], [1, 3]]
    assert stats["projections"] == 2
    assert not any("sf_distill_proj" in k for k in student.state_dict())
    assert (student.config._attn_implementation, teacher.config._attn_implementation) == impl  # restored
    assert stats["train_loss"] > 0


def test_same_seed_same_student(tiny_bert, tokenizer, tmp_path):
    cfg = Distill(kd=1, ce=0.5, hidden=1, max_steps=4, batch_size=8)
    a, _ = _run(tiny_bert, tokenizer, tmp_path / "a", cfg)
    b, _ = _run(tiny_bert, tokenizer, tmp_path / "b", cfg)
    _equal(_state(a), _state(b))


class _Interrupt(TrainerCallback):
    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == 3:
            raise KeyboardInterrupt("simulated interruption")


def test_resume_after_interruption_matches_uninterrupted(tiny_bert, tokenizer, tmp_path):
    teacher = tiny_bert(layers=4, seed=1)
    student0 = tiny_bert(layers=2, hidden=16, heads=2, ffn=32, seed=2)  # with projections (saved in checkpoints)
    cfg = Distill(kd=1, ce=0.5, hidden=1, max_steps=6, save_steps=2, batch_size=4)
    full, _ = distill(make_student(student0, layers=[0, 1]), teacher, tokenizer, _task(), cfg, tmp_path / "full",
                      seed=3, max_len=16)
    with pytest.raises(KeyboardInterrupt):
        distill(make_student(student0, layers=[0, 1]), teacher, tokenizer, _task(), cfg, tmp_path / "cut", seed=3,
                max_len=16, callbacks=[_Interrupt()])
    resumed, stats = distill(make_student(student0, layers=[0, 1]), teacher, tokenizer, _task(), cfg,
                             tmp_path / "cut", seed=3, max_len=16, resume=True)
    assert stats["resumed_from"] and stats["resumed_from"].endswith("checkpoint-2")
    for k, v in _state(full).items():
        torch.testing.assert_close(_state(resumed)[k], v, atol=1e-6, rtol=1e-5)


def test_teacher_cache_matches_live_teacher(tiny_bert, tokenizer, tmp_path):
    cfg = Distill(kd=1, ce=0.5, max_steps=3, batch_size=8)
    live, _ = _run(tiny_bert, tokenizer, tmp_path / "live", cfg)
    cached, stats = _run(tiny_bert, tokenizer, tmp_path / "cached", cfg.model_copy(update={"cache_teacher": True}))
    assert (tmp_path / "cached" / "teacher_logits.safetensors").is_file()
    assert stats["teacher_cache_s"] is not None
    for k, v in _state(live).items():
        torch.testing.assert_close(_state(cached)[k], v, atol=1e-5, rtol=1e-4)


def test_general_distillation_on_raw_text(tiny_bert, tokenizer, tmp_path):
    text = tmp_path / "wiki.txt"
    text.write_text(" = Heading = \n\n" + "\n".join(" ".join(WORDS[i:] + WORDS[:i]) for i in range(14)) * 3)
    teacher = tiny_bert(layers=4, seed=1)
    student = make_student(teacher, every=2)
    cfg = DistillGeneral(text=str(text), block_size=16, max_steps=3, batch_size=4, cos=1)
    student, stats = distill_general(student, teacher, tokenizer, cfg, tmp_path / "g", seed=3)
    assert stats["blocks"] > 4 and stats["layer_map"] == [[0, 1], [1, 3]]
    with pytest.raises(Exception, match="kd needs"):
        distill_general(make_student(teacher, every=2), teacher.bert, tokenizer,
                        cfg.model_copy(update={"kd": 1.0}), tmp_path / "g2", seed=3)


def test_indexed_dataset_passes_through_collator(tokenizer):
    from slimformer.data import collator, encode

    ds = IndexedDataset(encode(tokenizer, _task().split("train")[:3], 16))
    batch = collator(tokenizer)([ds[i] for i in range(3)])
    assert batch["sf_index"].tolist() == [0, 1, 2]


def test_run_distillation_importable():
    assert callable(run_distillation)


def test_torchrun_two_processes(tmp_path):
    """The same distillation (all terms, projections) runs under torchrun --nproc_per_node 2 on CPU (gloo)."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists() and not shutil.which("torchrun"):
        pytest.skip("torchrun not installed")
    tests = Path(__file__).parent
    script = tmp_path / "run.py"
    script.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, r'{tests}')\n"
        "from conftest import make_tiny_bert\n"
        "from test_distill_train import _task\n"
        "from transformers import AutoTokenizer\n"
        "from slimformer.models import resolve\n"
        "from slimformer.distill import Distill, distill\n"
        "tok = AutoTokenizer.from_pretrained(resolve('minilm'))\n"
        "teacher = make_tiny_bert(layers=4, seed=1)\n"
        "student = make_tiny_bert(layers=2, hidden=16, heads=2, ffn=32, seed=2)\n"
        "cfg = Distill(kd=1, ce=0.5, hidden=1, attention=1, pkd=1, cos=1, max_steps=2, batch_size=4)\n"
        f"student, stats = distill(student, teacher, tok, _task(), cfg, r'{tmp_path / 'work'}', seed=3, max_len=16)\n"
        "import torch\n"
        "flat = torch.cat([v.flatten().float() for v in student.state_dict().values()])\n"
        f"open(r'{tmp_path}' + '/rank' + os.environ['RANK'], 'w').write("
        "f\"{stats['projections']} {flat.sum().item():.6f} {flat.abs().sum().item():.6f}\")\n"
    )
    env = {**os.environ, "SLIMFORMER_QUIET": "1", "OMP_NUM_THREADS": "1"}
    cmd = [str(torchrun) if torchrun.exists() else "torchrun", "--nproc_per_node", "2", str(script)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    ranks = [(tmp_path / f"rank{r}").read_text().split() for r in (0, 1)]
    assert ranks[0][0] == ranks[1][0] == "2"  # both ranks trained with the two projections
    assert ranks[0] == ranks[1]  # DDP kept the replicas in sync: the same student on both ranks
