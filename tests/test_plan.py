"""`slimformer plan` on a tiny model with a tiny budget: a recipe that validates, a report, a front, resume."""
from __future__ import annotations

import json

import pytest
import yaml

from conftest import make_tiny_bert, write_tiny_sst2


@pytest.fixture(scope="module")
def planned(tmp_path_factory, tokenizer):
    from slimformer import models
    from slimformer.plan import PlanSettings, SearchSpace, run_plan

    tmp_path = tmp_path_factory.mktemp("plan")
    (tmp_path / "data").mkdir()
    task = write_tiny_sst2(tmp_path / "data", 48)
    models.save(make_tiny_bert(layers=4, hidden=64, ffn=128), tokenizer, tmp_path / "teacher")
    settings = PlanSettings(max_drop=100.0, budget_minutes=10, seq_len=16, batches=[1, 4], latency_budget_s=0.3)
    space = SearchSpace(layers=[1.0, 0.5], heads=[1.0, 0.5], ffn=[0.5], int8=[False], epochs=1.0,
                        proxy_examples=16, importance_examples=8)
    report = run_plan(str(tmp_path / "teacher"), task, tmp_path / "plan", settings, space,
                      data=str(tmp_path / "data"))
    return tmp_path, report


def test_plan_writes_a_recipe_that_compress_reruns(planned):
    from slimformer import tasks
    from slimformer.recipe import read_recipe, run_recipe_file

    tmp, report = planned
    out = tmp / "plan"
    assert len(report["proxies"]) == 4  # 2 depths x 2 head ratios x 1 FFN ratio (vocab on, fp32)
    assert report["chosen"] in {r["name"] for r in report["finals"]}
    for f in ("report.md", "front.png", "plan.json", "recipe.yaml"):
        assert (out / f).stat().st_size > 0
    recipe = read_recipe(out / "recipe.yaml")  # validates
    chosen = next(r for r in report["finals"] if r["name"] == report["chosen"])
    assert [s.step for s in recipe.parsed_steps()] == [s["step"] for s in chosen["steps"]]
    # the chosen recipe, re-run by compress, gives a model of the chosen one's parameter count
    res = run_recipe_file(str(tmp / "teacher"), out / "recipe.yaml", tmp / "again")
    assert res.rows[-1]["params"] == chosen["params"]
    assert tasks.load("sst2", tmp / "data").name == report["task"]
    md = (out / "report.md").read_text()
    assert "Chosen:" in md and "GEMM peak" in md and report["chosen"] in md


def test_plan_candidates_change_what_they_claim(planned):
    _, report = planned
    by = {r["name"]: r for r in report["proxies"]}
    full, half = by["L4-h1-f0.5-vocab-fp32"], by["L2-h1-f0.5-vocab-fp32"]
    assert half["params"] < full["params"]
    assert by["L4-h0.5-f0.5-vocab-fp32"]["params"] < full["params"]
    assert all(set(r["speedup"]) == {1, 4} for r in report["proxies"])


def test_plan_resumes_without_rerunning(planned, monkeypatch):
    from slimformer import tasks
    from slimformer.plan import PlanSettings, SearchSpace, run_plan
    from slimformer.plan import search

    tmp, report = planned
    calls = []
    monkeypatch.setattr("slimformer.recipe.compress", lambda *a, **k: calls.append(a) or None)
    settings = PlanSettings(max_drop=100.0, budget_minutes=10, seq_len=16, batches=[1, 4], latency_budget_s=0.3)
    space = SearchSpace(layers=[1.0, 0.5], heads=[1.0, 0.5], ffn=[0.5], int8=[False], epochs=1.0,
                        proxy_examples=16, importance_examples=8)
    again = run_plan(str(tmp / "teacher"), tasks.load("sst2", tmp / "data"), tmp / "plan", settings, space)
    assert calls == [] and again["chosen"] == report["chosen"]
    state = json.loads((tmp / "plan" / search.STATE).read_text())
    assert state["spent_s"] > 0
    with pytest.raises(Exception, match="other settings"):
        run_plan(str(tmp / "teacher"), tasks.load("sst2", tmp / "data"), tmp / "plan",
                 settings.model_copy(update={"max_drop": 0.5}), space)


def test_plan_grid_and_pareto():
    from slimformer.plan.front import pareto
    from slimformer.plan.space import SearchSpace, grid

    cands = grid(SearchSpace(layers=[1.0, 2 / 3, 0.5], heads=[1.0], ffn=[1.0], vocab=[False], int8=[False, True]),
                 6, vocab_ok=True, int8_ok=True)
    assert {c.name for c in cands} == {"L6-h1-f1-int8", "L4-h1-f1-fp32", "L4-h1-f1-int8", "L3-h1-f1-fp32",
                                       "L3-h1-f1-int8"}  # the untouched model is the reference, not a candidate
    steps = next(c for c in cands if c.name == "L6-h1-f1-int8").steps(SearchSpace(), False, False)
    assert [s["step"] for s in steps] == ["quantize_dynamic"]  # nothing structural: no recovery either
    l3 = next(c for c in cands if c.name == "L3-h1-f1-int8")
    full, proxy = (l3.steps(SearchSpace(augment=4), False, p) for p in (False, True))
    assert [s.get("augment") for s in full if s["step"] == "distill"] == [4]  # the full recovery augments,
    assert all("augment" not in s for s in proxy)  # the proxy never does
    from slimformer.steps import parse_step
    assert parse_step(full[-2], 0).augment == 4  # and the step validates
    full, proxy = (l3.steps(SearchSpace(), False, p)[-2] for p in (False, True))
    assert (full["hidden"], full["cache_teacher"]) == (1.0, False) and parse_step(full, 0).hidden == 1.0
    assert "hidden" not in proxy and proxy["cache_teacher"]  # the proxy keeps the cheap cached logits
    cheap = l3.steps(SearchSpace(hidden=0), False, False)[-2]
    assert "hidden" not in cheap and cheap["cache_teacher"]
    pts = [{"a": 1, "b": 3}, {"a": 2, "b": 2}, {"a": 3, "b": 3}, {"a": 1, "b": 3}]
    assert pareto(pts, ("a", "b")) == [pts[0], pts[1], pts[3]]


def test_plan_cli_refuses_bad_fractions(cli_inputs):
    from typer.testing import CliRunner

    from slimformer.cli import app

    r = CliRunner().invoke(app, ["plan", str(cli_inputs / "model"), "--task", "sst2", "--data",
                                 str(cli_inputs / "data"), "--layers", "0.5,1.5", "--out", str(cli_inputs / "p")])
    assert r.exit_code != 0 and "--layers" in str(r.exception or r.output)
    assert yaml  # (yaml is used by the recipe checks above)


def test_round1_skips_candidates_smaller_than_a_hopeless_one(planned, monkeypatch):
    """Shallowest first, widest first within a depth; once a candidate lost more than max_drop + slack, every
    candidate no larger than it (same vocabulary and INT8 choice) is skipped, and the report says why."""
    from slimformer import tasks
    from slimformer.plan import PlanSettings, SearchSpace
    from slimformer.plan import search

    tmp, _ = planned
    task = tasks.load("sst2", tmp / "data")
    space = SearchSpace(layers=[1.0, 0.5], heads=[1.0, 0.5], ffn=[1.0, 0.5], int8=[False])
    pl = search.Planner(str(tmp / "teacher"), task, tmp / "plan-skip", PlanSettings(max_drop=1.0, proxy_slack=0.0),
                        space)
    base = pl.base_metrics()["accuracy"]
    ran = []

    def fake_run(model, tok, task, c, steps, out, settings, final):
        ran.append(c.name)
        return {"name": c.name, "metrics": {"accuracy": base - (0.5 if c.layers == 2 else 0.0)}}

    monkeypatch.setattr(search, "_run", fake_run)
    cands = pl.candidates()
    assert [c.name for c in cands][:4] == ["L2-h1-f1-vocab-fp32", "L2-h1-f0.5-vocab-fp32", "L2-h0.5-f1-vocab-fp32",
                                           "L2-h0.5-f0.5-vocab-fp32"]
    done, skipped = pl.round1(cands)
    assert ran == ["L2-h1-f1-vocab-fp32", "L4-h1-f1-vocab-fp32", "L4-h1-f0.5-vocab-fp32", "L4-h0.5-f1-vocab-fp32",
                   "L4-h0.5-f0.5-vocab-fp32"]
    assert len(skipped) == 3 and all("L2-h1-f1-vocab-fp32 already lost too much" in s for s in skipped)


def test_plan_on_a_sentence_encoder_preserves_the_embedding(tmp_path, tokenizer):
    """Embedding mode: width is scored on the embedding objective and recovery is distill_embeddings."""
    from slimformer import models
    from slimformer.plan import PlanSettings, SearchSpace, run_plan

    from test_embeddings import sts_task, tiny_encoder

    models.save(tiny_encoder(layers=2), tokenizer, tmp_path / "enc")
    settings = PlanSettings(max_drop=100.0, budget_minutes=10, seq_len=16, batches=[1], latency_budget_s=0.2)
    space = SearchSpace(layers=[0.5], heads=[0.5], ffn=[1.0], int8=[False], epochs=1.0, proxy_examples=16,
                        importance_examples=8)
    report = run_plan(str(tmp_path / "enc"), sts_task(), tmp_path / "plan", settings, space)
    steps = report["finals"][0]["steps"]
    assert [s["step"] for s in steps] == ["prune_vocab", "drop_layers", "prune_heads", "distill_embeddings"]
    assert steps[2]["criterion"] == "embedding" and report["metric"] == "spearman"
    assert report["chosen"] == report["finals"][0]["name"] and (tmp_path / "plan" / "recipe.yaml").exists()


def test_round2_order_fastest_hopeful_first_else_the_closest():
    from types import SimpleNamespace

    from slimformer.plan import PlanSettings
    from slimformer.plan.search import Planner

    me = SimpleNamespace(settings=PlanSettings(max_drop=1.0, proxy_slack=1.0))

    def p(name, drop, ms, size=1):
        return {"name": name, "drop": drop, "ms": ms, "size_bytes": size, "fits": True}

    order = Planner.round2_order(me, [p("a", 1.5, 10), p("b", 0.5, 20), p("c", 5.0, 5), p("d", 1.8, 30)])
    assert [r["name"] for r in order] == ["a", "b"]  # c hopeless; d dominated by a (slower and worse)
    order = Planner.round2_order(me, [p("a", 7.0, 10), p("b", 4.0, 20), p("c", 9.0, 30)])
    assert [r["name"] for r in order] == ["b", "a"]  # none hopeful: the front, most accurate first
