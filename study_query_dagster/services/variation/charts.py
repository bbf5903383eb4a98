"""Charts of answer variation (PNG bytes, see services/charts for how they reach the UI):
a prompts x targets heatmap of semantic entropy annotated K/n, mean semantic entropy and parsed
agreement per target, answer-class shares per run for the most drifting cells, and mean drift
JSD over the set's runs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..charts import bar_chart, no_data, render_png
from ..formatting import one_line
from . import measures as m

MAX_LABEL = 24
# Stacked bars show this many classes per cell; the rest are summed as "other answers".
MAX_CLASSES = 5


def _label(text: str) -> str:
    return one_line(text, MAX_LABEL) or "(empty)"


def entropy_heatmap(
    rows: Sequence[Mapping[str, Any]], prompts: Sequence[str], targets: Sequence[str]
) -> bytes:
    """Semantic entropy per prompt (rows) and target (columns), each cell annotated K/n; the
    colour scale runs from 0 to ln n of the largest cell. Cells without answers stay blank."""
    title = "Semantic entropy (annotated: classes K / answers n)"
    figure = Figure(
        figsize=(max(5.0, 1.3 * len(targets) + 3), max(3.0, 0.45 * len(prompts) + 1.8)),
        layout="constrained",
    )
    ax = figure.add_subplot()
    by_cell = {(r["prompt"], r["target"]): r for r in rows if m.SEMANTIC_ENTROPY in r}
    if not by_cell:
        no_data(figure, ax, title)
        return render_png(figure)
    grid = np.full((len(prompts), len(targets)), np.nan)
    for i, prompt in enumerate(prompts):
        for j, target in enumerate(targets):
            row = by_cell.get((prompt, target))
            if row is not None:
                grid[i, j] = row[m.SEMANTIC_ENTROPY]
    top = max(math.log(max(int(r["n"]) for r in by_cell.values())), 1e-9)
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0, vmax=top, aspect="auto")
    for i, prompt in enumerate(prompts):
        for j, target in enumerate(targets):
            row = by_cell.get((prompt, target))
            if row is not None:
                light = grid[i, j] < top * 0.6
                ax.text(
                    j,
                    i,
                    f"{int(row[m.NUM_CLASSES])}/{int(row['n'])}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if light else "black",
                )
    ax.set_xticks(range(len(targets)), [_label(t) for t in targets], rotation=30, ha="right")
    ax.set_yticks(range(len(prompts)), [_label(p) for p in prompts])
    ax.set_title(title)
    figure.colorbar(image, ax=ax, label="nats (0 = one answer)")
    return render_png(figure)


def target_summary_chart(per_target: Mapping[str, Mapping[str, float | None]]) -> bytes:
    """Mean semantic entropy and share of cells in parsed agreement, per target."""
    targets = list(per_target)
    return bar_chart(
        [_label(t) for t in targets],
        {
            "mean semantic entropy": [per_target[t]["mean_semantic_entropy"] for t in targets],
            "parsed agreement": [per_target[t]["parsed_agreement"] for t in targets],
        },
        title="Answer variation per target",
        ylabel="nats / share of cells",
    )


def drift_shares_chart(
    shares: Mapping[tuple[str, str], Sequence[tuple[str, float, float]]],
    cells: Sequence[tuple[str, str]],
    baseline: str,
) -> bytes:
    """For each cell, two stacked bars (baseline run, this run) of its answer-class shares,
    each segment labelled with its class's answer when there is room."""
    title = "Answer classes per run, most drifting cells"
    figure = Figure(figsize=(max(6.0, 2.2 * len(cells) + 2), 4.8), layout="constrained")
    ax = figure.add_subplot()
    if not cells:
        no_data(figure, ax, title)
        return render_png(figure)
    positions, labels = [], []
    for c, cell in enumerate(cells):
        classes = sorted(shares[cell], key=lambda s: -(s[1] + s[2]))
        shown, rest = classes[:MAX_CLASSES], classes[MAX_CLASSES:]
        if rest:
            shown.append(("other answers", sum(s[1] for s in rest), sum(s[2] for s in rest)))
        for r, run in enumerate(("baseline", "this run")):
            x = c * 3 + r
            bottom = 0.0
            for k, (name, before, after) in enumerate(shown):
                share = before if r == 0 else after
                ax.bar(x, share, bottom=bottom, color=f"C{k % 10}", width=0.8)
                if share >= 0.08:
                    ax.text(
                        x,
                        bottom + share / 2,
                        _label(name)[:14],
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white",
                    )
                bottom += share
            positions.append(x)
            labels.append(f"{_label(cell[0])}/{_label(cell[1])}\n{run}")
    ax.set_xticks(positions, labels, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of answers")
    ax.set_title(f"{title} (baseline {one_line(baseline, 40)})")
    return render_png(figure)


def drift_history_chart(history: Sequence[tuple[datetime, float]]) -> bytes:
    """Mean drift JSD of each run against its baseline, over the runs' dates."""
    title = "Mean drift JSD per run"
    figure = Figure(figsize=(8, 4), layout="constrained")
    ax = figure.add_subplot()
    if not history:
        no_data(figure, ax, title)
        return render_png(figure)
    ax.plot([at for at, _ in history], [value for _, value in history], marker="o")
    ax.set_ylim(0, 1)
    ax.set_ylabel("JSD (base 2)")
    ax.set_title(title)
    figure.autofmt_xdate()
    return render_png(figure)
