"""Charts of the deeper analysis (PNG bytes, see services/charts for how they reach the UI):
ROC curves of the uncertainty scores, accuracy at coverage, the answer clusters on a 2-D
projection (colour = cluster, marker = target) and the k-means sweep."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from ..charts import no_data, render_png
from ..formatting import one_line
from .calibrate import COVERAGE_CURVE, Curve

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
MAX_PANELS = 6
MAX_LEGEND = 12


def _score_label(score: str) -> str:
    return score.replace("_", " ")


def roc_chart(curves: Mapping[str, Mapping[str, Curve]]) -> bytes:
    """One panel per target (`*` = every target): each score's ROC curve for predicting a
    wrong answer, its AUROC in the legend, and the chance diagonal."""
    title = "ROC: uncertainty predicting a wrong answer"
    targets = list(curves)[:MAX_PANELS]
    figure = Figure(figsize=(4.2 * max(len(targets), 1) + 0.5, 4.4), layout="constrained")
    if not targets:
        ax = figure.add_subplot()
        no_data(figure, ax, f"{title} (needs right and wrong answers)")
        return render_png(figure)
    axes = figure.subplots(1, len(targets), squeeze=False)[0]
    for ax, target in zip(axes, targets, strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        for score, curve in curves[target].items():
            ax.step(
                curve.fpr, curve.tpr, where="post", label=f"{_score_label(score)} {curve.auroc:.2f}"
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("false positive rate (right flagged)")
        ax.set_ylabel("true positive rate (wrong flagged)")
        ax.set_title("every target" if target == "*" else one_line(target, 30), fontsize=10)
        ax.legend(fontsize=7, loc="lower right", title="AUROC", title_fontsize=7)
    figure.suptitle(title)
    return render_png(figure)


def coverage_chart(coverage: Mapping[str, Sequence[float | None]]) -> bytes:
    """Accuracy when only the most certain share of questions is answered, per score."""
    title = "Accuracy at coverage (answer only the most certain share)"
    figure = Figure(figsize=(7, 4.2), layout="constrained")
    ax = figure.add_subplot()
    if not coverage:
        no_data(figure, ax, title)
        return render_png(figure)
    for i, (score, values) in enumerate(coverage.items()):
        numbers = [np.nan if v is None else v for v in values]
        ax.plot(
            COVERAGE_CURVE, numbers, marker=MARKERS[i % len(MARKERS)], label=_score_label(score)
        )
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("coverage (share of questions answered)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return render_png(figure)


def cluster_scatter(
    projection: np.ndarray,
    labels: Sequence[int],
    targets: Sequence[str],
    names: Mapping[int, str],
) -> bytes:
    """The answers on two principal components: colour by cluster (grey for noise, label -1),
    marker by target."""
    title = "Answer clusters (PCA of the embeddings)"
    figure = Figure(figsize=(8, 5.5), layout="constrained")
    ax = figure.add_subplot()
    if len(labels) == 0:
        no_data(figure, ax, title)
        return render_png(figure)
    labels = np.asarray(labels)
    marker_of = {t: MARKERS[i % len(MARKERS)] for i, t in enumerate(dict.fromkeys(targets))}
    target_array = np.asarray(targets)
    for label in sorted(set(labels.tolist())):
        colour = "lightgrey" if label < 0 else f"C{label % 10}"
        for target, marker in marker_of.items():
            chosen = (labels == label) & (target_array == target)
            if chosen.any():
                ax.scatter(
                    projection[chosen, 0],
                    projection[chosen, 1],
                    c=colour,
                    marker=marker,
                    s=36,
                    alpha=0.8,
                    edgecolors="black",
                    linewidths=0.3,
                )
    handles = [
        ax.scatter([], [], c="lightgrey" if k < 0 else f"C{k % 10}", marker="o")
        for k in sorted(names)[:MAX_LEGEND]
    ]
    clusters = ax.legend(
        handles,
        [one_line(names[k], 28) for k in sorted(names)[:MAX_LEGEND]],
        title="cluster",
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
    )
    ax.add_artist(clusters)
    target_handles = [
        ax.scatter([], [], c="white", edgecolors="black", marker=m) for m in marker_of.values()
    ]
    ax.legend(
        target_handles,
        [one_line(t, 24) for t in marker_of],
        title="target",
        fontsize=7,
        loc="lower left",
        bbox_to_anchor=(1.01, 0),
    )
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title)
    return render_png(figure)


def sweep_chart(
    sweep: Sequence[Mapping[str, float | None]], chosen: int, knee: int | None
) -> bytes:
    """Inertia and silhouette over K, the chosen K and the knee marked."""
    title = "k-means sweep"
    figure = Figure(figsize=(7, 4), layout="constrained")
    ax = figure.add_subplot()
    if not sweep:
        no_data(figure, ax, f"{title} (not a k-means clustering)")
        return render_png(figure)
    ks = [p["k"] for p in sweep]
    ax.plot(ks, [p["inertia"] for p in sweep], marker="o", color="C0", label="inertia")
    ax.set_xlabel("K")
    ax.set_ylabel("inertia", color="C0")
    other = ax.twinx()
    scored = [p for p in sweep if p["silhouette"] is not None]
    other.plot([p["k"] for p in scored], [p["silhouette"] for p in scored], marker="s", color="C1")
    other.set_ylabel("silhouette", color="C1")
    ax.axvline(chosen, color="C2", linestyle="--", label=f"chosen K = {chosen}")
    if knee is not None:
        ax.axvline(knee, color="grey", linestyle=":", label=f"knee K = {knee}")
    ax.legend(fontsize=8, loc="upper center")
    ax.set_title(title)
    return render_png(figure)
