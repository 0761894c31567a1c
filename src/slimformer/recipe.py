"""Recipes: a validated list of steps (YAML or Python), the runner, and the run ledger.

    task: sst2                      # optional defaults; the CLI's --task/--data override them
    data: ../shared/data/sst2
    eval: {split: dev, seq_len: 128}
    steps:
      - step: drop_layers
        keep: 4
      - step: finetune
        epochs: 1

The runner works on a copy of the model, evaluates it after every step (task metric, parameters, size on
disk, latency at batch 1 and 32 with its spread and reliability, see bench.py) and appends one JSON line
per step to `ledger.jsonl`. Finished steps are checkpointed in `<out>.work/`, so re-running the same
command after an interruption resumes after the last finished step. The output directory is written
atomically at the end.
"""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Sequence

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import ledger, models
from .bench import compare_latency
from .errors import SlimformerError, check
from .evaluate import evaluate_task
from .fsutil import atomic_dir, write_json
from .models.io import num_params, save
from .progress import console
from .reliability import RUN_DRIFT, speedup
from .runlock import clear_work_dir, run_lock
from .steps import Context, StepConfig, apply_step, parse_step
from .tasks import Task
from .tasks import load as load_task


class EvalSettings(BaseModel):
    """How the runner measures the model after each step."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    split: str | None = Field(None, description="split to evaluate (default: the task's: dev, or test for LMs)")
    max_examples: int | None = Field(None, ge=1, description="evaluate on the first N examples only")
    max_len: int = Field(128, ge=8, le=65536, description="tokenizer truncation for evaluation and training")
    seq_len: int = Field(128, ge=1, le=65536, description="sequence length of the latency measurement")
    batches: list[Annotated[int, Field(ge=1, le=4096)]] = Field(default_factory=lambda: [1, 32], min_length=1)
    threads: int | None = Field(None, ge=1)
    latency_budget_s: float = Field(4.0, gt=0, le=600, description="seconds of timing per model and batch size")
    each_step: bool = Field(True, description="measure metrics and latency after every step; false: only the "
                            "final model (parameters and size are always recorded)")
    tolerance: float | None = Field(1.0, ge=0, description="warn when a step leaves any task metric worse than "
                                    "the input model by more than this (points; % for perplexity); null: off")


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    task: str | None = None
    data: str | None = None
    task_options: dict[str, Any] = Field(default_factory=dict)
    seed: int = 42
    eval: EvalSettings = Field(default_factory=EvalSettings)
    steps: list[Any]

    def parsed_steps(self) -> list[StepConfig]:
        return validate_order([parse_step(s, i) for i, s in enumerate(self.steps)])


def validate_order(cfgs: list[StepConfig]) -> list[StepConfig]:
    """A recipe needs a step, and a quantization step comes last (nothing can prune or train INT8 weights)."""
    check(len(cfgs) > 0, "recipe has no steps")
    q = [i for i, c in enumerate(cfgs) if c.quantizes]
    check(not q or q[0] == len(cfgs) - 1, f"recipe step {q[0] + 1 if q else 0} ({cfgs[q[0]].step if q else ''}) "
          f"quantizes the model, so it must be the last step (step {q[0] + 2 if q else 0} follows it)")
    return cfgs


MAX_RECIPE_BYTES = 1 << 20


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors/aliases: a recipe never needs them, and nested aliases expand exponentially."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise SlimformerError(f"line {event.start_mark.line + 1}: YAML aliases (*name) are not allowed in "
                                  f"recipes")
        return super().compose_node(parent, index)


def read_recipe(path: str | Path) -> Recipe:
    """Load and validate a recipe YAML file (one-line errors on any problem)."""
    p = Path(path)
    check(p.is_file(), f"recipe not found: {p}")
    check(p.stat().st_size <= MAX_RECIPE_BYTES, f"{p}: {p.stat().st_size} bytes; a recipe is at most 1 MB")
    try:
        raw = yaml.load(p.read_bytes().decode("utf-8"), Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader)
    except UnicodeDecodeError as e:
        raise SlimformerError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except SlimformerError as e:
        raise SlimformerError(f"{p}: {e}") from e
    except (yaml.YAMLError, RecursionError) as e:
        raise SlimformerError(f"{p}: not valid YAML ({(str(e).splitlines() or [type(e).__name__])[0]})") from e
    if isinstance(raw, list):
        raw = {"steps": raw}
    check(isinstance(raw, dict), f"{p}: expected a mapping with 'steps' (or a list of steps)")
    try:
        recipe = Recipe(**raw)
    except ValidationError as e:
        msgs = [f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()]
        text = "; ".join(msgs).replace("Extra inputs are not permitted", "unknown field")
        raise SlimformerError(f"{p}: {text}") from e
    if recipe.data and not Path(recipe.data).is_absolute():
        candidate = (p.parent / recipe.data).resolve()
        if candidate.exists():
            recipe.data = str(candidate)
    check(recipe.data is None or recipe.task is not None, f"{p}: data: is given but no task: (name the task)")
    recipe.parsed_steps()
    return recipe


@dataclass
class Result:
    """What compress returns: the compressed model and one ledger row per stage (input + each step)."""

    model: torch.nn.Module
    rows: list[dict[str, Any]] = field(default_factory=list)
    comparison: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        from .report import ledger_table

        return ledger_table(self.rows, self.comparison)


def _digest(steps: Sequence[StepConfig], upto: int) -> str:
    text = json.dumps([[s.step, s.model_dump(mode="json")] for s in steps[: upto + 1]], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def measure(model: torch.nn.Module, tokenizer: Any, task: Task | None, ev: EvalSettings, full: bool = True
            ) -> dict[str, Any]:
    """Metrics on the eval split, parameters, bytes on disk, latency per batch size (`full=False`: the
    parameters and bytes only)."""
    row: dict[str, Any] = {"params": num_params(model)}
    if not full:
        return {**row, "size_bytes": _size(model), "seq_len": ev.seq_len}
    if task is not None:
        row["metrics"] = evaluate_task(model, tokenizer, task, task.eval_split(ev.split or task.default_split),
                                       ev.max_len, ev.max_examples)
    row["size_bytes"] = _size(model)
    for b in ev.batches:
        lat = compare_latency({"m": model}, tokenizer, b, ev.seq_len, ev.threads, budget_s=ev.latency_budget_s)["m"]
        row[f"latency_b{b}_ms"] = round(lat.median_ms, 3)
        row[f"latency_b{b}"] = lat.summary()
        row["threads"] = lat.threads
    row["seq_len"] = ev.seq_len
    return row


def _size(model: torch.nn.Module) -> int:
    from .bench import saved_size

    return saved_size(model)


def compress(
    model: torch.nn.Module,
    tokenizer: Any,
    steps: Sequence[StepConfig | dict[str, Any]],
    out: str | Path,
    task: Task | None = None,
    eval_settings: EvalSettings | None = None,
    seed: int = 42,
    restart: bool = False,
    recipe_text: str | None = None,
) -> Result:
    """Run steps on a copy of model; write the final model, ledger and summary to `out` (atomically)."""
    ev = eval_settings or EvalSettings()
    cfgs = validate_order([parse_step(s, i) for i, s in enumerate(steps)])
    preflight(model, cfgs, task, ev)
    out = Path(out).resolve()
    work = out.parent / f".{out.name}.work"
    with run_lock(work, out):  # one run per output: a second one fails at once
        if restart:
            clear_work_dir(work)
        return _run(model, tokenizer, cfgs, out, work, task, ev, seed, recipe_text)


def _run(model: torch.nn.Module, tokenizer: Any, cfgs: list[StepConfig], out: Path, work: Path, task: Task | None,
         ev: EvalSettings, seed: int, recipe_text: str | None) -> Result:
    """The runner proper (compress holds the work directory's lock)."""
    work.mkdir(parents=True, exist_ok=True)
    ledger_path = work / "ledger.jsonl"
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    current = copy.deepcopy(model)
    ctx = Context(tokenizer=tokenizer, task=task, work_dir=work, teacher=teacher, seed=seed, max_len=ev.max_len,
                  teacher_tokenizer=tokenizer)

    rows, start = _resume(ledger_path, cfgs, work)
    ledger.rewrite(ledger_path, rows)  # exactly the rows resumed from: no torn line, no stale rows
    if start > 0:
        console.print(f"[yellow]resuming after step {start} ({cfgs[start - 1].step}) from {work}", soft_wrap=True)
        current, tokenizer = models.load(str(work / f"after-{start:02d}"))  # prune_vocab may have changed it
        ctx.tokenizer = tokenizer
    if not rows:
        console.print("[bold]measuring the input model")
        rows.append({"index": 0, "step": "input", "config": {},
                     **measure(current, tokenizer, task, ev, full=ev.each_step)})
        ledger.append(ledger_path, rows[-1])
    for i in range(start, len(cfgs)):
        cfg = cfgs[i]
        console.print(f"[bold]step {i + 1}/{len(cfgs)}: {cfg.describe()}")
        ctx.info = {}
        ctx.work_dir = work / f"step-{i + 1:02d}-{cfg.step}-{_digest(cfgs, i)}"
        ctx.resume = ctx.work_dir.exists()  # a step interrupted mid-training continues from its checkpoints
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        current = apply_step(current, cfg, ctx)
        tokenizer = ctx.tokenizer  # a step may replace it (prune_vocab)
        seconds = time.perf_counter() - t0
        save(current, tokenizer, work / f"after-{i + 1:02d}")
        row = {"index": i + 1, "step": cfg.step, "config": cfg.model_dump(mode="json"), "seconds": round(seconds, 2),
               "digest": _digest(cfgs, i), "info": ctx.info,
               **measure(current, tokenizer, task, ev, full=ev.each_step or i == len(cfgs) - 1)}
        if task is not None and ev.tolerance is not None and "metrics" in rows[0]:
            row["guard"] = step_guard(task, rows[0], row, ev.tolerance)
        rows.append(row)
        ledger.append(ledger_path, row)
        from .report import print_ledger

        print_ledger(rows)
    comparison = _final_comparison(model, current, tokenizer, ev, rows[0])
    with atomic_dir(out) as tmp:
        save(current, tokenizer, tmp / "model")
        for f in tmp.joinpath("model").iterdir():
            f.rename(tmp / f.name)
        tmp.joinpath("model").rmdir()
        shutil.copy(ledger_path, tmp / "ledger.jsonl")
        write_json(tmp / "summary.json", {"task": task.name if task else None, "rows": rows, "comparison": comparison})
        if recipe_text is not None:
            (tmp / "recipe.yaml").write_text(recipe_text)
    shutil.rmtree(work, ignore_errors=True)
    return Result(current, rows, comparison)


def preflight(model: torch.nn.Module, cfgs: list[StepConfig], task: Task | None, ev: EvalSettings) -> None:
    """Everything that can be checked before work starts: the eval split, the timed sequence length against the
    model's positions, data for the steps that need it, and each step against this model's shape."""
    if task is not None:
        task.eval_split(ev.split or task.default_split)
        task.check_model(model)
    from .models.io import check_positions

    check_positions(model, **{"eval.seq_len": ev.seq_len, "eval.max_len": ev.max_len})
    for i, cfg in enumerate(cfgs):
        if cfg.needs_data and task is None:
            raise SlimformerError(f"recipe step {i + 1} ({cfg.step}) needs task data: pass --task and --data "
                                  f"(or task/data in the recipe)")
        try:
            cfg.preflight(model, task)
        except SlimformerError as e:
            raise SlimformerError(f"recipe step {i + 1} ({cfg.step}): {e}") from e


def step_guard(task: Task, first: dict[str, Any], row: dict[str, Any], tolerance: float) -> dict[str, Any]:
    """Every metric of the task against the input model; a warning line when any got worse than tolerance."""
    from .quantize.guard import compare_metrics

    rows = compare_metrics(task, first.get("metrics", {}), row.get("metrics", {}), tolerance)
    bad = [r for r in rows if r["over"]]
    if bad:
        text = "; ".join(f"{r['metric']} {r['before']:.4f} -> {r['after']:.4f} ({r['change']})" for r in bad)
        console.print(f"[bold red]warning: after step {row['index']} ({row['step']}): {text}; more than the "
                      f"tolerance of {tolerance:g} below the input model[/]")
    return {"ok": not bad, "tolerance": tolerance, "metrics": rows}


def _final_comparison(before: torch.nn.Module, after: torch.nn.Module, tokenizer: Any, ev: EvalSettings,
                      first: dict[str, Any] | None = None) -> dict[str, Any]:
    """Input vs output latency measured interleaved in the same run: the speed-up figure to trust, with its
    band and reliability. The input model is also compared with its own timing at the start of the run
    (`first`, the ledger's input row): if the machine's speed moved, the ledger's steps are not comparable."""
    comp: dict[str, Any] = {"threads": None, "usable_cores": None, "seq_len": ev.seq_len}
    drifts = []
    for b in ev.batches:
        lat = compare_latency({"input": before, "output": after}, tokenizer, b, ev.seq_len, ev.threads,
                              budget_s=2 * ev.latency_budget_s)
        i, o = lat["input"].summary(), lat["output"].summary()
        comp[f"b{b}"] = {"input_ms": round(i["median_ms"], 3), "output_ms": round(o["median_ms"], 3),
                         **speedup(i, o, ("input", "output")), "input": i, "output": o}
        comp["threads"], comp["usable_cores"] = lat["input"].threads, lat["input"].usable_cores
        start = (first or {}).get(f"latency_b{b}_ms")
        if start and abs(i["median_ms"] / start - 1) > RUN_DRIFT:
            drifts.append(f"batch {b}: {start:.1f} ms at the start of the run, {i['median_ms']:.1f} ms at the end")
    if drifts:
        comp["run_drift"] = ("the input model's latency moved during the run (" + "; ".join(drifts) + "): the "
                             "machine's speed changed, so the ledger's per-step latencies are not comparable "
                             "with each other; compare input and output through the interleaved speed-up")
    return comp


def _resume(ledger_path: Path, cfgs: list[StepConfig], work: Path) -> tuple[list[dict[str, Any]], int]:
    """Rows of finished steps whose recipe prefix is unchanged and whose checkpoint exists."""
    rows = ledger.read(ledger_path)
    kept = [r for r in rows if r.get("index") == 0][:1]
    for r in rows:
        i = r.get("index", 0)
        if i >= 1 and i == len(kept) and i <= len(cfgs) and r.get("digest") == _digest(cfgs, i - 1) \
                and (work / f"after-{i:02d}" / "model.safetensors").exists():
            kept.append(r)
    if not kept:
        return [], 0
    return kept, len(kept) - 1


def run_recipe_file(model_name: str, recipe_path: str | Path, out: str | Path, task: str | None = None,
                    data: str | None = None, restart: bool = False, task_options: dict[str, Any] | None = None
                    ) -> Result:
    """The CLI's `compress`: load model and task, run the recipe file, write `out`."""
    recipe = read_recipe(recipe_path)
    task_name, data_path = task or recipe.task, data or recipe.data
    td = None
    if task_name:
        check(data_path is not None, f"task {task_name} needs --data (or data: in the recipe)")
        td = load_task(task_name, data_path, **{**recipe.task_options, **(task_options or {})})
    src = Path(models.resolve(model_name)) if Path(model_name).exists() else None
    check(src is None or src.resolve() != Path(out).resolve(), "--out must differ from the input model directory")
    model, tok = models.load(model_name, task=td)
    return compress(model, tok, recipe.parsed_steps(), out, td, recipe.eval, recipe.seed, restart,
                    Path(recipe_path).read_text())
