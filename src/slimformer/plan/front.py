"""The Pareto front of a plan (or of several runs): the figure, the Markdown report and the chosen recipe."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..fsutil import atomic_write_text


def pareto(points: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """The points no other point beats on every key (all keys: lower is better)."""
    def beats(a: dict[str, Any], b: dict[str, Any]) -> bool:
        return all(a[k] <= b[k] for k in keys) and any(a[k] < b[k] for k in keys)

    return [p for p in points if not any(beats(q, p) for q in points if q is not p)]


def draw_front(ax: Any, xs: list[float], ys: list[float], higher_is_better: bool = True) -> None:
    """The front of the points (x lower is better, y higher unless told) as a dashed staircase."""
    pts = [{"x": x, "y": -y if higher_is_better else y} for x, y in zip(xs, ys)]
    front = sorted(pareto(pts, ("x", "y")), key=lambda p: p["x"])
    if len(front) > 1:
        ax.step([p["x"] for p in front], [(-p["y"] if higher_is_better else p["y"]) for p in front], where="post",
                linestyle="--", color="tab:red", alpha=0.6, label="Pareto front")
        ax.legend(fontsize=8, loc="lower right")


def _figure(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = report["settings"]["batch"] or max(report["settings"]["batches"])
    inp = report.get("input_latency", {}).get(b) or report.get("input_latency", {}).get(str(b))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, key, label in ((axes[0], "ms", f"latency at batch {b}, seq {report['settings']['seq_len']} (ms)"),
                           (axes[1], "size", "size on disk (MB)")):
        def x(r: dict[str, Any], key: str = key) -> float:
            return r["ms"] if key == "ms" else r["size_bytes"] / 1e6

        for r in report["proxies"]:
            ax.plot([x(r)], [-r["drop"]], "o", color="grey", markerfacecolor="none", alpha=0.6)
        for j, r in enumerate(sorted(report["finals"], key=x)):
            star = r["name"] == report.get("chosen")
            ax.plot([x(r)], [-r["drop"]], "*" if star else "o", color="tab:red" if star else "tab:blue",
                    markersize=12 if star else 6)
            ax.annotate(r["name"], (x(r), -r["drop"]), textcoords="offset points", xytext=(4, 4 + 10 * (j % 4)),
                        fontsize=7)
        base_x = (inp["median_ms"] if inp else None) if key == "ms" else report.get("input_size_bytes", 0) / 1e6
        pts = [(x(r), -r["drop"]) for r in report["finals"]]
        if base_x:
            ax.plot([base_x], [0], "s", color="black")
            ax.annotate("input", (base_x, 0), textcoords="offset points", xytext=(4, -10), fontsize=8)
            pts.append((base_x, 0.0))
        draw_front(ax, [p[0] for p in pts], [p[1] for p in pts])
        ax.axhline(-report["settings"]["max_drop"], color="tab:orange", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel(label + ", log scale")
        ax.set_ylabel(f"change of {report['metric']} (points)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"slimformer plan on {report['task']}: hollow grey = proxy (short recovery), blue = full "
                 "recovery, star = chosen; dotted = accepted drop", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _row(r: dict[str, Any], batches: list[int]) -> str:
    m = r["metrics"]
    main = next(iter(m.values())) if m else float("nan")
    lat = " | ".join(f"{r['latency'][b]['median_ms']:.1f}{'' if r['latency'][b].get('reliable', True) else '?'} "
                     f"({r['speedup'][b]:.2f}x)" for b in batches)
    return (f"| {r['name']} | {main:.4f} | {-r['drop'] + 0.0:+.2f} | {r['size_bytes'] / 1e6:.1f} | {lat} | "
            f"{r['seconds'] / 60:.1f} |")


def _table(rows: list[dict[str, Any]], batches: list[int], metric: str) -> list[str]:
    head = ["candidate", metric, "change (pt)", "size (MB)", *(f"b{b} ms (speed-up)" for b in batches),
            "run (min)"]
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *(_row(r, batches) for r in sorted(rows, key=lambda r: r["ms"]))]


def contributions(run_dir: str | Path) -> list[str]:
    """What each step of a run did to the metric, the parameters, the size and the latency (its ledger)."""
    from ..report import ledger_table, load_summary

    return [ledger_table(load_summary(run_dir)["rows"])]


def write_plan_report(out: Path, report: dict[str, Any], task: Any, data: str | None = None) -> Path:
    """report.md + front.png, and recipe.yaml (the chosen candidate) or closest.yaml (none met the limits)."""
    from ..quantize.advice import int8_advice

    s = report["settings"]
    batches = s["batches"]
    png = _figure(report, out / "front.png")
    chosen = next((r for r in report["finals"] if r["name"] == report.get("chosen")), None)
    pick = chosen or (min(report["finals"], key=lambda r: (r["drop"], r["ms"])) if report["finals"] else None)
    limits = [f"accepted drop {s['max_drop']:g} pt"]
    limits += [f"latency <= {s['target_latency_ms']:g} ms at batch {s['batch']}"] if s["target_latency_ms"] else []
    limits += [f"size <= {s['max_size_mb']:g} MB"] if s["max_size_mb"] else []
    base = report["base_metrics"][report["metric"]]
    md = [f"# slimformer plan: {report['model']} on {report['task']}", "",
          f"Input: {report['metric']} {base:.4f}. Constraints: {', '.join(limits)}. Budget "
          f"{s['budget_minutes']:g} min. Latency: median ms at seq {s['seq_len']}, {s['threads'] or 'all usable'} "
          "threads, each model timed interleaved with the input model (one pair at a time, same process; `?`: not "
          "reliable); speed-up vs the input in its pair.", "",
          f"![front]({png.name})", ""]
    if chosen:
        md += [f"**Chosen: {chosen['name']}**: the fastest final model at batch {s['batch'] or max(batches)} "
               f"within every constraint ({-chosen['drop'] + 0.0:+.2f} pt, {chosen['size_bytes'] / 1e6:.1f} MB, "
               + ", ".join(f"{chosen['speedup'][b]:.2f}x at batch {b}" for b in batches)
               + "). Re-run it with `slimformer compress MODEL --recipe recipe.yaml --out DIR`.", ""]
    else:
        md += ["**No final model met every constraint.** " + (f"The closest ({pick['name']}, {-pick['drop']:+.2f} "
               "pt) is saved as closest.yaml." if pick else "No candidate was trained in full: " + ("; ".join(report["notes"])
               or "no candidate fits the size and latency limits") + "."), ""]
    md += ["## Final models (full recovery)", "", *_table(report["finals"], batches, report["metric"]), "",
           "## Round 1: every candidate with the proxy recovery", "",
           *_table(report["proxies"], batches, report["metric"]), ""]
    lim = report.get("limits")
    if lim:
        pk = lim["peak"]
        md += ["## The physical limit", "",
               f"Measured GEMM peak here ({pk['threads']} threads, {'x'.join(map(str, pk['shape']))}): fp32 "
               f"{pk['fp32_gflops']} GFLOP/s (torch), INT8 {pk['int8_gops']} GOP/s (ONNX Runtime MatMulInteger). "
               f"{lim['model']}: " + "; ".join(f"batch {b}: {lim['gflop_per_forward'][b]} G(FL)OP per forward, "
                                               f"{lim['achieved'][b]} G(FL)OP/s achieved" for b in batches)
               + ". The rest of the time goes to what is not a GEMM (LayerNorm, GELU, softmax, quantizing "
               "activations, the runtime's overhead).", ""]
    advice = int8_advice(None)
    advice.append("unstructured sparsity is not in the grid: dense kernels on this CPU do not get faster from "
                  "zeros (docs/BENCHMARKS.md section 9); a GPU would rather use fp16/bf16 and structured pruning")
    md += ["## Advice for this machine", "", *(f"- {a}" for a in advice), ""]
    md += [f"- not tried in round 1: {', '.join(report['not_tried'])}"] if report["not_tried"] else []
    md += [f"- {n}" for n in report["notes"]]
    if pick:
        md += ["", f"## What each step of {pick['name']} contributed (its own run, measured after every step)", "",
               *contributions(pick["run"])]
        recipe = {"task": report["task"], **({"data": data} if data else {}),
                  "eval": {"seq_len": s["seq_len"], "batches": batches}, "steps": pick["steps"]}
        name = "recipe.yaml" if chosen else "closest.yaml"
        atomic_write_text(out / name, f"# chosen by `slimformer plan` ({pick['name']}); see report.md\n"
                          + yaml.safe_dump(recipe, sort_keys=False))
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    return out / "report.md"
