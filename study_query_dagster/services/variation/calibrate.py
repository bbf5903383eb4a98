"""A run's calibration against reference answers: which cells are answered right, and how well
each uncertainty score of `sample_dispersion` predicts the wrong ones.

The unit is the cell (one prompt, one target, n sampled answers): its answer is the
representative of its most frequent class (the earliest class on a tie; a cell whose modal
class is `refused` is wrong), graded by `correctness.Grader`. Per cell: `correct` (0/1) and
`answer_accuracy` (the share of all its answers that are right). Per target, and over every
target (`*`) when there are several: `accuracy` (share of cells right), `auroc_<score>` and
`accuracy_at_<q>_<score>` for each score the cells have: semantic entropy, likelihood-based
semantic entropy, SEU and 1 - modal share (see calibration.py for the formulas).
Only prompts with `reference:` take part.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import calibration as cal
from . import measures as m
from .classes import ClassifiedCell
from .correctness import Grader
from .scope import RunScope

CORRECT = "correct"
ANSWER_ACCURACY = "answer_accuracy"
ACCURACY = "accuracy"
ALL = "*"  # prompt id of per-target values; target of values over every target

# score name -> (the stored metric it comes from, how a value becomes an uncertainty)
SCORES: dict[str, tuple[str, Callable[[float], float]]] = {
    "semantic_entropy": (m.SEMANTIC_ENTROPY, lambda v: v),
    "likelihood_semantic_entropy": (m.LIKELIHOOD_SEMANTIC_ENTROPY, lambda v: v),
    "seu": (m.SEU, lambda v: v),
    "one_minus_modal_share": (m.MODAL_SHARE, lambda v: 1.0 - v),
}
SCORE_METRICS = tuple(metric for metric, _ in SCORES.values())
COVERAGE_CURVE = tuple(q / 10 for q in range(1, 11))


def auroc_metric(score: str) -> str:
    return f"auroc_{score}"


def coverage_metric(coverage: float, score: str) -> str:
    return f"accuracy_at_{round(coverage * 100)}_{score}"


@dataclass
class GradedCell:
    prompt_id: str
    target: str
    n: int
    correct: bool
    answer_accuracy: float
    answer: str  # the cell's modal answer as graded
    scores: dict[str, float] = field(default_factory=dict)  # uncertainty per score name


async def grade(
    classified: Sequence[ClassifiedCell],
    scope: RunScope,
    grader: Grader,
    stored: Mapping[tuple[str, str], Mapping[str, float]],
) -> list[GradedCell]:
    """Grade the cells of prompts with references; `stored` holds each cell's dispersion
    values (metric -> value) that the scores are read from."""
    graded = []
    for cell in classified:
        references = scope.references(cell.cell.prompt_id)
        if not references or not cell.cell.n:
            continue
        question = cell.cell.question or None
        right = [
            not a.refused and await grader.correct(a.text, references, question)
            for a in cell.cell.answers
        ]
        modal = cell.modal_labels()[0]
        index = cell.representatives[modal]
        refused = modal == cell.refused_class
        values = stored.get(cell.cell.key, {})
        graded.append(
            GradedCell(
                prompt_id=cell.cell.prompt_id,
                target=cell.cell.target,
                n=cell.cell.n,
                correct=not refused and bool(right[index]),
                answer_accuracy=sum(right) / cell.cell.n,
                answer=cell.class_names[modal],
                scores={
                    name: transform(values[metric])
                    for name, (metric, transform) in SCORES.items()
                    if metric in values
                },
            )
        )
    return graded


@dataclass
class Curve:
    fpr: list[float]
    tpr: list[float]
    auroc: float


@dataclass
class CalibrationOutcome:
    values: list[m.MetricValue]
    rows: list[dict[str, Any]]  # per target (and `*`): cells, wrong, accuracy, AUROCs, ...
    curves: dict[str, dict[str, Curve]]  # target -> score -> ROC curve
    coverage: dict[str, list[float | None]]  # score -> accuracy at COVERAGE_CURVE (pooled)


def calibrate(graded: Sequence[GradedCell], coverages: Sequence[float]) -> CalibrationOutcome:
    """Per-cell and per-target values (see the module docstring)."""
    values: list[m.MetricValue] = []
    for g in graded:
        values.append(m.MetricValue(g.prompt_id, g.target, CORRECT, float(g.correct), g.n))
        values.append(m.MetricValue(g.prompt_id, g.target, ANSWER_ACCURACY, g.answer_accuracy, g.n))
    by_target: dict[str, list[GradedCell]] = {}
    for g in graded:
        by_target.setdefault(g.target, []).append(g)
    if len(by_target) > 1:
        by_target[ALL] = list(graded)
    rows, curves = [], {}
    for target, cells in by_target.items():
        row: dict[str, Any] = {
            "target": target,
            "cells": len(cells),
            "wrong": sum(1 for c in cells if not c.correct),
            ACCURACY: float(np.mean([c.correct for c in cells])),
        }
        values.append(m.MetricValue(ALL, target, ACCURACY, row[ACCURACY], len(cells)))
        for score in SCORES:
            scored = [c for c in cells if score in c.scores]
            if not scored:
                continue
            numbers = [c.scores[score] for c in scored]
            wrong = [not c.correct for c in scored]
            area = cal.auroc(numbers, wrong)
            row[auroc_metric(score)] = area
            if area is not None:
                values.append(m.MetricValue(ALL, target, auroc_metric(score), area, len(scored)))
                fpr, tpr = cal.roc_points(numbers, wrong)
                curves.setdefault(target, {})[score] = Curve(list(fpr), list(tpr), area)
            for q in coverages:
                accuracy = cal.accuracy_at_coverage(numbers, [c.correct for c in scored], q)
                row[coverage_metric(q, score)] = accuracy
                values.append(
                    m.MetricValue(ALL, target, coverage_metric(q, score), accuracy, len(scored))
                )
        rows.append(row)
    pooled = by_target.get(ALL) or next(iter(by_target.values()), [])
    coverage = {
        score: [
            cal.accuracy_at_coverage(
                [c.scores[score] for c in pooled if score in c.scores],
                [c.correct for c in pooled if score in c.scores],
                q,
            )
            for q in COVERAGE_CURVE
        ]
        for score in SCORES
        if any(score in c.scores for c in pooled)
    }
    return CalibrationOutcome(values, rows, curves, coverage)
