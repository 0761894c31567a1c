"""Tables and plots of a run: accuracy vs size vs measured latency, per recipe step."""
from __future__ import annotations

import json
import re
import os
from pathlib import Path
from typing import Any

from rich.table import Table

from .errors import SlimformerError, check
from .fsutil import atomic_write_text
from .progress import console, show
from .reliability import latency_cell, latency_text, speedup_text


def _metric_names(rows: list[dict[str, Any]]) -> list[str]:
    """The metrics of the first row that has any (a run measured at its end only has them in its last row)."""
    return next((list(r["metrics"]) for r in rows if r.get("metrics")), [])


def _batches(rows: list[dict[str, Any]]) -> list[int]:
    """Batch sizes with a latency in the rows (`latency_b{N}_ms`), ascending."""
    found = {int(m.group(1)) for r in rows for k in r if (m := re.fullmatch(r"latency_b(\d+)_ms", k))}
    return sorted(found)


def _lat_cell(r: dict[str, Any], b: int) -> str:
    return latency_cell(r.get(f"latency_b{b}_ms"), r.get(f"latency_b{b}"))


def latency_warnings(rows: list[dict[str, Any]]) -> list[str]:
    """One line per unreliable latency in the rows (the cells marked `?`)."""
    out = []
    for r in rows:
        for b in _batches([r]):
            s = r.get(f"latency_b{b}") or {}
            if not s.get("reliable", True):
                out.append(f"? {r.get('label') or r.get('step')} (#{r.get('index', '')}) batch {b}: unreliable, "
                           f"{s.get('warning')}")
    return out


def delta_text(metric: str, before: float | None, after: float | None) -> str:
    """The change of a metric in its own units: '+0.42 pt' (accuracy x100, BLEU as is) or '-3.1 %' (perplexity)."""
    from .tasks.metrics import change

    if before is None or after is None:
        return "-"
    try:
        return change(metric, before, after)[1]
    except SlimformerError:  # a metric without a description: assume a 0-1 scale
        return f"{(after - before) * 100:+.2f} pt"


def rich_table(rows: list[dict[str, Any]], title: str = "slimformer run") -> Table:
    metrics = _metric_names(rows)
    batches = _batches(rows)
    base = rows[0] if rows else {}
    t = Table(title=title, caption_justify="left")
    for c in ["#", "step", *metrics, "Δ " + metrics[0] if metrics else None, "params (M)", "size (MB)",
              *(f"b{b} ms (IQR)" for b in batches)]:
        if c:
            t.add_column(c, justify="right" if c not in ("step",) else "left", overflow="fold")
    for r in rows:
        m = r.get("metrics", {})
        cells = [str(r.get("index", "")), r.get("step", "")]
        cells += [f"{m[k]:.4f}" if k in m else "-" for k in metrics]
        if metrics:
            cells.append(delta_text(metrics[0], base.get("metrics", {}).get(metrics[0]), m.get(metrics[0])))
        cells += [f"{r.get('params', 0) / 1e6:.2f}", f"{r.get('size_bytes', 0) / 1e6:.1f}",
                  *(_lat_cell(r, b) for b in batches)]
        t.add_row(*cells)
    threads = {r.get("threads") for r in rows if r.get("threads")}
    notes = [f"latency: median (p25-p75) ms, seq len {base.get('seq_len')}, "
             f"{'/'.join(map(str, sorted(threads))) or '?'} threads"] + latency_warnings(rows)
    t.caption = "\n".join(notes)
    return t


def print_ledger(rows: list[dict[str, Any]], comparison: dict[str, Any] | None = None) -> None:
    show(rich_table(rows))
    if comparison:
        console.print(comparison_line(comparison))


def comparison_line(comp: dict[str, Any]) -> str:
    """The same-run speed-up: a header line, then one `- batch N: ...` line each with its band, or a `?` and
    the reason it is not to be trusted."""
    cores = f" of {comp['usable_cores']} usable cores" if comp.get("usable_cores") else ""
    lines = [f"speed-up measured interleaved in one run (seq len {comp.get('seq_len')}, {comp.get('threads')} "
             f"threads{cores}; median (p25-p75) ms, ratio band from the IQRs):"]
    for k, v in comp.items():
        if k.startswith("b") and isinstance(v, dict):
            i, o = v.get("input"), v.get("output")
            lines.append(f"- batch {k[1:]}: {latency_cell(v['input_ms'], i)} -> {latency_cell(v['output_ms'], o)} "
                         f"ms, {speedup_text(v)}")
    if comp.get("run_drift"):
        lines.append(f"- ? {comp['run_drift']}")
    return "\n".join(lines)


def ledger_table(rows: list[dict[str, Any]], comparison: dict[str, Any] | None = None) -> str:
    """The run as a Markdown table (plus unreliable-latency notes and the same-run speed-up line)."""
    metrics = _metric_names(rows)
    batches = _batches(rows)
    head = ["#", "step", *metrics, "params (M)", "size (MB)", *(f"latency b{b} (ms)" for b in batches),
            "step time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        m = r.get("metrics", {})
        cells = [str(r.get("index", "")), r.get("step", "")] + [f"{m[k]:.4f}" if k in m else "-" for k in metrics]
        cells += [f"{r.get('params', 0) / 1e6:.2f}", f"{r.get('size_bytes', 0) / 1e6:.1f}",
                  *(_lat_cell(r, b) for b in batches), f"{r.get('seconds', 0):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    base = rows[0] if rows else {}
    lines += ["", f"Latency: median (p25-p75) ms over the timed calls, seq len {base.get('seq_len')}, "
                  f"{base.get('threads')} threads; `?` marks a figure not to be trusted (reasons below)."]
    warns = latency_warnings(rows)
    if warns:
        lines += [""] + [f"- {w}" for w in warns]
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
        check(all(isinstance(v, (int, float)) for k, v in r.items() if k.startswith("latency_") and k.endswith("_ms")),
              foreign)
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


def figure(rows: list[dict[str, Any]], title: str = "after each recipe step", front: bool = False) -> Any:
    """Metric vs size and metric vs latency at the largest batch: one labelled point per row, no lines
    between them (rows are alternatives on a front, not a path); `front`: the Pareto front of the points as a
    dashed staircase. Latency points carry their IQR as an error bar; points whose latency was flagged
    unreliable are hollow and grey, and named in the caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = _metric_names(rows)
    batches = _batches(rows)
    panels: list[tuple[str, str, int | None]] = [("size_bytes", "size on disk (MB)", None)]
    if batches:
        b = batches[-1]
        panels.append((f"latency_b{b}_ms", f"latency batch {b} (ms): median, bar = p25-p75", b))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.4), squeeze=False)
    flagged = []
    for ax, (key, label, b) in zip(axes[0], panels):
        for j, r in enumerate(rows):
            x = r.get(key, 0) / (1e6 if key == "size_bytes" else 1)
            y = r.get("metrics", {}).get(metrics[0], 0) if metrics else 0
            s = r.get(f"latency_b{b}") if b else None
            ok = not s or s.get("reliable", True)
            color = "tab:blue" if ok else "grey"
            if s:
                ax.errorbar([x], [y], xerr=[[max(x - s["p25_ms"], 0)], [max(s["p75_ms"] - x, 0)]], fmt="none",
                            ecolor=color, elinewidth=1, capsize=3)
            if not ok:
                flagged.append(f"{r.get('label') or r.get('step')} ({(s.get('warning') or '').split('; ')[0]})")
            ax.plot([x], [y], marker="o", linestyle="none", color=color, markerfacecolor=color if ok else "none")
            name = r.get("label") or f"{r.get('index', j)}:{r.get('step')}"
            ax.annotate(name + ("" if ok else "?"), (x, y), textcoords="offset points", xytext=(4, 4 + 9 * (j % 3)),
                        fontsize=8)
        if front and metrics:
            from .plan.front import draw_front
            from .tasks.metrics import info as metric_info

            ys = [r.get("metrics", {}).get(metrics[0], 0) for r in rows]
            draw_front(ax, [r.get(key, 0) / (1e6 if key == "size_bytes" else 1) for r in rows], ys,
                       metric_info(metrics[0]).higher_is_better)
        ax.set_xlabel(label)
        ax.set_ylabel(metrics[0] if metrics else "metric")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{metrics[0] if metrics else 'metric'} vs size and latency {title}")
    if flagged:
        fig.text(0.01, 0.01, "hollow grey = latency not to be trusted: " + "; ".join(flagged), fontsize=7,
                 wrap=True, color="dimgrey")
    fig.tight_layout(rect=(0, 0.06 if flagged else 0, 1, 1))
    return fig


def plot(rows: list[dict[str, Any]], path: str | Path, title: str = "after each recipe step", front: bool = False
         ) -> Path:
    """`figure(rows)` saved as a PNG."""
    import matplotlib.pyplot as plt

    fig = figure(rows, title, front)
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
        t.add_column(c, justify="left" if c == "component" else "right", overflow="fold")
    for r in prof["rows"]:
        t.add_row(r["component"], f"{r['params']:,}", f"{100 * r['params_share']:.1f}", f"{r['flops'] / 1e9:.3f}",
                  f"{100 * r['flops_share']:.1f}", f"{r['ms']:.2f}", f"{100 * r['time_share']:.1f}")
    for kind, d in prof["by_kind"].items():
        t.add_row(f"[dim]all {kind}[/dim]", "", f"{100 * d['params_share']:.1f}", "", f"{100 * d['flops_share']:.1f}",
                  "", f"{100 * d['time_share']:.1f}")
    lat = tot.get("latency")
    t.caption = (f"total {tot['params']:,} params, {tot['flops'] / 1e9:.2f} GFLOPs; weights "
                 f"{tot['weights_bytes'] / 1e6:.1f} MB + peak activations {tot['peak_activation_bytes'] / 1e6:.1f} MB; "
                 f"{tot['size_on_disk_bytes'] / 1e6:.1f} MB on disk\nwhole forward (component hooks on): "
                 f"{latency_text(lat) if lat else format(tot['ms'], '.1f') + ' ms'}")
    t.caption_justify = "left"
    return t


def kv_table(d: dict[str, Any], title: str) -> Table:
    """Key / value rows; latency summaries as median, IQR, range and any warning."""
    t = Table(title=title, show_header=False)
    t.add_column(overflow="fold")
    t.add_column(overflow="fold")
    for k, v in d.items():
        if k.endswith("_ms") and isinstance(d.get(k[:-3]), dict):
            continue  # the median, shown with its spread on the summary's row
        if isinstance(v, dict) and "median_ms" in v:
            text = latency_text(v)
        else:
            text = f"{v:.4f}" if isinstance(v, float) else str(v)
        t.add_row(k, text)
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
    png = plot(rows, out / "comparison.png", title="per run (final models; dashed: their Pareto front)", front=True)
    md = ["# slimformer comparison", "", *[f"**Warning:** {w}.\n" for w in warnings],
          "Each run's final model; latency as measured after its last step "
          "(for exact ratios compare within one run: see each run's report).", "", ledger_table(rows), "",
          f"![comparison]({png.name})", ""]
    atomic_write_text(out / "comparison.md", "\n".join(md))
    return out / "comparison.md"
