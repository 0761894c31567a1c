"""The command line: one-line errors with a non-zero exit, and the commands on a tiny model."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from slimformer import models

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "SLIMFORMER_QUIET": "1"}


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slimformer.cli", *args], capture_output=True, text=True, env=ENV,
                          cwd=cwd, timeout=600)


@pytest.fixture
def tiny_dir(tmp_path, tiny_bert, tokenizer):
    models.save(tiny_bert(), tokenizer, tmp_path / "tiny")
    lines = "\n".join(f"{i % 2} {'good' if i % 2 else 'bad'} movie {i}" for i in range(20))
    for s in ("train", "dev", "test"):
        (tmp_path / "data" / "sst2").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "sst2" / f"stsa.binary.{s}").write_text(lines + "\n")
    return tmp_path


@pytest.mark.parametrize("args,pattern", [
    (["profile", "/no/such/model"], "no such model directory"),
    (["evaluate", "{tiny}", "--task", "sst3", "--data", "x"], "unknown task 'sst3'"),
    (["evaluate", "{tiny}", "--task", "sst2", "--data", "/no/data"], "data path not found"),
    (["compress", "{tiny}", "--recipe", "{recipe}", "--out", "{out}"], "unknown step 'prune_hedas'"),
    (["report", "{out}"], "no summary.json"),
])
def test_errors_are_one_line_and_nonzero(tiny_dir, args, pattern):
    recipe = tiny_dir / "r.yaml"
    recipe.write_text("steps:\n  - step: prune_hedas\n")
    fill = {"tiny": str(tiny_dir / "tiny"), "recipe": str(recipe), "out": str(tiny_dir / "out")}
    res = run(*[a.format(**fill) for a in args])
    assert res.returncode == 1
    assert pattern in res.stderr and "Traceback" not in res.stderr
    assert len([ln for ln in res.stderr.splitlines() if ln.startswith("error:")]) == 1


def test_profile_evaluate_compress_report_export(tiny_dir):
    tiny, data = str(tiny_dir / "tiny"), str(tiny_dir / "data" / "sst2")
    res = run("profile", tiny, "--seq-len", "16", "--runs", "2", "--json", str(tiny_dir / "p.json"))
    assert res.returncode == 0, res.stderr
    prof = json.loads((tiny_dir / "p.json").read_text())
    assert prof["total"]["params"] > 0 and {"median_ms", "p25_ms", "reliable"} <= set(prof["total"]["latency"])
    res = run("evaluate", tiny, "--task", "sst2", "--data", data, "--seq-len", "16", "--json", str(tiny_dir / "e.json"))
    assert res.returncode == 0, res.stderr
    ev = json.loads((tiny_dir / "e.json").read_text())
    assert 0 <= ev["accuracy"] <= 1 and ev["latency_b1"]["median_ms"] == pytest.approx(ev["latency_b1_ms"], abs=1e-3)
    recipe = tiny_dir / "r.yaml"
    recipe.write_text("eval: {seq_len: 16, batches: [1], latency_budget_s: 0.05}\nsteps:\n  - {step: drop_layers, keep: 1}\n")
    res = run("compress", tiny, "--recipe", str(recipe), "--out", str(tiny_dir / "out"), "--task", "sst2",
              "--data", data)
    assert res.returncode == 0, res.stderr
    res = run("report", str(tiny_dir / "out"), str(tiny_dir / "out"), "--out", str(tiny_dir / "cmp"))
    assert res.returncode == 0, res.stderr
    assert (tiny_dir / "out" / "report.png").stat().st_size > 0
    assert "| input |" in (tiny_dir / "cmp" / "comparison.md").read_text()
    res = run("export", str(tiny_dir / "out"), "--onnx", str(tiny_dir / "m.onnx"))
    assert res.returncode == 0, res.stderr
    assert (tiny_dir / "m.onnx").exists()
    res = run("export", str(tiny_dir / "tiny"), "--onnx", str(tiny_dir / "f.onnx"), "--optimize")
    assert res.returncode == 0, res.stderr
    assert "'Attention'" in res.stderr and (tiny_dir / "f.onnx").exists()


def test_compress_refuses_to_overwrite_its_input(tiny_dir):
    recipe = tiny_dir / "r.yaml"
    recipe.write_text("steps:\n  - {step: drop_layers, keep: 1}\n")
    res = run("compress", str(tiny_dir / "tiny"), "--recipe", str(recipe), "--out", str(tiny_dir / "tiny"))
    assert res.returncode == 1 and "must differ from the input" in res.stderr
