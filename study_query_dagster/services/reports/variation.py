"""The report's answer-variation section: semantic entropy per cell, the prompts on which
targets' most frequent answers differ, and the cells that drifted from the baseline run — read
from `variation_results` through its repository (the newest values of the run's most recent
strategy), once the variation assets have measured the run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...db import DatabaseConnection, RunResultsRepository, VariationResultRepository
from ..variation import measures as m

NO_RESULTS = "no variation results yet"


@dataclass
class VariationSection:
    available: bool
    note: str
    per_cell: list[dict[str, Any]] = field(default_factory=list)  # prompt, target, metrics
    findings: list[str] = field(default_factory=list)


def variation_section(
    db: DatabaseConnection, run_group_id: int, modal: dict[tuple[str, str], str] | None = None
) -> VariationSection:
    """What the variation assets found for this run. `modal` ((prompt, target) -> the most
    frequent answer as given) names the answers in the findings."""
    with db.session_scope() as session:
        key = RunResultsRepository(session).variation_strategy(run_group_id)
        rows = VariationResultRepository(session).latest(run_group_id, key) if key else []
        values = [
            (r.prompt_id, r.target, r.other, r.metric, r.value, r.n, r.strategy) for r in rows
        ]
    if not values:
        return VariationSection(available=False, note=NO_RESULTS)
    modal = modal or {}
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    pairs: dict[tuple[str, str, str], dict[str, float]] = {}
    drift: dict[tuple[str, str], dict[str, Any]] = {}
    strategy = values[0][6]
    for prompt, target, other, metric, value, n, _ in values:
        if other is None and metric in m.CELL_METRICS:
            cell = cells.setdefault((prompt, target), {"prompt": prompt, "target": target})
            cell[metric] = value
            if metric == m.SEMANTIC_ENTROPY:
                cell["n"] = n
        elif metric in m.PAIR_METRICS:
            pairs.setdefault((prompt, target, other), {})[metric] = value
        elif metric in m.DRIFT_METRICS:
            drift.setdefault((prompt, target), {"baseline": other})[metric] = value
    findings = []
    for (prompt, a, b), pair in pairs.items():
        if pair.get(m.MODAL_AGREEMENT) == 0:
            answers = "; ".join(
                f"{t}: {modal[prompt, t]!r}" for t in (a, b) if (prompt, t) in modal
            )
            findings.append(
                f"{prompt}: {a} and {b} differ in their most frequent answer "
                f"(JSD {pair.get(m.JSD, float('nan')):.3f})" + (f" — {answers}" if answers else "")
            )
    drifted = [
        (prompt, target, d)
        for (prompt, target), d in drift.items()
        if d.get(m.MODAL_CHANGED) == 1
        and d.get(m.DRIFT_JSD, 0) >= m.DRIFT_MIN_JSD
        and d.get(m.DRIFT_P_VALUE, 1) < m.DRIFT_ALPHA
    ]
    for prompt, target, d in drifted:
        findings.append(
            f"{prompt} / {target}: the most frequent answer changed since {d['baseline']} "
            f"(drift JSD {d[m.DRIFT_JSD]:.3f}, p = {d[m.DRIFT_P_VALUE]:.3g})"
        )
    if drift and not drifted:
        baseline = next(iter(drift.values()))["baseline"]
        findings.append(f"no cell drifted significantly since {baseline}")
    if pairs and not any(p.get(m.MODAL_AGREEMENT) == 0 for p in pairs.values()):
        findings.append("the targets agree on every prompt's most frequent answer")
    per_cell = [
        {
            "prompt": c["prompt"],
            "target": c["target"],
            "answers": c.get("n"),
            "classes": c.get(m.NUM_CLASSES),
            "semantic entropy": c.get(m.SEMANTIC_ENTROPY),
            "modal share": c.get(m.MODAL_SHARE),
            "same answer every time": _yes_no(c.get(m.PARSED_AGREEMENT)),
        }
        for c in cells.values()
    ]
    note = f"strategy {strategy}: answers are the same when {_same(strategy)}"
    return VariationSection(available=True, note=note, per_cell=per_cell, findings=findings)


def _yes_no(value: float | None) -> str | None:
    return None if value is None else ("yes" if value == 1 else "no")


def _same(strategy: str) -> str:
    if strategy == "embedding":
        return "their embeddings cluster together"
    return "their normalised texts are equal (case, punctuation and articles aside)"
