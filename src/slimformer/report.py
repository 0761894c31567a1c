"""Tables and plots of a run: accuracy vs size vs measured latency, per recipe step."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.table import Table

from .errors import SlimformerError, check
from .fsutil import atomic_write_text
from .progress import console


def _metric_names(rows: list[dict[str, Any]]) -> list[str]:
    return list(rows[0].get("metrics", {}).keys()) if rows else []


def rich_table(rows: list[dict[str, Any]], title: str = "slimformer run") -> Table:
    metrics = _metric_names(rows)
    base = rows[0] if rows else {}
    t = Table(title=title)
    for c in ["#", "step", *metrics, "Δ " + metrics[0] if metrics else None, "params (M)", "size (MB)",
              "b1 ms", "b32 ms"]:
        if c:
            t.add_column(c, justify="right" if c not in ("step",) else "left", no_wrap=c == "step")
    for r in rows:
        m = r.get("metrics", {})
        cells = [str(r.get("index", "")), r.get("step", "")]
        cells += [f"{m[k]:.4f}" if k in m else "-" for k in metrics]
        if metrics:
            delta = (m.get(metrics[0], float("nan")) - base.get("metrics", {}).get(metrics[0], float("nan"))) * 100
            cells.append(f"{delta:+.2f} pt")
        cells += [f"{r.get('params', 0) / 1e6:.2f}", f"{r.get('size_bytes', 0) / 1e6:.1f}",
                  f"{r.get('latency_b1_ms', float('nan')):.1f}", f"{r.get('latency_b32_ms', float('nan')):.1f}"]
        t.add_row(*cells)
    return t


def print_ledger(rows: list[dict[str, Any]], comparison: dict[str, Any] | None = None) -> None:
    console.print(rich_table(rows))
    if comparison:
        console.print(comparison_line(comparison))


def comparison_line(comp: dict[str, Any]) -> str:
    parts = [f"batch {k[1:]}: {v['input_ms']:.1f} -> {v['output_ms']:.1f} ms ({v['speedup']:.2f}x)"
             for k, v in comp.items() if k.startswith("b") and isinstance(v, dict)]
    return (f"speed-up measured interleaved in one run (seq len {comp.get('seq_len')}, "
            f"{comp.get('threads')} threads): " + "; ".join(parts))


def ledger_table(rows: list[dict[str, Any]], comparison: dict[str, Any] | None = None) -> str:
    """The run as a Markdown table (plus the same-run speed-up line)."""
    metrics = _metric_names(rows)
    head = ["#", "step", *metrics, "params (M)", "size (MB)", "latency b1 (ms)", "latency b32 (ms)", "step time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        m = r.get("metrics", {})
        cells = [str(r.get("index", "")), r.get("step", "")] + [f"{m[k]:.4f}" if k in m else "-" for k in metrics]
        cells += [f"{r.get('params', 0) / 1e6:.2f}", f"{r.get('size_bytes', 0) / 1e6:.1f}",
                  f"{r.get('latency_b1_ms', 0):.1f}", f"{r.get('latency_b32_ms', 0):.1f}", f"{r.get('seconds', 0):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if comparison:
        lines += ["", comparison_line(comparison)]
    return "\n".join(lines)


def load_summary(run_dir: str | Path) -> dict[str, Any]:
    """The summary.json of a `compress` output, checked: one-line errors for a missing, garbage or foreign file."""
    p = Path(run_dir) / "summary.json"
    check(p.is_file(), f"{run_dir}: no summary.json (is it the output of `slimformer compress`?)")
    try:
        summary = json.loads(p.read_text())
    except UnicodeDecodeError as e:
        raise SlimformerError(f"{p}: not a text file (not a slimformer summary)") from e
    except json.JSONDecodeError as e:
        raise SlimformerError(f"{p}: not valid JSON ({e.msg}, line {e.lineno}): not a slimformer summary") from e
    except OSError as e:
        raise SlimformerError(f"cannot read {p}: {e.strerror or e}") from e
    foreign = f"{p}: not a slimformer summary (is {run_dir} the output of `slimformer compress`?)"
    check(isinstance(summary, dict) and isinstance(summary.get("rows"), list) and summary["rows"], foreign)
    for r in summary["rows"]:
        check(isinstance(r, dict) and isinstance(r.get("index"), int) and isinstance(r.get("step"), str), foreign)
        check(isinstance(r.get("metrics", {}), dict)
              and all(isinstance(v, (int, float)) for v in r.get("metrics", {}).values()), foreign)
        check(all(isinstance(r.get(k, 0), (int, float)) for k in ("params", "size_bytes", "seconds")), foreign)
        check(all(isinstance(v, (int, float)) for k, v in r.items() if k.startswith("latency_")), foreign)
    comparison = summary.get("comparison")
    check(comparison is None or isinstance(comparison, dict), foreign)
    for k, v in (comparison or {}).items():
        if k.startswith("b"):
            check(isinstance(v, dict) and all(isinstance(v.get(x), (int, float)) for x in
                                              ("input_ms", "output_ms", "speedup")), foreign)
    return summary


def run_labels(runs: list[str | Path]) -> list[str]:
    """Distinct short labels for runs: the directory name, with as many parent folders as it takes."""
    parts = [Path(os.path.abspath(r)).parts for r in runs]
    for k in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-k:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{'/'.join(p[-1:])} ({i + 1})" for i, p in enumerate(parts)]  # the same run given twice


def _tasks(summaries: list[dict[str, Any]]) -> list[str]:
    """The task each run was measured on (when a summary predates the field: its metric names)."""
    if all(s.get("task") for s in summaries):
        return [str(s["task"]) for s in summaries]
    return ["/".join(s["rows"][0].get("metrics", {})) or "no task" for s in summaries]


def plot(rows: list[dict[str, Any]], path: str | Path, title: str = "after each recipe step",
         connect: bool = True) -> Path:
    """Metric vs size and metric vs batch-32 latency, one point per step, labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = _metric_names(rows)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "size_bytes", "size on disk (MB)"), (axes[1], "latency_b32_ms",
                                                                         "latency batch 32 (ms)")):
        xs = [r.get(key, 0) / (1e6 if key == "size_bytes" else 1) for r in rows]
        ys = [r.get("metrics", {}).get(metrics[0], 0) if metrics else 0 for r in rows]
        ax.plot(xs, ys, "o-" if connect else "o", color="tab:blue")
        for j, (x, y, r) in enumerate(zip(xs, ys, rows)):
            ax.annotate(f"{r.get('label', str(r['index']) + ':' + r['step'])}", (x, y), textcoords="offset points",
                        xytext=(4, 4 + 9 * (j % 3)), fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel(metrics[0] if metrics else "metric")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{metrics[0] if metrics else 'metric'} vs size and latency {title}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(run_dir: str | Path) -> Path:
    """report.md and report.png in run_dir, from its summary.json."""
    run_dir = Path(run_dir)
    summary = load_summary(run_dir)
    rows = summary["rows"]
    png = plot(rows, run_dir / "report.png")
    md = ["# slimformer report", "", ledger_table(rows, summary.get("comparison")), "", f"![plot]({png.name})", ""]
    for r in rows[1:]:
        if r.get("info"):
            md += [f"- step {r['index']} ({r['step']}): `{json.dumps(r['info'], default=str)[:600]}`"]
    atomic_write_text(run_dir / "report.md", "\n".join(md) + "\n")
    return run_dir / "report.md"


def profile_table(prof: dict[str, Any]) -> Table:
    """The profile as a rich table, with the totals in the caption."""
    tot = prof["total"]
    t = Table(title=f"profile: batch {prof['batch']}, seq len {prof['seq_len']}, {prof['threads']} threads, "
                    f"median of {prof['runs']} runs")
    for c in ("component", "params", "% params", "GFLOPs", "% FLOPs", "ms", "% time"):
        t.add_column(c, justify="left" if c == "component" else "right", no_wrap=c == "component")
    for r in prof["rows"]:
        t.add_row(r["component"], f"{r['params']:,}", f"{100 * r['params_share']:.1f}", f"{r['flops'] / 1e9:.3f}",
                  f"{100 * r['flops_share']:.1f}", f"{r['ms']:.2f}", f"{100 * r['time_share']:.1f}")
    for kind, d in prof["by_kind"].items():
        t.add_row(f"[dim]all {kind}[/dim]", "", f"{100 * d['params_share']:.1f}", "", f"{100 * d['flops_share']:.1f}",
                  "", f"{100 * d['time_share']:.1f}")
    t.caption = (f"total {tot['params']:,} params, {tot['flops'] / 1e9:.2f} GFLOPs, {tot['ms']:.1f} ms; "
                 f"weights {tot['weights_bytes'] / 1e6:.1f} MB + peak activations "
                 f"{tot['peak_activation_bytes'] / 1e6:.1f} MB; {tot['size_on_disk_bytes'] / 1e6:.1f} MB on disk")
    return t


def kv_table(d: dict[str, Any], title: str) -> Table:
    t = Table(title=title, show_header=False)
    for k, v in d.items():
        t.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    return t


def compare_runs(runs: list[str | Path], out: str | Path) -> Path:
    """One chart and table over several `compress` outputs: the final model of each run, and their input.
    Runs measured on different tasks (or with different inputs) get a warning, on the console and in the file."""
    summaries = [load_summary(run) for run in runs]
    labels = run_labels(runs)
    rows: list[dict[str, Any]] = [{**summaries[0]["rows"][0], "label": "input", "step": "input"}]
    for i, (summary, label) in enumerate(zip(summaries, labels)):
        rows.append({**summary["rows"][-1], "index": i + 1, "step": label, "label": label})
    warnings = []
    tasks = _tasks(summaries)
    if len(set(tasks)) > 1:
        warnings.append("the runs were measured on different tasks ("
                        + ", ".join(f"{lab}: {t}" for lab, t in zip(labels, tasks)) + "): their metrics do not compare")
    if len({s["rows"][0].get("params") for s in summaries}) > 1:
        warnings.append("the runs started from different input models; the input row is the first run's")
    for w in warnings:
        console.print(f"[yellow]warning: {w}[/yellow]")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png = plot(rows, out / "comparison.png", title="per run (final models)", connect=False)
    md = ["# slimformer comparison", "", *[f"**Warning:** {w}.\n" for w in warnings],
          "Each run's final model; latency as measured after its last step "
          "(for exact ratios compare within one run: see each run's report).", "", ledger_table(rows), "",
          f"![comparison]({png.name})", ""]
    atomic_write_text(out / "comparison.md", "\n".join(md))
    return out / "comparison.md"
