"""`slimformer plan`: find the fastest (or smallest) model within the user's accuracy drop, on this machine.

Two rounds, as successive halving does. Round 1 runs every candidate of the grid (space.py) with a cheap
proxy recovery (one epoch over a few thousand examples): architecture, size and latency are already final,
only the metric is a lower estimate. Every proxy's latency is measured interleaved with the input model. Round 2 trains the candidates on the proxy front (metric vs latency) that meet the size and
latency constraints and are not hopeless (proxy drop <= max_drop + proxy_slack), fastest first, with the
full recovery budget, until one meets max_drop or the time budget would be exceeded. The finals are then
measured again, each interleaved with the input model in the same process, and the fastest that meets every constraint
is chosen. Every candidate is an ordinary `compress` run in `OUT/runs/`: a re-run skips finished ones and
resumes an interrupted one.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .. import models
from ..errors import check
from ..fsutil import write_json
from ..progress import console
from .front import pareto
from .space import Candidate, SearchSpace, grid

STATE = "plan_state.json"


class PlanSettings(BaseModel):
    """The user's constraints and the plan's budget."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    max_drop: float = Field(1.0, ge=0, description="accepted drop of the main metric, in points")
    target_latency_ms: float | None = Field(None, gt=0, description="latency limit at `batch`")
    batch: int | None = Field(None, ge=1, description="the batch size that matters (default: the largest measured)")
    max_size_mb: float | None = Field(None, gt=0)
    budget_minutes: float = Field(60.0, gt=0)
    proxy_share: float = Field(0.5, gt=0, le=1, description="at most this share of the budget goes to round 1")
    proxy_slack: float = Field(3.0, ge=0, description="round 2 tries candidates whose proxy drop is at most "
                               "max_drop + this (the proxy underestimates the metric)")
    seq_len: int = Field(128, ge=8)
    batches: list[int] = Field([1, 32], min_length=1)
    latency_budget_s: float = Field(3.0, gt=0, description="seconds of timing per model and batch size")
    threads: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _batch_measured(self) -> PlanSettings:
        if self.batch is not None and self.batch not in self.batches:
            self.batches = sorted({*self.batches, self.batch})
        return self

    @property
    def decision_batch(self) -> int:
        return self.batch or max(self.batches)


def _eval(settings: PlanSettings, final: bool) -> Any:
    from ..recipe import EvalSettings

    return EvalSettings(seq_len=settings.seq_len, batches=[settings.decision_batch] if final else [1],
                        latency_budget_s=settings.latency_budget_s / 3 if final else min(0.3, settings.latency_budget_s),
                        threads=settings.threads, tolerance=None,
                        each_step=final)


def finished_run(out: Path, task_name: str, steps: list[dict[str, Any]], seq_len: int) -> tuple[bool, str]:
    """(whether `out` holds a finished compress run of exactly these steps, the recipe text such a run writes)."""
    text = yaml.safe_dump({"task": task_name, "eval": {"seq_len": seq_len}, "steps": steps}, sort_keys=False)
    recipe = out / "recipe.yaml"
    return (out / "summary.json").exists() and recipe.exists() and recipe.read_text() == text, text


def _run(model: Any, tok: Any, task: Any, c: Candidate, steps: list[dict[str, Any]], out: Path,
         settings: PlanSettings, final: bool, seed: int = 42) -> dict[str, Any]:
    """One candidate as a compress run in `out` (skipped when finished with the same steps)."""
    from ..recipe import compress
    from ..report import load_summary

    done, text = finished_run(out, task.name, steps, settings.seq_len)
    if done:
        summary = load_summary(out)
    else:
        compress(model, tok, steps, out, task, _eval(settings, final), seed=seed, recipe_text=text)
        summary = load_summary(out)
    rows = summary["rows"]
    last = rows[-1]
    train = sum(r.get("seconds", 0) for r in rows if str(r.get("step", "")).startswith("distill"))
    return {"name": c.name, "levers": c.levers, "run": str(out), "metrics": last.get("metrics", {}),
            "size_bytes": last["size_bytes"], "params": last["params"], "steps": steps,
            "seconds": round(sum(r.get("seconds", 0) for r in rows), 1), "train_seconds": round(train, 1)}


def _drop(task: Any, base: dict[str, Any], metrics: dict[str, Any]) -> float:
    """Points lost on the main metric in its own units (accuracy x100, BLEU as is, perplexity in %; negative:
    better than the input)."""
    from ..tasks.metrics import change

    return round(-change(task.main_metric, base[task.main_metric], metrics[task.main_metric])[0], 2)


def _measure_latency(models_: dict[str, Any], reference: Any, tok: Any, settings: PlanSettings, per_model_s: float
                     ) -> dict[int, dict[str, Any]]:
    """Each model timed interleaved with the reference (the input model), one pair at a time, per batch size:
    {batch: {name: summary, "input@name": the reference's summary in that pair}}. Pairs, not all at once:
    several ONNX Runtime sessions timed in one round robin disturb each other at batch 1 (their spinning
    thread pools), which widened the spread of all but the first by 50-80% in a first run."""
    from ..bench import compare_latency

    out: dict[int, dict[str, Any]] = {}
    for b in settings.batches:
        out[b] = {}
        for name, m in models_.items():
            lat = compare_latency({"input": reference, name: m}, tok, b, settings.seq_len, settings.threads,
                                  budget_s=2 * per_model_s)
            out[b][name], out[b][f"input@{name}"] = lat[name].summary(), lat["input"].summary()
    return out


class Planner:
    """The state of one plan: its output folder, budget clock, and the results so far."""

    def __init__(self, model_name: str, task: Any, out: Path, settings: PlanSettings, space: SearchSpace):
        self.model_name, self.task, self.out, self.settings, self.space = model_name, task, out, settings, space
        self.model, self.tok = models.load(model_name, task=task)
        self.state_path = out / STATE
        config = {"model": model_name, "task": task.name, "settings": settings.model_dump(),
                  "space": space.model_dump()}
        state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        check(not state or state.get("config") == config, f"plan: {out} holds a plan with other settings; give "
              "a new --out (or delete it) to plan again")
        self.state = {**state, "config": config, "spent_s": state.get("spent_s", 0.0)}
        self.t0 = time.monotonic()

    def spent(self) -> float:
        return self.state["spent_s"] + time.monotonic() - self.t0

    def checkpoint(self) -> None:
        write_json(self.state_path, {**self.state, "spent_s": self.spent()})

    def left(self) -> float:
        return self.settings.budget_minutes * 60 - self.spent()

    def candidates(self) -> list[Candidate]:
        from ..models import get_adapter

        ad = get_adapter(self.model)
        vocab_ok = not ad.lm_head_tied(self.model) and not ad.is_multi_stack(self.model) and \
            getattr(getattr(self.tok, "backend_tokenizer", None), "model", None).__class__.__name__ == "WordPiece"
        import torch

        int8_ok = not torch.cuda.is_available()
        cands = grid(self.space, len(ad.layers(self.model)), vocab_ok, int8_ok)
        return sorted(cands, key=lambda c: (c.layers, -c.heads * c.ffn))  # shallowest first, widest first in a depth

    def round1(self, cands: list[Candidate]) -> tuple[list[dict[str, Any]], list[str]]:
        """Every candidate with the proxy recovery, within its share of the budget. A candidate is skipped
        when one at least as large (depth, heads, FFN; same vocabulary and INT8 choice) already lost more than
        max_drop + proxy_slack: with less capacity it will not do better."""
        embedding = getattr(self.task, "mode", None) == "embedding"
        done, skipped = [], []
        limit = self.settings.budget_minutes * 60 * self.settings.proxy_share
        hopeless: list[Candidate] = []
        for i, c in enumerate(cands):
            out = self.out / "runs" / f"proxy-{c.name}"
            bigger = next((d for d in hopeless if d.layers >= c.layers and d.heads >= c.heads and d.ffn >= c.ffn
                           and (d.vocab, d.int8) == (c.vocab, c.int8)), None)
            if bigger is not None:
                skipped.append(f"{c.name} (the larger {bigger.name} already lost too much)")
                continue
            if not (out / "summary.json").exists() and self.spent() > limit:
                skipped.append(f"{c.name} (budget)")
                continue
            console.rule(f"[bold]plan round 1 ({i + 1}/{len(cands)}): {c.name}, proxy recovery; "
                         f"{self.left() / 60:.0f} of {self.settings.budget_minutes:g} min left")
            done.append({**_run(self.model, self.tok, self.task, c, c.steps(self.space, embedding, True), out,
                                self.settings, False), "candidate": c})
            if _drop(self.task, self.base_metrics(), done[-1]["metrics"]) > \
                    self.settings.max_drop + self.settings.proxy_slack:
                hopeless.append(c)
            self.checkpoint()
        return done, skipped

    def base_metrics(self) -> dict[str, Any]:
        if "base_metrics" not in self.state:
            from ..evaluate import evaluate_task

            console.print("[bold]plan: evaluating the input model")
            self.state["base_metrics"] = evaluate_task(self.model, self.tok, self.task,
                                                       self.task.eval_split(self.task.default_split), 128, None)
            self.checkpoint()
        return self.state["base_metrics"]

    def loaded(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        return {r["name"]: models.load(r["run"], task=self.task) for r in results}

    def latency(self, results: list[dict[str, Any]], per_model_s: float) -> tuple[dict[int, Any], Any]:
        """Latency of every result, each interleaved with the input; the tokenizer of the smallest vocabulary
        feeds all (random ids valid for every model)."""
        loaded = self.loaded(results)
        tok = min([self.tok, *(t for _, t in loaded.values())], key=len)
        return _measure_latency({k: m for k, (m, _) in loaded.items()}, self.model, tok, self.settings,
                                per_model_s), tok

    def annotate(self, results: list[dict[str, Any]], lat: dict[int, Any]) -> None:
        base = self.base_metrics()
        b = self.settings.decision_batch
        for r in results:
            r["drop"] = _drop(self.task, base, r["metrics"])
            r["latency"] = {bb: lat[bb][r["name"]] for bb in lat}
            r["input_latency"] = {bb: lat[bb][f"input@{r['name']}"] for bb in lat}
            r["speedup"] = {bb: round(r["input_latency"][bb]["median_ms"] / r["latency"][bb]["median_ms"], 2)
                            for bb in lat}
            r["ms"] = lat[b][r["name"]]["median_ms"]
            r["fits"] = self.fits(r)

    def fits(self, r: dict[str, Any]) -> bool:
        s = self.settings
        return (s.max_size_mb is None or r["size_bytes"] / 1e6 <= s.max_size_mb) and \
            (s.target_latency_ms is None or r["ms"] <= s.target_latency_ms)

    def round2_order(self, proxies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Front candidates (proxy drop vs latency vs size) that fit and are not hopeless, fastest first. When
        every proxy is hopeless, the front of those that fit, most accurate first: the budget left is spent
        on the closest ones rather than not at all."""
        s = self.settings
        fitting = [r for r in proxies if r["fits"]]
        hopeful = [r for r in fitting if r["drop"] <= s.max_drop + s.proxy_slack]
        pool = hopeful or fitting
        names = {r["name"] for r in pareto([{**r, "_size": r["size_bytes"]} for r in pool], ("drop", "ms", "_size"))}
        return sorted([r for r in pool if r["name"] in names], key=lambda r: r["ms"] if hopeful else r["drop"])

    def estimate(self, proxy: dict[str, Any]) -> float:
        """Seconds a full run of this candidate should take, from its proxy run."""
        n = len(self.task.split("train"))
        factor = self.space.epochs * n * (1 + self.space.augment) / max(1, min(self.space.proxy_examples, n))
        factor *= 2.0 if self.space.hidden else 1.0  # live teacher instead of cached logits (measured 1.9x)
        return proxy["train_seconds"] * factor + (proxy["seconds"] - proxy["train_seconds"]) + 60

    def round2(self, order: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
        embedding = getattr(self.task, "mode", None) == "embedding"
        done, notes = [], []
        for p in order:
            c: Candidate = p["candidate"]
            out = self.out / "runs" / f"full-{c.name}"
            est = self.estimate(p)
            if not (out / "summary.json").exists() and est > self.left():
                notes.append(f"{c.name}: not trained in full (about {est / 60:.0f} min needed, "
                             f"{max(0.0, self.left()) / 60:.0f} left in the budget)")
                continue
            console.rule(f"[bold]plan round 2: {c.name}, full recovery (about {est / 60:.0f} min); "
                         f"{self.left() / 60:.0f} min left")
            r = _run(self.model, self.tok, self.task, c, c.steps(self.space, embedding, False), out,
                     self.settings, True)
            done.append({**r, "candidate": c, "proxy_drop": p["drop"]})
            self.checkpoint()
            if _drop(self.task, self.base_metrics(), r["metrics"]) <= self.settings.max_drop:
                break  # the fastest candidate that meets the drop: slower ones cannot beat it on latency
        return done, notes


def choose(results: list[dict[str, Any]], settings: PlanSettings) -> dict[str, Any] | None:
    """The fastest final model at the decision batch that meets every constraint."""
    ok = [r for r in results if r["fits"] and r["drop"] <= settings.max_drop]
    return min(ok, key=lambda r: (r["ms"], r["size_bytes"])) if ok else None


def run_plan(model_name: str, task: Any, out: str | Path, settings: PlanSettings | None = None,
             space: SearchSpace | None = None, data: str | None = None) -> dict[str, Any]:
    """Plan, measure and write the report (report.md, front.png, plan.json, recipe.yaml) into `out`."""
    from ..bench import saved_size
    from .front import write_plan_report
    from .limits import float_twin, forward_flops, gemm_peak

    settings, space = settings or PlanSettings(), space or SearchSpace()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pl = Planner(model_name, task, out, settings, space)
    base = pl.base_metrics()
    cands = pl.candidates()
    check(bool(cands), "plan: the search space holds no candidate")
    console.print(f"plan: {len(cands)} candidates, budget {settings.budget_minutes:g} min; input "
                  f"{task.main_metric} {base[task.main_metric]:.4f}")
    proxies, skipped = pl.round1(cands)
    check(bool(proxies), "plan: the budget ended before the first candidate ran; give a larger --budget-minutes")
    names = sorted(r["name"] for r in proxies)
    saved = pl.state.get("proxy_latency") or {}
    if saved.get("names") == names:  # a resumed plan keeps the order round 2 was run in
        lat = {int(b): v for b, v in saved["latency"].items()}
    else:
        console.rule("[bold]plan: latency of every proxy, each interleaved with the input")
        lat, _ = pl.latency(proxies, settings.latency_budget_s / 2)
        pl.state["proxy_latency"] = {"names": names, "latency": lat}
        pl.checkpoint()
    pl.annotate(proxies, lat)
    finals, notes = pl.round2(pl.round2_order(proxies))
    report: dict[str, Any] = {"model": model_name, "task": task.name, "metric": task.main_metric,
                              "base_metrics": base, "settings": settings.model_dump(), "space": space.model_dump(),
                              "not_tried": skipped, "notes": notes, "proxies": proxies, "finals": finals,
                              "input_size_bytes": saved_size(pl.model, pl.tok)}
    if finals:
        console.rule("[bold]plan: latency of the final models, each interleaved with the input")
        lat, tok = pl.latency(finals, settings.latency_budget_s)
        report["input_latency"] = {b: lat[b][f"input@{finals[0]['name']}"] for b in lat}  # for the figure
        pl.annotate(finals, lat)
        chosen = choose(finals, settings)
        report["chosen"] = chosen["name"] if chosen else None
        pick = chosen or min(finals, key=lambda r: (r["drop"], r["ms"]))  # the closest; the faster of equals
        peak = gemm_peak(threads=settings.threads)
        twin = float_twin(pick["run"], task)
        report["limits"] = {"peak": peak, "model": pick["name"], "gflop_per_forward": {}, "achieved": {}}
        for b in settings.batches:
            flops = forward_flops(twin, tok, b, settings.seq_len)
            rate = flops / (pick["latency"][b]["median_ms"] / 1e3) / 1e9
            report["limits"]["gflop_per_forward"][b] = round(flops / 1e9, 3)
            report["limits"]["achieved"][b] = round(rate, 1)
    for r in proxies + finals:
        r.pop("candidate", None)
    pl.checkpoint()
    write_json(out / "plan.json", report)
    write_plan_report(out, report, task, data)
    return report
