"""One run per output: a second `compress` or `finetune` on the same --out fails at once in one line; the lock
goes with its process (SIGKILL included) and a lock file left behind blocks nobody."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from slimformer import models
from slimformer.runlock import LOCK, clear_work_dir, run_lock

from cli_helpers import ENV, invoke, one_error
from conftest import write_tiny_sst2

HOLD = """
import sys
from slimformer.runlock import run_lock
with run_lock(sys.argv[1], sys.argv[2]):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def inputs(tmp_path, tiny_bert, tokenizer):
    models.save(tiny_bert(), tokenizer, tmp_path / "in" / "model")
    (tmp_path / "in" / "data").mkdir()
    write_tiny_sst2(tmp_path / "in" / "data", 16)
    (tmp_path / "in" / "r.yaml").write_text("eval: {seq_len: 8, batches: [1], latency_budget_s: 0.02, threads: 1}\n"
                                            "steps:\n  - {step: drop_layers, keep: 1}\n")
    return tmp_path / "in"


def _holder(work: Path, out: Path) -> subprocess.Popen:
    """Another process holding the run lock of work (until killed or its stdin closes)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(work), str(out)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _compress(inputs: Path, out: Path) -> list:
    return ["compress", inputs / "model", "--recipe", inputs / "r.yaml", "--task", "sst2", "--data",
            inputs / "data", "--out", out]


def test_second_compress_on_the_same_out_fails_at_once(inputs, tmp_path, capsys):
    holder = _holder(tmp_path / ".out.work", tmp_path / "out")
    try:
        code, err = invoke(capsys, *_compress(inputs, tmp_path / "out"))
        assert code == 1
        one_error(err, f"another slimformer run is using {tmp_path / 'out'} (pid {holder.pid})")
        assert "measuring" not in err  # refused before any work
        assert not (tmp_path / "out").exists()
        assert sorted(p.name for p in (tmp_path / ".out.work").iterdir()) == [LOCK]  # the first run's dir intact
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock with the process, the file stays behind
        holder.wait()
    assert (tmp_path / ".out.work" / LOCK).read_text().strip() == str(holder.pid)  # a stale lock file
    code, err = invoke(capsys, *_compress(inputs, tmp_path / "out"))
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "out" / "ledger.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == ["input", "drop_layers"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # the work dir and its lock are gone


def test_second_finetune_on_the_same_out_fails_at_once(inputs, tmp_path, capsys):
    holder = _holder(tmp_path / ".teacher.train", tmp_path / "teacher")
    try:
        code, err = invoke(capsys, "finetune", inputs / "model", "--task", "sst2", "--data", inputs / "data",
                           "--out", tmp_path / "teacher", "--resume")
        assert code == 1
        one_error(err, f"another slimformer run is using {tmp_path / 'teacher'} (pid {holder.pid})")
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.wait()
    assert not (tmp_path / "teacher").exists()


def _try_in_child(work: Path) -> subprocess.CompletedProcess:
    """Take the lock from another process and let go at once."""
    return subprocess.run([sys.executable, "-c", HOLD, str(work), "out"], capture_output=True, text=True, env=ENV,
                          input="")


def test_lock_nests_in_one_process_and_survives_restart(tmp_path):
    work = tmp_path / ".out.work"
    (work / "step-01").mkdir(parents=True)
    (work / "ledger.jsonl").write_text("{}\n")
    with run_lock(work, "out"):
        with run_lock(work, "out"):  # the CLI holds it, then recipe.compress takes it again
            clear_work_dir(work)  # --restart
            assert sorted(p.name for p in work.iterdir()) == [LOCK]
        proc = _try_in_child(work)
        assert proc.returncode == 1 and "another slimformer run is using out" in proc.stderr  # still held
    assert not work.exists()  # it held nothing but the lock: tidied
    assert _try_in_child(work).returncode == 0


def test_lock_file_removed_by_a_finishing_run_is_not_shared(tmp_path):
    """A run that finishes deletes its work dir, lock file included, while still holding the lock: the next
    run locks a new file (that a third run then sees), not the deleted one."""
    work = tmp_path / ".out.work"
    holder = _holder(work, tmp_path / "out")
    try:
        (work / LOCK).unlink()
        work.rmdir()
        with run_lock(work, "out"):
            proc = _try_in_child(work)
            assert proc.returncode == 1 and "another slimformer run is using out" in proc.stderr
    finally:
        holder.kill()
        holder.wait()
