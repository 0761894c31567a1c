"""`slimformer demo`: fine-tune MiniLM on SST-2, evaluate, profile, run the example recipe, report."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from . import models, tasks
from .errors import check
from .evaluate import evaluate_task
from .fsutil import write_json
from .outputs import mark_folder
from .profile import profile_model
from .progress import console, show
from .recipe import compress, read_recipe
from .report import comparison_line, print_ledger, profile_table, write_report
from .train import TrainConfig, finetune

QUICK_TRAIN = 1200  # --quick: examples per training run (enough for the teacher to learn something)
QUICK_EVAL = 200


def _quick(step: object) -> object:
    """Shrink a step's training budget for a smoke run (only fields the step really has)."""
    fields = type(step).model_fields  # type: ignore[attr-defined]
    updates = {}
    if "max_train_examples" in fields:
        updates["max_train_examples"] = QUICK_TRAIN
    if "epochs" in fields:
        updates["epochs"] = 1.0
    for k in ("calib_examples", "importance_examples", "score_examples"):
        if k in fields:
            updates[k] = 64
    return step.model_copy(update=updates)  # type: ignore[attr-defined]


def run_demo(data_root: Path, out: Path, recipe_path: Path, quick: bool = False) -> None:
    sst2 = data_root / "sst2"
    check(sst2.is_dir(), f"SST-2 not found at {sst2}: pass --data-root (the folder holding sst2/)")
    task = tasks.load("sst2", sst2)
    mark_folder(out, "demo")
    recipe = read_recipe(recipe_path)
    teacher_dir = out / ("teacher-quick" if quick else "teacher")
    cfg = TrainConfig(epochs=1 if quick else 3, lr=1e-4 if quick else 5e-5, batch_size=32, max_len=128, seed=42,
                      max_train_examples=QUICK_TRAIN if quick else None)

    console.rule("[bold]1. fine-tune all-MiniLM-L6-v2 on SST-2 (the teacher)")
    if (teacher_dir / "model.safetensors").exists():
        console.print(f"reusing the teacher in {teacher_dir} (delete it to train again)")
        model, tok = models.load(str(teacher_dir), task=task)
    else:
        model, tok = models.load("minilm", task=task)
        model, stats = finetune(model, tok, task, cfg, out / ".teacher-train", resume=True)
        models.save(model, tok, teacher_dir)
        write_json(teacher_dir / "train_stats.json", {"config": cfg.model_dump(), "stats": stats})
        shutil.rmtree(out / ".teacher-train", ignore_errors=True)  # checkpoints only serve an interrupted run

    console.rule("[bold]2. evaluate on the SST-2 dev split")
    max_eval = QUICK_EVAL if quick else None
    metrics = evaluate_task(model, tok, task, "dev", 128, max_eval)
    console.print(f"dev {json.dumps(metrics)}" + (f" (first {max_eval} examples)" if max_eval else ""))

    console.rule("[bold]3. profile (seq len 128)")
    for batch in (1, 32):
        prof = profile_model(model, tok, seq_len=128, batch=batch, runs=3 if quick else 10)
        show(profile_table(prof))
        write_json(out / f"profile-b{batch}.json", prof)

    console.rule(f"[bold]4. compress with {recipe_path}")
    steps = recipe.parsed_steps()
    if quick:
        steps = [_quick(s) for s in steps]
    ev = recipe.eval.model_copy(update={"max_examples": max_eval or recipe.eval.max_examples,
                                        "latency_budget_s": 1.0 if quick else recipe.eval.latency_budget_s})
    student_dir = out / ("student-quick" if quick else "student")
    result = compress(model, tok, steps, student_dir, task, ev, recipe.seed,
                      recipe_text=recipe_path.read_text())

    console.rule("[bold]5. before / after")
    print_ledger(result.rows)
    console.print(comparison_line(result.comparison))
    console.print(f"[green]student saved to {student_dir}; report: {write_report(student_dir)}")
