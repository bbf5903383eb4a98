"""Classified cells -> metric values (`MetricValue`): per cell (dispersion), per prompt and
pair of targets (agreement), per cell between two runs (drift). Which formula each name stands
for is in `metrics` and `drift`; here is what each is taken over and with which n."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import drift, metrics
from .classes import ClassifiedCell
from .normalize import normalize_answer

# Bump when a formula, or what it is taken over, changes: results of different versions are
# never compared with each other.
METHOD_VERSION = "1"

SEMANTIC_ENTROPY = "semantic_entropy"
NORMALIZED_SEMANTIC_ENTROPY = "normalized_semantic_entropy"
NUM_CLASSES = "num_classes"
MODAL_SHARE = "modal_share"
RAW_AGREEMENT = "raw_agreement"
PARSED_AGREEMENT = "parsed_agreement"
SEU = "seu"
VENDI = "vendi"
MEAN_LENGTH = "mean_length"
REFUSAL_SHARE = "refusal_share"
CELL_METRICS = (
    SEMANTIC_ENTROPY,
    NORMALIZED_SEMANTIC_ENTROPY,
    NUM_CLASSES,
    MODAL_SHARE,
    RAW_AGREEMENT,
    PARSED_AGREEMENT,
    SEU,
    VENDI,
    MEAN_LENGTH,
    REFUSAL_SHARE,
)

# Only where every answer of the cell captured log-probabilities.
LIKELIHOOD_SEMANTIC_ENTROPY = "likelihood_semantic_entropy"

JSD = "jsd"
CROSS_AGREEMENT = "cross_agreement"
MODAL_AGREEMENT = "modal_agreement"
PAIR_METRICS = (JSD, CROSS_AGREEMENT, MODAL_AGREEMENT)

DRIFT_JSD = "drift_jsd"
MODAL_CHANGED = "modal_changed"
DELTA_SEMANTIC_ENTROPY = "delta_semantic_entropy"
DELTA_MEAN_LENGTH = "delta_mean_length"
CENTROID_SHIFT = "centroid_shift"
DRIFT_P_VALUE = "drift_p_value"
DRIFT_METRICS = (
    DRIFT_JSD,
    MODAL_CHANGED,
    DELTA_SEMANTIC_ENTROPY,
    DELTA_MEAN_LENGTH,
    CENTROID_SHIFT,
    DRIFT_P_VALUE,
)

# `no_significant_drift` flags a cell whose modal answer changed with a JSD of at least
# DRIFT_MIN_JSD and a permutation p-value below DRIFT_ALPHA.
DRIFT_ALPHA = 0.05
DRIFT_MIN_JSD = 0.2
# `enough_samples_for_entropy` warns below this many answers per cell.
MIN_SAMPLES_FOR_ENTROPY = 5


@dataclass(frozen=True)
class MetricValue:
    prompt_id: str
    target: str
    metric: str
    value: float
    n: int  # answers the value was taken over (of this cell)
    other: str | None = None  # the second target, or the baseline run
    n_other: int | None = None  # answers of the other cell


def cell_metrics(cell: ClassifiedCell, vectors: np.ndarray | None = None) -> list[MetricValue]:
    """Dispersion of one cell over its own classes. n counts answers and refusals; the length
    is over answers that are not refusals; SEU and Vendi over the answers that have a vector
    (`vectors`, one row per non-empty, non-refused answer, in answer order)."""
    answers = cell.cell.answers
    n = len(answers)
    if n == 0:
        return []

    def value(metric: str, number: float | None, count: int = n) -> list[MetricValue]:
        if number is None:
            return []
        return [MetricValue(cell.cell.prompt_id, cell.cell.target, metric, float(number), count)]

    counts = cell.present_counts()
    texts = cell.cell.texts
    out = [
        *value(SEMANTIC_ENTROPY, metrics.semantic_entropy(counts)),
        *value(NORMALIZED_SEMANTIC_ENTROPY, metrics.normalized_semantic_entropy(counts)),
        *value(NUM_CLASSES, len(counts)),
        *value(MODAL_SHARE, metrics.modal_share(counts)),
        *value(RAW_AGREEMENT, metrics.all_identical([(a.refused, a.text) for a in answers])),
        *value(
            PARSED_AGREEMENT,
            metrics.all_identical([(a.refused, normalize_answer(a.text)) for a in answers]),
        ),
        *value(REFUSAL_SHARE, cell.cell.refusals / n),
    ]
    if texts:
        out += value(MEAN_LENGTH, metrics.mean_length(texts), len(texts))
    if vectors is not None and len(vectors):
        out += value(SEU, metrics.seu(vectors), len(vectors))
        out += value(VENDI, metrics.vendi(vectors), len(vectors))
    out += likelihood_value(cell)
    return out


def likelihood_value(cell: ClassifiedCell) -> list[MetricValue]:
    """Likelihood-based semantic entropy over the cell's answers (refusals left out: they have
    no likelihood), when each of them has one; n counts those answers."""
    answered = [
        (label, a.logprob)
        for a, label in zip(cell.cell.answers, cell.labels, strict=True)
        if not a.refused
    ]
    if not answered or any(logprob is None for _, logprob in answered):
        return []
    labels, logprobs = zip(*answered, strict=True)
    number = metrics.likelihood_semantic_entropy(labels, logprobs)
    c = cell.cell
    return [MetricValue(c.prompt_id, c.target, LIKELIHOOD_SEMANTIC_ENTROPY, number, len(labels))]


def pair_metrics(a: ClassifiedCell, b: ClassifiedCell) -> list[MetricValue]:
    """Agreement of two targets on one prompt, over a partition pooled across targets."""
    if not a.cell.n or not b.cell.n:
        return []
    p, q = a.counts(), b.counts()
    return [
        MetricValue(
            a.cell.prompt_id, a.cell.target, metric, value, a.cell.n, b.cell.target, b.cell.n
        )
        for metric, value in (
            (JSD, metrics.jsd(p, q)),
            (CROSS_AGREEMENT, metrics.cross_agreement(p, q)),
            (MODAL_AGREEMENT, metrics.modal_agreement(p, q)),
        )
    ]


def pairs(cells: Sequence[ClassifiedCell]) -> list[tuple[ClassifiedCell, ClassifiedCell]]:
    """Each unordered pair of cells once, in the given (prompt set) order."""
    return [(a, b) for i, a in enumerate(cells) for b in cells[i + 1 :]]


@dataclass(frozen=True)
class DriftOutcome:
    values: list[MetricValue]
    test: drift.PermutationTest | None


def drift_metrics(
    run: ClassifiedCell,
    baseline: ClassifiedCell,
    baseline_name: str,
    *,
    permutations: int,
    seed: int,
    centroids: tuple[np.ndarray, np.ndarray] | None = None,
) -> DriftOutcome:
    """A cell's drift from its baseline run, over a partition pooled across both runs."""
    if not run.cell.n or not baseline.cell.n:
        return DriftOutcome([], None)
    p, q = run.counts(), baseline.counts()
    test = drift.permutation_test(
        run.labels,
        baseline.labels,
        permutations=permutations,
        seed=drift.cell_seed(seed, run.cell.prompt_id, run.cell.target),
    )

    def value(metric: str, number: float, n: int, n_other: int) -> MetricValue:
        return MetricValue(
            run.cell.prompt_id, run.cell.target, metric, float(number), n, baseline_name, n_other
        )

    n, n_other = run.cell.n, baseline.cell.n
    values = [
        value(DRIFT_JSD, metrics.jsd(p, q), n, n_other),
        value(MODAL_CHANGED, drift.modal_changed(p, q), n, n_other),
        value(
            DELTA_SEMANTIC_ENTROPY,
            drift.delta_semantic_entropy(run.present_counts(), baseline.present_counts()),
            n,
            n_other,
        ),
        value(DRIFT_P_VALUE, test.p_value, n, n_other),
    ]
    texts, base_texts = run.cell.texts, baseline.cell.texts
    if texts and base_texts:
        delta = metrics.mean_length(texts) - metrics.mean_length(base_texts)
        values.append(value(DELTA_MEAN_LENGTH, delta, len(texts), len(base_texts)))
    if centroids is not None:
        values.append(value(CENTROID_SHIFT, drift.centroid_shift(*centroids), n, n_other))
    return DriftOutcome(values, test)
