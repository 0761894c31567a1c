"""`slimformer plan`: the command line of the planner (plan/search.py does the work)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .cli import (LABEL_COL, MODE, MODEL_HELP, OVERWRITE_HELP, PAIR_COL, TASK_HELP, TEXT_COL, THREADS_HELP, _setup,
                  _task, app)
from .errors import check
from .outputs import check_output, mark_folder, write_errors


def _fractions(text: str, flag: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    check(bool(values) and all(0 < v <= 1 for v in values), f"{flag}: expected fractions in (0, 1] separated by "
          f"commas, got {text!r}")
    return values


@app.command()
def plan(model: str = typer.Argument(..., help=MODEL_HELP + "; the fine-tuned model to compress (the teacher)"),
         task: str = typer.Option(..., help=TASK_HELP + "; encoders only"),
         data: str = typer.Option(..., help="data path"),
         out: Path = typer.Option(Path("plan"), help="where the runs, report.md, front.png and recipe.yaml go "
                                  "(re-run the same command to resume)"),
         max_drop: float = typer.Option(1.0, min=0, help="accepted drop of the main metric, in points"),
         target_latency_ms: Optional[float] = typer.Option(None, help="latency limit at --batch (ms, seq len "
                                                           "--seq-len)"),
         batch: Optional[int] = typer.Option(None, min=1, help="the batch size that matters (default: the "
                                             "largest of 1 and 32)"),
         max_size_mb: Optional[float] = typer.Option(None, help="size limit on disk (MB)"),
         budget_minutes: float = typer.Option(60.0, help="wall-clock budget of the whole plan"),
         epochs: float = typer.Option(3.0, help="epochs of the full recovery distillation"),
         augment: int = typer.Option(0, min=0, help="full recovery: teacher-labelled altered copies of every "
                                     "training sentence (distill augment; each copy adds an epoch's worth of steps)"),
         hidden: float = typer.Option(1.0, min=0, help="full recovery: weight of TinyBERT's hidden-state loss "
                                      "(distill hidden; the teacher runs live, about twice the training time; "
                                      "0: kd + ce on cached teacher logits)"),
         proxy_examples: int = typer.Option(8000, min=16, help="round 1: one epoch over at most this many "
                                            "training examples"),
         layers: str = typer.Option("1,0.67,0.5", help="fractions of the layers to try"),
         heads: str = typer.Option("1,0.5", help="fractions of the attention heads to try"),
         ffn: str = typer.Option("1,0.5", help="fractions of the FFN neurons to try"),
         seq_len: int = typer.Option(128, min=8, help="sequence length of the latency measurement"),
         text_col: Optional[str] = TEXT_COL, pair_col: Optional[str] = PAIR_COL,
         label_col: Optional[str] = LABEL_COL, mode: Optional[str] = MODE,
         threads: Optional[int] = typer.Option(None, min=1, help=THREADS_HELP),
         overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP)) -> None:
    """Search recipes (depth, heads, FFN, vocabulary, INT8, recovery) for the fastest model within --max-drop,
    measuring every candidate here; write the Pareto front, report.md and the chosen recipe.yaml."""
    check(budget_minutes > 0, "--budget-minutes must be positive")
    check(target_latency_ms is None or target_latency_ms > 0, "--target-latency-ms must be positive")
    check(max_size_mb is None or max_size_mb > 0, "--max-size-mb must be positive")
    check(epochs > 0, "--epochs must be positive")
    fractions = {"layers": _fractions(layers, "--layers"), "heads": _fractions(heads, "--heads"),
                 "ffn": _fractions(ffn, "--ffn")}
    inputs = [model, data]
    check_output(out, inputs, overwrite, kind="container")
    _setup(threads)
    from .plan import PlanSettings, SearchSpace, run_plan
    from .progress import console
    from .runlock import run_lock

    settings = PlanSettings(max_drop=max_drop, target_latency_ms=target_latency_ms, batch=batch,
                            max_size_mb=max_size_mb, budget_minutes=budget_minutes, seq_len=seq_len, threads=threads)
    space = SearchSpace(epochs=epochs, proxy_examples=proxy_examples, augment=augment, hidden=hidden, **fractions)
    td = _task(task, data, text_col=text_col, pair_col=pair_col, label_col=label_col, mode=mode)
    check(td.kind in ("classification", "similarity"), f"plan: task kind {td.kind} is not supported yet (it "
          "plans encoders: classification, regression, sentence embeddings)")
    mark_folder(out, "plan")
    with run_lock(out, out), write_errors(out):
        report = run_plan(model, td, out, settings, space, data)
    chosen = report.get("chosen")
    console.print(f"[green]chosen: {chosen}[/green]" if chosen else "[yellow]no candidate met every constraint; "
                  "see report.md (closest.yaml holds the nearest)[/yellow]")
    console.print(f"[green]wrote {out / 'report.md'}[/green]")
