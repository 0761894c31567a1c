"""Shared benchmark helpers: data paths, cached MiniLM teachers, result writing and table printing.

Teachers are fine-tuned once (seeded) and cached outside the repo in $SLIMFORMER_CACHE
(default ~/.cache/slimformer/teachers/<task>). Every benchmark compresses these same teachers.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

DATA = Path(os.environ.get("SLIMFORMER_DATA", ROOT.parent / "shared" / "data"))
CACHE = Path(os.environ.get("SLIMFORMER_CACHE", Path.home() / ".cache" / "slimformer"))
RESULTS = ROOT / "benchmarks" / "results"
TEACHER_RECIPES = {  # the command line that reproduces each teacher is in docs/BENCHMARKS.md
    "sst2": dict(epochs=3, lr=5e-5, batch_size=32, max_len=128, seed=42),
    "cola": dict(epochs=3, lr=5e-5, batch_size=32, max_len=128, seed=42),
    "mrpc": dict(epochs=3, lr=5e-5, batch_size=32, max_len=128, seed=42),
}


def task(name: str) -> Any:
    from slimformer import tasks

    return tasks.load(name, DATA / name)


def teacher_dir(name: str) -> Path:
    return CACHE / "teachers" / name


def teacher(name: str) -> tuple[Any, Any]:
    """(model, tokenizer) of the MiniLM teacher fine-tuned on task `name`, training it once if not cached."""
    from slimformer import models
    from slimformer.train import TrainConfig, finetune

    out = teacher_dir(name)
    if not (out / "model.safetensors").exists():
        t = task(name)
        model, tok = models.load("minilm", task=t)
        work = CACHE / "work" / f"teacher-{name}"
        model, stats = finetune(model, tok, t, TrainConfig(**TEACHER_RECIPES[name]), work, resume=True)
        models.save(model, tok, out)
        (out / "train_stats.json").write_text(json.dumps(stats, indent=2, default=str))
    return models.load(str(out))


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """benchmarks/results/<name>.json with the machine description and a timestamp."""
    from slimformer.bench import machine
    from slimformer.fsutil import write_json

    payload = {"benchmark": name, "when": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
               "commit": git_commit(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), **payload}
    path = RESULTS / f"{name}.json"
    write_json(path, payload)
    return path


def git_commit() -> str:
    """The checked-out commit (with '+dirty' when the tree has changes), or 'unknown'."""
    import subprocess

    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (rev + ("+dirty" if dirty else "")) or "unknown"


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from slimformer.progress import show

    if not rows:
        return
    table = Table(title=title)
    cols = [c for c, v in rows[0].items() if not isinstance(v, (dict, list))]  # nested: JSON only (spreads)
    for c in cols:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*[f"{r.get(c):.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols])
    show(table, Console())


def ready_teacher(name: str, threads: int) -> tuple[Any, Any, Any]:
    """(teacher, tokenizer, task) of an already cached teacher, on `threads` threads; exits if it is missing
    (for benchmarks that must not spend their budget training one)."""
    import torch

    if not (teacher_dir(name) / "model.safetensors").exists():
        raise SystemExit(f"the {name} teacher is not ready in {teacher_dir(name)} (this script never trains it)")
    torch.set_num_threads(threads)
    model, tok = teacher(name)
    return model.eval(), tok, task(name)


def read_result(name: str) -> dict[str, Any] | None:
    """benchmarks/results/<name>.json as a dict, or None before its first run."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def previous_parts(name: str, keep: set[str]) -> dict[str, Any]:
    """The entries named in `keep` of benchmarks/results/<name>.json, if it exists (parts re-run one by one)."""
    path = RESULTS / f"{name}.json"
    prev = json.loads(path.read_text()) if path.exists() else {}
    return {k: v for k, v in prev.items() if k in keep}


def run_parts(result: str, table: dict[str, Any], parts: list[str], show: Any,
              header: dict[str, Any] | None = None) -> None:
    """Run `parts` of `table` (name -> callable) in order, keeping the other parts' stored results of
    results/`result`.json; the file is written after every part (with `header`), so a later failure loses
    nothing; then print show()."""
    payload = previous_parts(result, set(table) - set(parts))
    for p in parts:
        t0 = time.perf_counter()
        payload[p] = table[p]()
        print(f"{p} done in {time.perf_counter() - t0:.0f} s; wrote "
              f"{write_result(result, {**(header or {}), **payload})}", flush=True)
    print(show())


def parts_cli(script: str, parts: dict[str, Any], main: Any, markdown: Any) -> None:
    """`script part [part ...]` runs those parts with main(parts); `script markdown` prints the tables."""
    args = sys.argv[1:]
    if args == ["markdown"]:
        print(markdown())
        raise SystemExit(0)
    unknown = [p for p in args if p not in parts]
    if unknown or not args:
        raise SystemExit(f"usage: {script} {' '.join(parts)} | markdown (unknown: {unknown})")
    main(args)

