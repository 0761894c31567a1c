"""Interruption and resume: checkpoints appear only when complete, broken ones are skipped, a torn ledger line
is ignored, short runs checkpoint often enough to resume, and the same seed gives the same new head."""
from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from safetensors.torch import load_file
from transformers import Trainer, TrainerCallback

from slimformer import ledger, models, tasks
from slimformer.checkpoints import last_checkpoint
from slimformer.steps import Context, StepConfig, implements
from slimformer.train import TrainConfig, finetune, save_every

from cli_helpers import invoke
from conftest import write_tiny_sst2

CFG = dict(batch_size=8, max_len=16, lr=1e-3, seed=7)


def _flat(err: str) -> str:
    return " ".join(err.split())  # rich wraps long lines at 80 columns when not on a terminal


@pytest.fixture
def easy_task(tmp_path):
    lines = [f"1 great wonderful film {i}" if i % 2 else f"0 awful boring film {i}" for i in range(64)]
    (tmp_path / "data").mkdir()
    for split in ("train", "dev", "test"):
        (tmp_path / "data" / f"stsa.binary.{split}").write_text("\n".join(lines) + "\n")
    return tasks.load("sst2", tmp_path / "data")


class _StopAt(TrainerCallback):
    """Ctrl-C as step `step + 1` begins (checkpoint-`step` is written by then)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def _same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# --- checkpoints ----------------------------------------------------------------------------------------


def test_checkpoint_appears_only_when_complete(tmp_path, tiny_bert, tokenizer, easy_task, monkeypatch, capsys):
    cfg = TrainConfig(max_steps=6, save_steps=2, **CFG)
    full, _ = finetune(tiny_bert(), tokenizer, easy_task, cfg, tmp_path / "full")
    real = Trainer._save_rng_state

    def ctrl_c_while_saving(self, output_dir):  # the optimizer is written, the RNG state and trainer state not
        if self.state.global_step == 4:
            raise KeyboardInterrupt
        return real(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_rng_state", ctrl_c_while_saving)
    with pytest.raises(KeyboardInterrupt):
        finetune(tiny_bert(), tokenizer, easy_task, cfg, tmp_path / "cut")
    monkeypatch.undo()
    ck = tmp_path / "cut" / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == [".partial", "checkpoint-2"]  # checkpoint-4 never visible
    assert (ck / ".partial" / "checkpoint-4" / "optimizer.pt").is_file()
    resumed, stats = finetune(tiny_bert(), tokenizer, easy_task, cfg, tmp_path / "cut", resume=True)
    assert stats["resumed_from"] == str(ck / "checkpoint-2")
    assert "resuming from" in capsys.readouterr().err
    _same(full, resumed)
    assert sorted(p.name for p in ck.iterdir()) == ["checkpoint-4", "checkpoint-6"]  # staging gone


def _legacy_partial(ck: Path) -> None:
    """What the HF Trainer left when interrupted while writing checkpoint-N in place (the issue's case)."""
    (ck / "trainer_state.json").unlink()


def _truncate(name: str):
    def damage(ck: Path) -> None:
        data = (ck / name).read_bytes()
        (ck / name).write_bytes(data[: len(data) // 2])
    return damage


def _garbage_state(ck: Path) -> None:
    (ck / "trainer_state.json").write_text('{"global_step": 4, "log_hist')


@pytest.mark.parametrize("damage,reason", [
    (_legacy_partial, "no trainer_state.json"),
    (_garbage_state, "trainer_state.json unreadable"),
    (_truncate("model.safetensors"), "model.safetensors unreadable"),
    (_truncate("optimizer.pt"), "optimizer.pt unreadable"),
    (lambda ck: (ck / "rng_state.pth").unlink(), "no rng_state.pth"),
])
def test_resume_skips_a_broken_checkpoint(tmp_path, tiny_bert, tokenizer, easy_task, capsys, damage, reason):
    cfg = TrainConfig(max_steps=6, save_steps=2, **CFG)
    full, _ = finetune(tiny_bert(), tokenizer, easy_task, cfg, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        finetune(tiny_bert(), tokenizer, easy_task, cfg, tmp_path / "cut", callbacks=[_StopAt(4)])
    ck = tmp_path / "cut" / "checkpoints"
    damage(ck / "checkpoint-4")
    capsys.readouterr()
    resumed, stats = finetune(tiny_bert(), tokenizer, easy_task, cfg, tmp_path / "cut", resume=True)
    err = _flat(capsys.readouterr().err)
    assert "warning: skipping the incomplete checkpoint" in err and reason in err and "Traceback" not in err
    assert stats["resumed_from"] == str(ck / "checkpoint-2")
    _same(full, resumed)
    assert (ck / "broken-checkpoint-4").is_dir()  # moved aside, not deleted


def test_no_whole_checkpoint_starts_from_scratch_and_says_so(tmp_path, capsys):
    ck = tmp_path / "run" / "checkpoints"
    (ck / "checkpoint-3").mkdir(parents=True)
    (ck / "checkpoint-3" / "model.safetensors").write_bytes(b"\x00" * 10)
    (ck / "checkpoint-3" / "trainer_state.json").write_text('{"global_step": 3}')
    assert last_checkpoint(ck) is None
    assert sorted(p.name for p in ck.iterdir()) == ["broken-checkpoint-3"]
    (ck / "checkpoint-3").mkdir()  # a second broken one of the same name gets its own name
    assert last_checkpoint(ck) is None
    assert sorted(p.name for p in ck.iterdir()) == ["broken-checkpoint-3", "broken-checkpoint-3.2"]


# --- the ledger ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tail,kept,message", [
    ('{"index": 2, "step": "fine', 2, "ignoring the torn last line"),
    ('{"index": 2, "step": "finetune"}', 3, None),  # a whole row whose newline was not written: kept
    ("\x00\x00\x00\n\n", 2, "ignoring the torn last line"),
    ('garbage\n{"index": 2}\n', 2, "line 3 is not a ledger row; ignoring it and the 1 line(s) after it"),
    ('[1, 2]\n{"index": 2}\n', 2, "line 3 is not a ledger row"),
])
def test_ledger_reads_whole_rows_only(tmp_path, capsys, tail, kept, message):
    path = tmp_path / "ledger.jsonl"
    ledger.append(path, {"index": 0, "step": "input"})
    ledger.append(path, {"index": 1, "step": "drop_layers"})
    with path.open("a") as f:
        f.write(tail)
    rows = ledger.read(path)
    assert [r["index"] for r in rows] == list(range(kept))
    err = _flat(capsys.readouterr().err)
    assert (message in err) if message else not err


class _CtrlC(StepConfig):
    step: ClassVar[str] = "test_ctrl_c"


_ctrl_c: list[int] = []


@implements(_CtrlC)
def _ctrl_c_once(model: torch.nn.Module, cfg: _CtrlC, ctx: Context) -> torch.nn.Module:
    _ctrl_c.append(1)
    if len(_ctrl_c) == 1:
        raise KeyboardInterrupt
    return model


def test_torn_ledger_line_then_rerun_resumes_from_the_last_whole_row(tmp_path, tiny_bert, tokenizer, capsys):
    import slimformer as sf
    from slimformer.recipe import EvalSettings, compress

    _ctrl_c.clear()
    task = write_tiny_sst2(tmp_path)
    fast = EvalSettings(max_examples=8, latency_budget_s=0.02, seq_len=8, batches=[1], threads=1)
    steps = [sf.DropLayers(keep=2), _CtrlC()]
    with pytest.raises(KeyboardInterrupt):
        compress(tiny_bert(layers=3), tokenizer, steps, tmp_path / "out", task, fast)
    with (tmp_path / ".out.work" / "ledger.jsonl").open("a") as f:
        f.write('{"index": 2, "step": "test_ctrl_c", "config": {"ar')  # killed while appending
    capsys.readouterr()
    res = compress(tiny_bert(layers=3), tokenizer, steps, tmp_path / "out", task, fast)
    err = _flat(capsys.readouterr().err)
    assert "ignoring the torn last line" in err and "resuming after step 1 (drop_layers)" in err
    assert "Traceback" not in err and _ctrl_c == [1, 1]
    rows = [json.loads(line) for line in (tmp_path / "out" / "ledger.jsonl").read_text().splitlines()]
    assert [(r["index"], r["step"]) for r in rows] == [(0, "input"), (1, "drop_layers"), (2, "test_ctrl_c")]
    assert res.model.config.num_hidden_layers == 2


# --- checkpoint interval and finetune --resume -------------------------------------------------------------


@pytest.mark.parametrize("cfg,n,every", [
    (dict(max_steps=8), 100, 1), (dict(max_steps=16), 100, 1), (dict(max_steps=20), 100, 2),
    (dict(max_steps=100), 100, 10), (dict(max_steps=50_000), 100, 200), (dict(max_steps=16, save_steps=5), 100, 5),
    (dict(epochs=3, batch_size=8), 64, 2), (dict(epochs=3, batch_size=32), 67_349, 200),
])
def test_default_checkpoint_interval_is_a_tenth_of_the_run(cfg, n, every):
    assert save_every(TrainConfig(**cfg), n) == every


@pytest.fixture
def cli_inputs(tmp_path, tiny_bert, tokenizer):
    models.save(tiny_bert(), tokenizer, tmp_path / "in" / "model")
    (tmp_path / "in" / "data").mkdir()
    write_tiny_sst2(tmp_path / "in" / "data", 16)
    return tmp_path / "in"


def _finetune_args(inputs: Path, out: Path, *extra: str) -> list:
    return ["finetune", inputs / "model", "--task", "sst2", "--data", inputs / "data", "--batch-size", "1",
            "--epochs", "1", "--max-len", "16", "--threads", "1", "--out", out, *extra]  # 16 steps


@pytest.mark.parametrize("extra,resumed", [((), "checkpoint-8"), (("--save-steps", "5"), "checkpoint-5")])
def test_finetune_killed_half_way_resumes_from_a_checkpoint(cli_inputs, tmp_path, capsys, monkeypatch, extra,
                                                            resumed):
    import slimformer.train as train

    code, err = invoke(capsys, *_finetune_args(cli_inputs, tmp_path / "full", *extra))
    assert code == 0, err
    real = train.finetune
    monkeypatch.setattr(train, "finetune", lambda *a, **kw: real(*a, **kw, callbacks=[_StopAt(8)]))
    code, err = invoke(capsys, *_finetune_args(cli_inputs, tmp_path / "cut", *extra))
    assert code == 130 and "interrupted (re-run the same command to resume)" in err
    monkeypatch.undo()
    code, err = invoke(capsys, *_finetune_args(cli_inputs, tmp_path / "cut", *extra, "--resume"))
    assert code == 0, err
    stats = json.loads((tmp_path / "cut" / "train_stats.json").read_text())["stats"]
    assert stats["resumed_from"].endswith(resumed)
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("full", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / ".cut.train").exists()


def test_finetune_without_resume_drops_an_earlier_runs_checkpoints(cli_inputs, tmp_path, capsys, monkeypatch):
    import slimformer.train as train

    real = train.finetune
    monkeypatch.setattr(train, "finetune", lambda *a, **kw: real(*a, **kw, callbacks=[_StopAt(8)]))
    code, _ = invoke(capsys, *_finetune_args(cli_inputs, tmp_path / "out", "--lr", "1e-3"))
    assert code == 130 and (tmp_path / ".out.train" / "checkpoints" / "checkpoint-8").is_dir()
    seen = {}

    def spy(*a, **kw):  # what a later --resume would find once this run is interrupted at its first step
        seen["left"] = sorted(p.name for p in (tmp_path / ".out.train" / "checkpoints").glob("checkpoint-*")) \
            if (tmp_path / ".out.train" / "checkpoints").exists() else []
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "finetune", spy)
    code, err = invoke(capsys, *_finetune_args(cli_inputs, tmp_path / "out"))  # other settings, no --resume
    assert code == 130 and "removing the checkpoints of an earlier run" in err and seen["left"] == []


def test_finetune_resume_without_checkpoints_says_it_starts_from_scratch(cli_inputs, tmp_path, capsys):
    code, err = invoke(capsys, *_finetune_args(cli_inputs, tmp_path / "out", "--resume"))
    assert code == 0, err
    assert f"no checkpoint found in {tmp_path / '.out.train' / 'checkpoints'}, starting from scratch" in err


# --- seeded heads --------------------------------------------------------------------------------------------


def test_finetune_same_seed_gives_the_same_new_head(tmp_path, tokenizer, capsys):
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(0)
    cfg = AutoConfig.for_model("bert", vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    models.save(AutoModel.from_config(cfg), tokenizer, tmp_path / "base")  # no classifier: finetune adds one
    (tmp_path / "data").mkdir()
    write_tiny_sst2(tmp_path / "data", 8)
    heads = {}
    for name, seed in (("a", "42"), ("b", "42"), ("c", "43")):
        code, err = invoke(capsys, "finetune", tmp_path / "base", "--task", "sst2", "--data", tmp_path / "data",
                           "--epochs", "1", "--batch-size", "8", "--max-len", "16", "--seed", seed, "--out",
                           tmp_path / name)
        assert code == 0, err
        w = load_file(str(tmp_path / name / "model.safetensors"))
        heads[name] = {k: v for k, v in w.items() if k.startswith("classifier.")}
    assert heads["a"].keys() == {"classifier.weight", "classifier.bias"}
    assert all(torch.equal(heads["a"][k], heads["b"][k]) for k in heads["a"])
    assert not torch.equal(heads["a"]["classifier.weight"], heads["c"]["classifier.weight"])
