"""Issue 2 figures: the MiniLM teachers (SST-2, CoLA, MRPC), the profile at seq len 128, and fine-tuning
throughput in one process vs two processes under torchrun (gloo, CPU).

    flock /tmp/sf/cpu.lock python benchmarks/bench_foundation.py [--skip-throughput]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import common  # noqa: F401  (puts src/ on the path)
import torch

from slimformer.evaluate import evaluate_task, footprint
from slimformer.profile import profile_model

THROUGHPUT_EXAMPLES = 1024


def teachers() -> list[dict]:
    rows = []
    for name in ("sst2", "cola", "mrpc"):
        model, tok = common.teacher(name)
        t = common.task(name)
        row = {"task": name, "train_examples": len(t.split("train")), **common.TEACHER_RECIPES[name]}
        for split in ("dev", "test") if name == "mrpc" else ("dev",):
            for k, v in evaluate_task(model, tok, t, split).items():
                row[f"{split}_{k}"] = round(v, 4)
        stats = json.loads((common.teacher_dir(name) / "train_stats.json").read_text())
        row["train_minutes"] = round(stats["train_runtime_s"] / 60, 1)
        rows.append(row)
    return rows


def profiles() -> dict:
    model, tok = common.teacher("sst2")
    out = {}
    for batch in (1, 32):
        prof = profile_model(model, tok, seq_len=128, batch=batch, n_threads=2, runs=10 if batch == 1 else 5)
        out[f"b{batch}"] = {"by_kind": prof["by_kind"], "total": prof["total"], "threads": prof["threads"]}
    out["footprint"] = footprint(model, tok, 128, (1, 32), n_threads=2)
    return out


def throughput() -> list[dict]:
    """examples/s of `slimformer finetune` on the first 1024 SST-2 examples, 1 epoch, max_len 64."""
    rows = []
    data = str(common.DATA / "sst2")
    for procs in (1, 2):
        with tempfile.TemporaryDirectory() as d:
            args = ["finetune", "minilm", "--task", "sst2", "--data", data, "--out", f"{d}/out", "--epochs", "1",
                    "--max-len", "64", "--batch-size", "16", "--max-train-examples", str(THROUGHPUT_EXAMPLES)]
            env = {**os.environ, "SLIMFORMER_QUIET": "1", "HF_HUB_OFFLINE": "1",
                   "OMP_NUM_THREADS": str(2 // procs)}
            if procs == 1:
                cmd = [sys.executable, "-m", "slimformer", *args]
            else:
                cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "slimformer", *args]
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=common.ROOT)
            if res.returncode != 0:
                raise SystemExit(res.stderr[-3000:])
            stats = json.loads(Path(f"{d}/out/train_stats.json").read_text())
            rows.append({"processes": procs, "threads_per_process": 2 // procs,
                         "per_device_batch": 16, "global_batch": 16 * procs,
                         "examples_per_s": round(stats["stats"]["train_samples_per_second"], 1),
                         "runtime_s": round(stats["stats"]["train_runtime_s"], 1),
                         "dev_accuracy": round(stats["eval"]["accuracy"], 4)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    result = {"teachers": teachers(), "profile": profiles()}
    common.print_table(result["teachers"], "MiniLM teachers")
    for b in ("b1", "b32"):
        common.print_table([{"component": k, **{kk: round(vv, 3) for kk, vv in v.items()}}
                            for k, v in result["profile"][b]["by_kind"].items()], f"profile {b}, seq 128, 2 threads")
    if not args.skip_throughput:
        result["throughput"] = throughput()
        common.print_table(result["throughput"], "fine-tuning throughput (SST-2, 1024 examples, max_len 64)")
    print(common.write_result("foundation", result))


if __name__ == "__main__":
    main()
