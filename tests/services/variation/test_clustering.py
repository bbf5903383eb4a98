"""Clustering of answer embeddings on synthetic vectors whose clusters are known: the chosen K
(silhouette, and the knee of a clear elbow), ARI = 1 against the truth, representatives nearest
their centroid, restart stability, HDBSCAN's clusters and noise."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from study_query_dagster.services.variation import clustering as cl


def blobs(sizes, dim=12, spread=0.04, seed=0):
    """Tight clusters around orthogonal directions: (vectors, true labels)."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    centres = np.eye(dim)[: len(sizes)]
    return centres[truth] + rng.normal(scale=spread, size=(len(truth), dim)), truth


@pytest.mark.parametrize("rule", ["silhouette", "knee"])
def test_known_clusters_are_found(rule):
    vectors, truth = blobs([12, 9, 15, 6])
    found = cl.cluster_kmeans(vectors, k_min=2, k_max=8, k_rule=rule, restarts=5)
    assert found.k == 4 and found.chosen_by == rule
    assert adjusted_rand_score(truth, found.labels) == 1.0
    assert list(found.labels[:1]) == [0] and set(found.labels) == {0, 1, 2, 3}  # by appearance
    assert found.stability_ari == 1.0 and found.stability_min_ari == 1.0
    assert [p.k for p in found.sweep] == list(range(1, 9))
    assert found.sweep[0].silhouette is None and found.silhouette == max(
        p.silhouette for p in found.sweep[1:]
    )


def test_the_knee_of_a_clear_elbow():
    assert cl.knee([1, 2, 3, 4, 5, 6, 7, 8], [100, 50, 10, 9, 8, 7, 6, 5]) == 3
    assert cl.knee([1, 2, 3, 4, 5, 6], [60, 10, 9, 8.5, 8, 7.5]) == 2
    assert cl.knee([1, 2], [10, 1]) is None  # too few points
    assert cl.knee([1, 2, 3], [5, 5, 5]) is None  # flat
    # On answers: K = 1 (everything in one cluster) starts the curve, so three blobs bend at 3.
    vectors, truth = blobs([10, 10, 10])
    by_knee = cl.cluster_kmeans(vectors, k_max=7, k_rule="knee")
    assert (by_knee.k, by_knee.knee_k) == (3, 3)
    assert adjusted_rand_score(truth, by_knee.labels) == 1.0


def test_representatives_are_nearest_the_centroid():
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.95, 0.05], [0.0, 1.0], [0.1, 0.9]])
    labels = np.array([0, 0, 0, 1, 1])
    unit = cl.unit_rows(vectors)
    # The middle answer of the first cluster; a tie (two answers) goes to the earlier one.
    assert cl.nearest_to_centroid(unit, labels) == [2, 3]


def test_stability_is_below_one_without_structure():
    vectors = np.random.default_rng(1).normal(size=(200, 10))
    found = cl.cluster_kmeans(vectors, k_min=8, k_max=8, restarts=5)
    assert found.k == 8 and found.stability_ari < 0.95


def test_too_few_distinct_answers_make_one_cluster():
    vectors = np.array([[1.0, 0.0]] * 5)
    found = cl.cluster_kmeans(vectors)
    assert (found.k, list(found.labels), found.representatives) == (1, [0] * 5, [0])
    assert "1 distinct answers" in found.note and found.stability_ari is None
    two = cl.cluster_kmeans(np.array([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 2))
    assert two.k == 2 and list(two.labels) == [0, 0, 0, 1, 1] and two.silhouette == 1.0


def test_hdbscan_finds_dense_clusters_and_noise():
    vectors, truth = blobs([15, 15, 15], spread=0.02)
    outlier = np.zeros((1, vectors.shape[1]))
    outlier[0, -1] = 1.0  # far from every cluster
    found = cl.cluster_hdbscan(np.vstack([vectors, outlier]), min_cluster_size=5)
    assert found.k == 3 and found.labels[-1] == cl.NOISE
    assert adjusted_rand_score(truth, found.labels[:-1]) == 1.0
    assert found.stability_ari is None and found.summary()["noise"] == 1
    small = cl.cluster_hdbscan(vectors[:3], min_cluster_size=5)
    assert small.k == 1 and "below min_cluster_size" in small.note


def test_projection_and_bad_vectors():
    vectors, _ = blobs([5, 5])
    assert cl.project_2d(vectors).shape == (10, 2)
    assert cl.project_2d(vectors[:1]).tolist() == [[0.0, 0.0]]
    with pytest.raises(ValueError, match="non-zero norm"):
        cl.cluster_kmeans(np.zeros((3, 2)))
