"""The variation formulas against values worked out by hand (issue 14's known answers)."""

import math

import numpy as np
import pytest

from study_query_dagster.services.variation import metrics as m
from study_query_dagster.services.variation.normalize import normalize_answer


def test_semantic_entropy_known_answers():
    assert m.semantic_entropy([10]) == 0.0
    # -(0.7 ln 0.7 + 0.3 ln 0.3)
    assert m.semantic_entropy([7, 3]) == pytest.approx(0.6108643, abs=5e-8)
    assert m.semantic_entropy([1] * 10) == pytest.approx(math.log(10), abs=1e-12)
    assert m.semantic_entropy([5, 5]) == pytest.approx(math.log(2), abs=1e-12)


def test_semantic_entropy_ignores_order_and_empty_classes():
    assert m.semantic_entropy([3, 7]) == m.semantic_entropy([7, 3])
    assert m.semantic_entropy([7, 0, 3]) == pytest.approx(m.semantic_entropy([7, 3]), abs=1e-15)


def test_normalized_semantic_entropy():
    assert m.normalized_semantic_entropy([1] * 10) == pytest.approx(1.0, abs=1e-12)
    assert m.normalized_semantic_entropy([10]) == 0.0
    assert m.normalized_semantic_entropy([7, 3]) == pytest.approx(0.6108643 / math.log(10), 1e-6)
    assert m.normalized_semantic_entropy([1]) is None  # ln 1 = 0: undefined


@pytest.mark.parametrize("bad", [[], [0, 0], [-1, 2], [[1, 2]]])
def test_counts_are_validated(bad):
    with pytest.raises(ValueError, match="class counts"):
        m.semantic_entropy(bad)


def test_modal_share_and_classes():
    assert m.modal_share([7, 3]) == 0.7
    assert m.modal_share([1] * 4) == 0.25
    assert m.modal_classes([2, 5, 5]) == {1, 2}


def test_class_counts_in_first_appearance_order():
    assert m.class_counts(["b", "a", "b", "c", "b"]) == {"b": 3, "a": 1, "c": 1}
    assert list(m.class_counts(["b", "a", "b"])) == ["b", "a"]


def test_agreement():
    assert m.all_identical(["Canberra"] * 3) == 1.0
    assert m.all_identical(["Canberra", "canberra"]) == 0.0
    parsed = [normalize_answer(t) for t in ["Canberra.", "canberra", " CANBERRA!"]]
    assert m.all_identical(parsed) == 1.0
    with pytest.raises(ValueError):
        m.all_identical([])


def test_mean_length_counts_code_points():
    assert m.mean_length(["ab", "abcd"]) == 3.0
    assert m.mean_length(["漢字", "é"]) == 1.5


def test_identical_vectors_have_no_spread():
    vectors = np.tile([0.3, -1.2, 2.0, 0.5], (6, 1))
    assert m.seu(vectors) == pytest.approx(0.0, abs=1e-12)
    assert m.vendi(vectors) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("n", [2, 5, 10])
def test_orthonormal_vectors_are_n_distinct_answers(n):
    rng = np.random.default_rng(n)
    basis, _ = np.linalg.qr(rng.normal(size=(32, n)))  # n orthonormal columns in 32 dimensions
    vectors = basis.T * rng.uniform(0.5, 3.0, size=(n, 1))  # lengths do not matter (cosine)
    assert m.vendi(vectors) == pytest.approx(float(n), abs=1e-9)
    assert m.seu(vectors) == pytest.approx(1.0, abs=1e-12)


def test_vendi_of_two_groups_is_between():
    # 7 copies of e1 and 3 of e2: G/n has eigenvalues 0.7 and 0.3, so Vendi = exp(SE(7/3)).
    vectors = np.array([[1.0, 0.0]] * 7 + [[0.0, 1.0]] * 3)
    assert m.vendi(vectors) == pytest.approx(math.exp(0.6108643), abs=1e-6)


def test_seu_needs_two_answers_and_non_zero_vectors():
    assert m.seu([[1.0, 0.0]]) is None
    assert m.vendi([[1.0, 0.0]]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="non-zero"):
        m.seu([[1.0, 0.0], [0.0, 0.0]])


def test_jsd_known_answers():
    assert m.jsd([0.2, 0.8], [0.2, 0.8]) == 0.0
    assert m.jsd([3, 0], [0, 5]) == pytest.approx(1.0, abs=1e-12)
    # M = (3/4, 1/4): (log2(4/3) + (0.5 log2(2/3) + 0.5 log2 2)) / 2
    assert m.jsd([1, 0], [0.5, 0.5]) == pytest.approx(0.3113, abs=5e-5)
    assert m.jsd([1, 0], [0.5, 0.5]) == pytest.approx(0.311278124459, abs=1e-12)
    assert m.jsd([1, 0], [0.5, 0.5]) == m.jsd([0.5, 0.5], [1, 0])


def test_jsd_takes_counts_or_shares():
    assert m.jsd([7, 3], [1, 1]) == pytest.approx(m.jsd([0.7, 0.3], [0.5, 0.5]), abs=1e-15)
    with pytest.raises(ValueError, match="different classes"):
        m.jsd([1, 0], [1, 0, 0])


def test_cross_and_modal_agreement():
    assert m.cross_agreement([10, 0], [10, 0]) == 1.0
    assert m.cross_agreement([10, 0], [0, 10]) == 0.0
    assert m.cross_agreement([7, 3], [5, 5]) == pytest.approx(0.5)
    assert m.cross_agreement([7, 3], [7, 3]) == pytest.approx(0.58)
    assert m.modal_agreement([7, 3], [6, 4]) == 1.0
    assert m.modal_agreement([7, 3], [3, 7]) == 0.0
    assert m.modal_agreement([5, 5], [0, 10]) == 1.0  # a tie: either class is modal


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("The capital is Canberra.", "capital is canberra"),
        ("An apple", "apple"),
        ("Yes!", "yes"),
        ("  Paris\n\n", "PARIS"),
        ("ﬁne", "fine"),  # NFKC folds the ligature
    ],
)
def test_normalisation_equates(a, b):
    assert normalize_answer(a) == normalize_answer(b)


@pytest.mark.parametrize(
    ("a", "b"), [("Canberra", "Sydney"), ("yes/no", "yesno"), ("theory", "ory"), ("1", "1.0")]
)
def test_normalisation_keeps_apart(a, b):
    assert normalize_answer(a) != normalize_answer(b)
