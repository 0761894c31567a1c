"""Every failure of the command line is one `error:` line and a documented exit code (1 error, 2 usage,
130 interrupted); write failures clean up after themselves; finetune leaves no checkpoints after success."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from slimformer.errors import one_line

from cli_helpers import ENV, assert_refused, cli, invoke, one_error, snapshot


@pytest.fixture
def tiny(cli_inputs):
    return cli_inputs


def test_usage_errors_are_one_line_exit_2():
    assert_refused(cli("compress", "x"), "Missing option '--recipe'", code=2)
    assert_refused(cli("finetune", "x", "--task", "sst2", "--data", "d", "--out", "o", "--epochs", "abc"),
                   "Invalid value for '--epochs'", code=2)
    assert_refused(cli("no-such-command"), "No such command", code=2)


def test_help_is_fast_and_imports_no_torch():
    code = "import sys, slimformer.cli; print(sorted({'torch', 'transformers', 'sklearn'} & set(sys.modules)))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert res.stdout.strip() == "[]", res.stderr
    res = cli("--help")
    assert res.returncode == 0 and "Exit codes" in res.stdout
    for cmd in ("finetune", "compress", "demo"):
        out = cli(cmd, "--help").stdout
        assert "--threads" in out and "--overwrite" in out, cmd


def test_sigint_prints_the_resume_hint_and_exits_130(tiny):
    proc = subprocess.Popen([sys.executable, "-m", "slimformer", "profile", str(tiny / "model"), "--runs",
                             "10000000", "--seq-len", "8"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # interrupt once the command body runs (it imports torch), however slowly a loaded machine starts Python
    deadline = time.time() + (120 if Path("/proc/self/maps").exists() else 3)
    while time.time() < deadline and proc.poll() is None and "libtorch" not in _maps(proc.pid):
        time.sleep(0.2)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    # 130, or death by SIGINT after the hint (a Ctrl-C that lands inside torch's import on a loaded machine):
    # a shell reports both as exit status 130
    assert proc.returncode in (130, -signal.SIGINT), err
    assert "interrupted (re-run the same command to resume)" in err and "Traceback" not in err


def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


def test_read_only_destination_is_one_line(tiny, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root writes through mode bits: simulate the read-only filesystem instead
        def erofs(*a, **k):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        monkeypatch.setattr(tempfile, "mkstemp", erofs)
    else:
        ro.chmod(0o555)
    code, err = invoke(capsys, "compress", tiny / "model", "--recipe", tiny / "r.yaml", "--out", ro / "out")
    ro.chmod(0o755)
    assert code == 1 and "Traceback" not in err
    line = one_error(err, f"cannot write {ro / 'out'}: ")
    assert ("Read-only file system" if os.geteuid() == 0 else "Permission denied") in line
    assert list(ro.iterdir()) == []


def test_full_disk_is_one_line_and_leaves_no_work_or_temp_dir(tiny, tmp_path, capsys, monkeypatch):
    import slimformer.models.io as io

    real = io.save_model

    def full(model, filename, **kw):  # the disk fills up while a checkpoint under tmp_path is written
        if str(tmp_path) not in str(filename):
            return real(model, filename, **kw)
        Path(filename).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    monkeypatch.setattr(io, "save_model", full)
    before = snapshot(tmp_path)
    code, err = invoke(capsys, "compress", tiny / "model", "--recipe", tiny / "r.yaml", "--out", tmp_path / "out")
    assert code == 1
    one_error(err, f"cannot write {tmp_path / 'out'}: No space left on device (removed the partial work in")
    assert snapshot(tmp_path) == before  # no output, no .out.work, no .out.tmp-*


def test_finetune_removes_its_checkpoints_after_success_only(tiny, tmp_path, capsys, monkeypatch):
    import torch

    import slimformer.train as train

    real, seen = train.finetune, {}

    def spy(model, tok, task, cfg, work, **kw):
        (Path(work) / "checkpoints" / "checkpoint-1").mkdir(parents=True, exist_ok=True)
        (Path(work) / "checkpoints" / "checkpoint-1" / "optimizer.pt").write_bytes(b"0" * 1000)
        seen["threads"] = torch.get_num_threads()
        if seen.get("interrupt"):
            raise KeyboardInterrupt
        return real(model, tok, task, cfg.model_copy(update={"max_steps": 2}), work, **kw)

    monkeypatch.setattr(train, "finetune", spy)
    args = ["finetune", tiny / "model", "--task", "sst2", "--data", tiny / "data", "--batch-size", "8",
            "--max-len", "16", "--threads", "1", "--out"]
    code, err = invoke(capsys, *args, tmp_path / "teacher")
    assert code == 0, err
    assert seen["threads"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "teacher"]  # .teacher.train is gone
    assert json.loads((tmp_path / "teacher" / "train_stats.json").read_text())["stats"]["train_loss"] is not None
    seen["interrupt"] = True
    code, err = invoke(capsys, *args, tmp_path / "again")
    assert code == 130 and "interrupted (re-run the same command to resume)" in err
    assert (tmp_path / ".again.train" / "checkpoints" / "checkpoint-1").is_dir()  # kept for --resume


def _summary(task: str | None, metric: str, params: int = 1000) -> dict:
    row = {"index": 0, "step": "input", "params": params, "size_bytes": 4000, "metrics": {metric: 0.8},
           "latency_b1_ms": 1.0, "latency_b32_ms": 9.0}
    return {"task": task, "rows": [row, {**row, "index": 1, "step": "drop_layers", "params": params // 2}],
            "comparison": {"b1": {"input_ms": 1.0, "output_ms": 0.5, "speedup": 2.0}}}


@pytest.mark.parametrize("content,pattern", [
    (b"\x00\xff garbage", "not a text file"),
    (b"{not json", "not valid JSON"),
    (b'{"name": "someone else\'s summary", "rows": 3}', "not a slimformer summary"),
    (b'{"rows": [{"index": 0, "step": "input", "metrics": {"accuracy": "high"}}]}', "not a slimformer summary"),
    (b"[1, 2, 3]", "not a slimformer summary"),
])
def test_report_on_a_garbage_or_foreign_summary_is_one_line(tmp_path, capsys, content, pattern):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_bytes(content)
    before = snapshot(tmp_path)
    code, err = invoke(capsys, "report", tmp_path / "run")
    assert code == 1 and err.strip().startswith("error:") and len(err.strip().splitlines()) == 1, err
    assert pattern in err and snapshot(tmp_path) == before


def test_report_labels_runs_apart_and_warns_on_different_tasks(tmp_path, capsys):
    for parent, task, metric in (("a", "sst2", "accuracy"), ("b", "cola", "mcc")):
        (tmp_path / parent / "student").mkdir(parents=True)
        (tmp_path / parent / "student" / "summary.json").write_text(json.dumps(_summary(task, metric)))
    code, err = invoke(capsys, "report", tmp_path / "a" / "student", tmp_path / "b" / "student",
                       "--out", tmp_path / "cmp")
    assert code == 0, err
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| a/student |" in md and "| b/student |" in md
    assert "different tasks" in md and "warning: the runs were measured on different tasks" in " ".join(err.split())


def test_exporter_messages_are_summarized_in_one_complete_line():
    msg = ("Failed to export the model with torch.export. \x1b[96mThis is step 1/3\x1b[0m of exporting the model to "
           "ONNX. Next steps:\n- Modify the model code.\n\n## Exception summary\n\n<class 'torch._subclasses."
           "fake_tensor.UnsupportedFakeTensorException'>: quantized nyi in meta tensors\n\n(Refer to the full stack)")
    assert one_line(RuntimeError(msg)) == "UnsupportedFakeTensorException: quantized nyi in meta tensors"
    assert one_line(RuntimeError("Export failed. Next steps:\n- try again")) == "Export failed."
    assert one_line(ValueError("")) == "ValueError"
