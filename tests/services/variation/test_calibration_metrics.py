"""Calibration formulas against hand-computed cases: AUROC by the rank formula, accuracy at
coverage, and correctness against reference answers (exact, contains, the judge)."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from study_query_dagster.providers.offline import OfflineProvider
from study_query_dagster.services.inference import InferenceService
from study_query_dagster.services.variation.calibration import (
    accuracy_at_coverage,
    auroc,
    covered,
    roc_points,
)
from study_query_dagster.services.variation.correctness import Grader, matches
from study_query_dagster.services.variation.judge import InferenceJudge


def test_auroc_of_a_perfect_a_reversed_and_a_useless_score():
    wrong = [False, False, True, True]
    assert auroc([0.1, 0.2, 0.8, 0.9], wrong) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], wrong) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], wrong) == 0.5


def test_auroc_by_hand_with_ties():
    # wrong: 0.9, 0.4, 0.0; right: 0.4, 0.0, 0.0, 0.2. Pairs (wrong, right) won by the wrong
    # answer: 0.9 beats all 4; 0.4 beats 0.0, 0.0, 0.2 and ties 0.4 (1/2); 0.0 ties two 0.0s.
    scores = [0.9, 0.4, 0.0, 0.4, 0.0, 0.0, 0.2]
    wrong = [True, True, True, False, False, False, False]
    assert auroc(scores, wrong) == pytest.approx((4 + 3.5 + 1) / 12, abs=1e-15)
    rng = np.random.default_rng(3)  # and the same as scikit-learn's trapezoids, ties included
    for _ in range(20):
        s, w = rng.integers(0, 4, 30).astype(float), rng.random(30) < 0.4
        assert auroc(s, w) == pytest.approx(roc_auc_score(w, s), abs=1e-12)


def test_auroc_needs_both_classes():
    assert auroc([0.1, 0.2], [True, True]) is None
    assert auroc([0.1, 0.2], [False, False]) is None
    assert auroc([], []) is None
    with pytest.raises(ValueError, match="one label per score"):
        auroc([0.1], [True, False])
    with pytest.raises(ValueError, match="finite"):
        auroc([math.nan, 0.1], [True, False])


def test_roc_points_run_from_the_origin_to_one_one():
    fpr, tpr = roc_points([0.1, 0.2, 0.8, 0.9], [False, False, True, True])
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.trapezoid(tpr, fpr) == 1.0


def test_accuracy_at_coverage_by_hand():
    # Most certain first: 0.0 (right), 0.0 (wrong; ties keep their order), 0.1 (right),
    # 0.3 (right), 0.7 (wrong), 1.2 (wrong).
    scores = [0.3, 0.0, 1.2, 0.0, 0.7, 0.1]
    correct = [True, True, False, False, False, True]
    assert accuracy_at_coverage(scores, correct, 1 / 6) == 1.0
    assert accuracy_at_coverage(scores, correct, 0.5) == pytest.approx(2 / 3)  # 3 questions
    assert accuracy_at_coverage(scores, correct, 0.6) == 0.75  # ceil(3.6) = 4
    assert accuracy_at_coverage(scores, correct, 1.0) == 0.5
    assert accuracy_at_coverage([], [], 0.5) is None
    assert [covered(10, q) for q in (0.01, 0.5, 0.8, 1.0)] == [1, 5, 8, 10]
    with pytest.raises(ValueError, match="coverage"):
        covered(10, 0)


@pytest.mark.parametrize(
    ("answer", "exact", "contains"),
    [
        ("Canberra", True, True),
        ("The capital is Canberra.", False, True),
        ("canberra!", True, True),
        ("Not Canberra", False, True),  # containment's known blind spot
        ("Canberras", False, False),  # whole words only
        ("Sydney", False, False),
        ("...", False, False),
    ],
)
def test_exact_and_contains(answer, exact, contains):
    assert matches(answer, ["Canberra", "ACT"], "exact") is exact
    assert matches(answer, ["Canberra", "ACT"], "contains") is contains


async def test_the_judge_grades_what_matching_cannot():
    script = {
        "meanings": {"The capital is Canberra.": "au", "Canberra": "au", "Sydney": "syd"},
    }
    service = InferenceService(OfflineProvider("offline-judge"), None, max_retry_after=1.0)
    judge = InferenceJudge(service, {"offline_judge": script})
    grader = Grader("judge", judge)
    q = "What is the capital of Australia?"
    assert await grader.correct("The capital is Canberra.", ["Canberra"], q) is True
    assert await grader.correct("the capital is canberra", ["Canberra"], q) is True  # same key
    assert await grader.correct("Sydney", ["Canberra"], q) is False
    assert await grader.correct("canberra", ["Canberra"], q) is True  # exact: no call
    assert await grader.correct("", ["Canberra"], q) is False
    assert service.provider_calls == 2
    await service.aclose()
    with pytest.raises(ValueError, match="needs a judge"):
        Grader("judge")
    with pytest.raises(ValueError, match="unknown correctness mode"):
        Grader("fuzzy")
