"""Drift formulas and the permutation test (issue 14's known answers)."""

import math

import numpy as np
import pytest

from study_query_dagster.services.variation import drift


def test_identical_samples_give_p_one():
    test = drift.permutation_test([0, 1, 0, 2, 1], [0, 1, 0, 2, 1], permutations=999)
    assert test.observed == 0.0
    assert test.p_value == 1.0  # every shuffle reaches JSD 0


def test_samples_of_one_answer_give_p_one():
    test = drift.permutation_test([0] * 10, [0] * 10, permutations=99)
    assert test.p_value == 1.0


def test_disjoint_samples_of_ten_give_the_smallest_p():
    """Two disjoint samples of 10 with B = 999: p = 1 / (B + 1) = 0.001, unless one of the
    999 shuffles reproduces the observed split (each does with chance 2 / C(20, 10), so about
    1% of seeds see one and give 0.002). Checked over 100 seeds: at most a few see one."""
    p_values = [
        drift.permutation_test([0] * 10, [1] * 10, permutations=999, seed=s).p_value
        for s in range(100)
    ]
    assert set(p_values) <= {0.001, 0.002}
    assert p_values.count(0.001) >= 96
    cell = drift.permutation_test(
        [0] * 10, [1] * 10, permutations=999, seed=drift.cell_seed(0, "capital", "target")
    )
    assert cell.observed == pytest.approx(1.0, abs=1e-12)
    assert cell.p_value == 0.001


def test_p_value_is_never_zero_and_reproducible():
    a, b = [0, 0, 1, 2, 0, 1], [1, 2, 2, 2, 1, 0]
    first = drift.permutation_test(a, b, permutations=199, seed=5)
    assert first == drift.permutation_test(a, b, permutations=199, seed=5)
    assert 1 / 200 <= first.p_value <= 1.0
    assert (first.p_value * 200) == pytest.approx(round(first.p_value * 200))  # (1 + hits) / 200


def test_permutation_test_matches_the_exact_test_for_a_small_case():
    """3 vs 3 with disjoint answers: 2 of the C(6, 3) = 20 splits are as extreme, so the exact
    p is 0.1; the Monte Carlo estimate with many shuffles must come close."""
    test = drift.permutation_test([0] * 3, [1] * 3, permutations=20_000, seed=1)
    assert test.p_value == pytest.approx(0.1, abs=0.01)
    assert test.min_p_value == pytest.approx(0.1)
    assert not test.testable(0.05)


def test_min_attainable_p():
    assert drift.min_attainable_p(10, 10, 999) == 0.001
    assert drift.min_attainable_p(3, 3, 999) == pytest.approx(2 / 20)
    assert drift.min_attainable_p(2, 3, 999) == pytest.approx(1 / 10)
    assert drift.min_attainable_p(5, 5, 99) == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"permutations": 0}, "at least 1"), ({}, "both runs")],
)
def test_permutation_test_refuses_bad_input(kwargs, message):
    b = [] if not kwargs else [1]
    with pytest.raises(ValueError, match=message):
        drift.permutation_test([0], b, **kwargs)


def test_cell_seeds_differ_per_cell_and_are_stable():
    assert drift.cell_seed(0, "p", "t") == drift.cell_seed(0, "p", "t")
    assert drift.cell_seed(0, "p", "t") != drift.cell_seed(0, "p", "u")
    assert drift.cell_seed(0, "p", "t") != drift.cell_seed(1, "p", "t")


def test_modal_changed_and_delta_entropy():
    assert drift.modal_changed([10, 0], [3, 7]) == 1.0
    assert drift.modal_changed([10, 0], [7, 3]) == 0.0
    assert drift.modal_changed([5, 5], [0, 10]) == 0.0  # tied: shares a modal class
    assert drift.delta_semantic_entropy([7, 3], [10]) == pytest.approx(0.6108643, abs=5e-8)
    assert drift.delta_semantic_entropy([10], [1] * 10) == pytest.approx(-math.log(10))


def test_centroid_shift():
    assert drift.centroid_shift(np.array([1.0, 2.0]), np.array([2.0, 4.0])) == pytest.approx(0.0)
    assert drift.centroid_shift(np.array([1.0, 0.0]), np.array([0.0, 3.0])) == pytest.approx(1.0)
    assert drift.centroid_shift(np.array([1.0, 0.0]), np.array([-1.0, 0.0])) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="zero vector"):
        drift.centroid_shift(np.zeros(2), np.ones(2))
