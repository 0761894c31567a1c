"""docs/movement_curve.png from benchmarks/results/movement_sst2.json (the labels-only parts of bench_movement.py).

    .venv/bin/python benchmarks/plot_movement.py
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common import RESULTS, ROOT


def plot(results: dict[str, Any]) -> Path:
    """docs/movement_curve.png: dev accuracy vs remaining weights of the labels-only 120-step runs (mean of the
    seeds where there are two; every seed drawn as a dot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for p in ("short", "labels_curve") for r in results.get(p, {}).get("rows", [])
            if "dev_acc" in r and r.get("steps") == 120 and ("score_init" in r.get("override", {})
                                                                or r["variant"] == "magnitude")]
    fig, ax = plt.subplots(figsize=(6, 4))
    for v, label in (("magnitude", "gradual magnitude"), ("hard", "hard movement, score_init magnitude"),
                     ("soft", "soft movement, score_init magnitude")):
        pts = sorted((round(100 * (1 - r["target_sparsity"])), r["dev_acc"]) for r in rows if r["variant"] == v)
        if not pts:
            continue
        xs = sorted({x for x, _ in pts})
        means = [sum(a for x2, a in pts if x2 == x) / sum(1 for x2, _ in pts if x2 == x) for x in xs]
        line = ax.plot(xs, means, marker="o", label=label)[0]
        ax.scatter([x for x, _ in pts], [a for _, a in pts], s=12, color=line.get_color(), alpha=0.6)
    teacher = results.get("teacher", {}).get("dev_acc")
    ax.axhline(50.92, color="grey", linestyle=":", label="majority class (50.92)")
    if teacher:
        ax.axhline(teacher, color="black", linestyle="--", label=f"dense, fine-tuned 3 epochs ({teacher})")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks([5, 10, 30, 50], labels=["5%", "10%", "30%", "50%"])
    ax.set_xlabel("encoder Linear weights remaining")
    ax.set_ylabel("SST-2 dev accuracy")
    ax.set_title("MiniLM fine-pruned from pre-trained, 120 steps, labels only")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = ROOT / "docs" / "movement_curve.png"
    fig.savefig(path, dpi=120)
    return path


if __name__ == "__main__":
    print(plot(json.loads((RESULTS / "movement_sst2.json").read_text())))
