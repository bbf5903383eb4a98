"""Calibration formulas: how well an uncertainty score predicts a wrong answer.

- `auroc(scores, wrong)`: the area under the ROC curve of the score as a predictor of a wrong
  answer, by the rank formula (Mann-Whitney U / (n_wrong n_right), ties at half weight): the
  chance that a wrong answer, drawn at random, scores higher than a right one. 1 = the score
  separates them perfectly, 0.5 = no better than chance, 0 = perfectly reversed. Undefined
  (None) unless there are both right and wrong answers.
- `accuracy_at_coverage(scores, correct, q)`: answer only the share q of questions the score is
  most certain about (lowest scores first; ties keep the given order); the accuracy of those.
- `roc_points(scores, wrong)`: the ROC curve, for charts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata


def _pair(scores: Sequence[float], labels: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(scores, dtype=float)
    flags = np.asarray(labels, dtype=bool)
    if values.ndim != 1 or values.shape != flags.shape:
        raise ValueError(f"one label per score is needed ({values.size} scores, {flags.size})")
    if not np.all(np.isfinite(values)):
        raise ValueError("scores must be finite")
    return values, flags


def auroc(scores: Sequence[float], wrong: Sequence[bool]) -> float | None:
    """AUROC of `scores` (higher = less certain) for predicting `wrong` (see module doc)."""
    values, flags = _pair(scores, wrong)
    positives = int(flags.sum())
    negatives = flags.size - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(values)  # average ranks for ties
    u = ranks[flags].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def covered(count: int, coverage: float) -> int:
    """How many of `count` questions a coverage of `coverage` answers (at least one)."""
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1] (got {coverage})")
    return max(1, math.ceil(coverage * count - 1e-9))


def accuracy_at_coverage(
    scores: Sequence[float], correct: Sequence[bool], coverage: float
) -> float | None:
    """Accuracy over the `coverage` share of questions with the lowest scores (see module
    doc); None without questions."""
    values, flags = _pair(scores, correct)
    if values.size == 0:
        return None
    order = np.argsort(values, kind="stable")
    kept = order[: covered(values.size, coverage)]
    return float(flags[kept].mean())


def roc_points(scores: Sequence[float], wrong: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) of the ROC curve, wrong = positive."""
    from sklearn.metrics import roc_curve

    values, flags = _pair(scores, wrong)
    fpr, tpr, _ = roc_curve(flags, values)
    return fpr, tpr
