"""What each variation computation reports: per-row tables (for markdown, CSV and charts) and
the summary numbers Dagster plots across materializations."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from . import measures as m
from .calibrate import ACCURACY, CalibrationOutcome, GradedCell
from .metrics import TOLERANCE


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def wide(values: list[m.MetricValue], key=lambda v: (v.prompt_id, v.target, v.other)) -> dict:
    """Metric values as one dict per (prompt, target, other): {metric: value, "n": n, ...}."""
    rows: dict[Any, dict[str, Any]] = {}
    for value in values:
        row = rows.setdefault(key(value), {"prompt": value.prompt_id, "target": value.target})
        if value.other is not None:
            row["other"] = value.other
            row["n_other"] = value.n_other
        row[value.metric] = value.value
        # n of the class-based metrics (answers and refusals), not of length/SEU/Vendi.
        if value.metric in (m.SEMANTIC_ENTROPY, m.JSD, m.DRIFT_JSD) or "n" not in row:
            row["n"] = value.n
    return rows


@dataclass
class ClassesReport:
    strategy: str
    settings: dict[str, Any]
    rows: list[dict[str, Any]]  # per cell: prompt, target, n, excluded, refusals, classes, ...
    groups: dict[str, int]  # kept / removed / created semantic_cluster groups
    usage: dict[str, int] = field(default_factory=dict)  # a judge's calls, for entailment

    @property
    def answers(self) -> int:
        return sum(r["n"] for r in self.rows)

    @property
    def classes(self) -> int:
        return sum(r["classes"] for r in self.rows)


@dataclass
class DispersionReport:
    strategy: str
    rows: list[dict[str, Any]]  # per cell, every metric
    written: int
    embeddings: bool  # whether SEU and Vendi were computed

    def per_target(self) -> dict[str, dict[str, float | None]]:
        targets: dict[str, dict[str, list[float]]] = {}
        for row in self.rows:
            if m.SEMANTIC_ENTROPY not in row:
                continue
            entry = targets.setdefault(row["target"], {"se": [], "agreement": []})
            entry["se"].append(row[m.SEMANTIC_ENTROPY])
            entry["agreement"].append(row[m.PARSED_AGREEMENT])
        return {
            t: {
                "mean_semantic_entropy": _mean(v["se"]),
                "parsed_agreement": _mean(v["agreement"]),
                "cells": len(v["se"]),
            }
            for t, v in targets.items()
        }

    @property
    def measured(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if m.SEMANTIC_ENTROPY in r]

    @property
    def share_zero_entropy(self) -> float | None:
        cells = self.measured
        if not cells:
            return None
        return sum(1 for r in cells if r[m.SEMANTIC_ENTROPY] <= TOLERANCE) / len(cells)

    @property
    def mean_semantic_entropy(self) -> float | None:
        return _mean([r[m.SEMANTIC_ENTROPY] for r in self.measured])


@dataclass
class AgreementReport:
    strategy: str
    rows: list[dict[str, Any]]  # per prompt and pair of targets
    modal_answers: dict[str, dict[str, str]]  # prompt -> target -> modal answer (pooled)
    written: int
    usage: dict[str, int] = field(default_factory=dict)  # a judge's calls, for entailment

    @property
    def disagreements(self) -> list[str]:
        """Prompts on which some pair of targets shares no modal answer."""
        return sorted(
            {r["prompt"] for r in self.rows if r.get(m.MODAL_AGREEMENT) == 0.0},
            key=list(self.modal_answers).index,
        )

    @property
    def mean_jsd(self) -> float | None:
        return _mean([r[m.JSD] for r in self.rows if m.JSD in r])


@dataclass
class DriftReport:
    strategy: str
    baseline: str | None  # the baseline run group's name; None when the set has no earlier run
    rows: list[dict[str, Any]] = field(default_factory=list)  # per cell
    # per cell: [(class name, share in baseline, share in run)], for the stacked bars
    shares: dict[tuple[str, str], list[tuple[str, float, float]]] = field(default_factory=dict)
    history: list[tuple[datetime, float]] = field(default_factory=list)  # (run, mean JSD)
    written: int = 0
    usage: dict[str, int] = field(default_factory=dict)  # a judge's calls, for entailment

    @property
    def mean_jsd(self) -> float | None:
        return _mean([r[m.DRIFT_JSD] for r in self.rows])

    def most_drifting(self, limit: int = 6) -> list[tuple[str, str]]:
        ranked = sorted(self.rows, key=lambda r: (-r[m.DRIFT_JSD], r["prompt"], r["target"]))
        return [(r["prompt"], r["target"]) for r in ranked[:limit] if r[m.DRIFT_JSD] > 0]


@dataclass
class CalibrationReport:
    correctness: str  # exact | contains | judge
    outcome: CalibrationOutcome
    graded: list[GradedCell]  # per cell with references
    written: int
    prompts_with_reference: int
    usage: dict[str, int] = field(default_factory=dict)  # the judge's calls (correctness judge)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.outcome.rows

    @property
    def cell_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "prompt": g.prompt_id,
                "target": g.target,
                "n": g.n,
                "answer": g.answer,
                "correct": g.correct,
                "answer_accuracy": round(g.answer_accuracy, 4),
                **{k: round(v, 4) for k, v in g.scores.items()},
            }
            for g in self.graded
        ]

    @property
    def accuracy(self) -> float | None:
        return _mean([float(g.correct) for g in self.graded])

    def value(self, target: str, metric: str) -> float | None:
        row = next((r for r in self.rows if r["target"] == target), None)
        return row.get(metric) if row is not None else None

    @property
    def overall(self) -> dict[str, Any]:
        """The row over every target (the only target's row when there is one)."""
        if not self.rows:
            return {}
        return next((r for r in self.rows if r["target"] == "*"), self.rows[0])

    @property
    def both_classes(self) -> bool:
        return bool(self.rows) and all(0 < r["wrong"] < r["cells"] for r in self.rows)

    @property
    def per_target_accuracy(self) -> dict[str, float]:
        return {r["target"]: r[ACCURACY] for r in self.rows if r["target"] != "*"}
