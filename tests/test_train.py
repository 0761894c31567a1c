"""Fine-tuning: it learns, it reloads identically, and an interrupted run resumes to the same result."""
from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from slimformer import models, tasks
from slimformer.errors import SlimformerError
from slimformer.evaluate import evaluate_task
from slimformer.train import TrainConfig, finetune

from helpers import fresh_process_logits, logits


@pytest.fixture
def easy_task(tmp_path):
    lines = [f"1 great wonderful film {i}" if i % 2 else f"0 awful boring film {i}" for i in range(64)]
    for split in ("train", "dev", "test"):
        (tmp_path / f"stsa.binary.{split}").write_text("\n".join(lines) + "\n")
    return tasks.load("sst2", tmp_path)


CFG = dict(batch_size=8, max_len=16, lr=1e-3, save_steps=2, seed=7)


def test_finetune_learns_and_reloads(tmp_path, tiny_bert, tokenizer, easy_task):
    m = tiny_bert()
    m, stats = finetune(m, tokenizer, easy_task, TrainConfig(epochs=10, **CFG), tmp_path / "w")
    assert evaluate_task(m, tokenizer, easy_task, "dev")["accuracy"] == 1.0
    assert stats["train_samples_per_second"] > 0
    models.save(m, tokenizer, tmp_path / "out")
    assert torch.equal(fresh_process_logits(tmp_path / "out"), logits(m, tokenizer))


class _Interrupt(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 5:
            raise KeyboardInterrupt


def test_resume_after_interruption_matches_uninterrupted(tmp_path, tiny_bert, tokenizer, easy_task):
    cfg = TrainConfig(max_steps=8, **CFG)
    full, _ = finetune(tiny_bert(), tokenizer, easy_task, cfg, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        finetune(tiny_bert(), tokenizer, easy_task, cfg, tmp_path / "cut", callbacks=[_Interrupt()])
    resumed, stats = finetune(tiny_bert(), tokenizer, easy_task, cfg, tmp_path / "cut", resume=True)
    assert stats["resumed_from"] and stats["resumed_from"].endswith("checkpoint-4")
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k


def test_label_count_mismatch_is_clear(tmp_path, tiny_bert, tokenizer, easy_task):
    with pytest.raises(SlimformerError, match="3 output labels but task sst2 has 2"):
        finetune(tiny_bert(num_labels=3), tokenizer, easy_task, TrainConfig(**CFG), tmp_path / "w")
