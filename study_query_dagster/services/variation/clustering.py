"""Clustering of answer embeddings with scikit-learn: what `answer_clusters` computes, as pure
functions of a matrix of vectors (one row per answer).

Vectors are scaled to unit length first, so Euclidean distance ranks pairs as cosine does.

- `kmeans`: a sweep of K over [k_min, k_max] (capped below the number of distinct answers),
  each fit with k-means++ and several initialisations; K is chosen by the highest silhouette
  (`k_rule: silhouette`) or at the knee of the inertia curve (`k_rule: knee`: the K farthest
  below the chord from K = 1 to k_max, on both axes scaled to [0, 1]). Restart stability: the
  chosen K refit with `restarts` seeds (one initialisation each), the mean adjusted Rand index
  over every pair of fits (1 = every seed finds the same clusters).
- `hdbscan`: density-based; K is found, answers in no dense region are noise (label -1). It is
  deterministic, so no restart stability is recorded.

Each cluster's representative is the answer nearest its centroid. `project_2d` gives the PCA
projection the scatter chart draws.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from .metrics import unit_rows

# Bump when a rule or what it is computed over changes: clusterings of different versions are
# other results.
CLUSTERING_VERSION = "1"
NOISE = -1


@dataclass(frozen=True)
class SweepPoint:
    k: int
    inertia: float
    silhouette: float | None  # undefined for K = 1


@dataclass
class Clustering:
    method: str
    labels: np.ndarray  # per answer: 0..K-1 by first appearance, NOISE for hdbscan's noise
    k: int
    representatives: list[int]  # per cluster 0..K-1, the index of the answer nearest its centroid
    silhouette: float | None = None  # of the chosen clustering (noise left out)
    sweep: list[SweepPoint] = field(default_factory=list)
    knee_k: int | None = None
    chosen_by: str = ""
    stability_ari: float | None = None  # mean over pairs of restarts
    stability_min_ari: float | None = None
    note: str = ""

    def summary(self) -> dict[str, Any]:
        """The numbers stored with the clusters."""
        return {
            "k": self.k,
            "chosen_by": self.chosen_by,
            "silhouette": self.silhouette,
            "knee_k": self.knee_k,
            "stability_ari": self.stability_ari,
            "stability_min_ari": self.stability_min_ari,
            "noise": int(np.sum(self.labels == NOISE)),
            "sweep": [vars(p) for p in self.sweep],
            "note": self.note,
        }


def first_appearance_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel clusters 0, 1, ... by their first member (noise stays NOISE)."""
    numbering: dict[int, int] = {}
    out = []
    for label in labels.tolist():
        out.append(NOISE if label == NOISE else numbering.setdefault(label, len(numbering)))
    return np.array(out, dtype=int)


def nearest_to_centroid(x: np.ndarray, labels: np.ndarray) -> list[int]:
    """Per cluster 0..K-1, the index of the member nearest the members' mean (earliest on a
    tie)."""
    out = []
    for label in range(int(labels.max()) + 1 if (labels >= 0).any() else 0):
        members = np.flatnonzero(labels == label)
        centroid = x[members].mean(axis=0)
        distances = np.linalg.norm(x[members] - centroid, axis=1)
        out.append(int(members[int(np.argmin(distances))]))
    return out


def knee(ks: list[int], inertias: list[float]) -> int | None:
    """The K at the knee of a decreasing inertia curve: the point farthest below the chord from
    its first to its last point, with both axes scaled to [0, 1]. None for fewer than three
    points or a flat curve."""
    if len(ks) < 3:
        return None
    x = np.asarray(ks, dtype=float)
    y = np.asarray(inertias, dtype=float)
    if y[0] - y[-1] <= 0:
        return None
    xs = (x - x[0]) / (x[-1] - x[0])
    ys = (y - y[-1]) / (y[0] - y[-1])
    gap = (1.0 - xs) - ys  # chord minus curve
    best = int(np.argmax(gap))
    return ks[best] if gap[best] > 0 else None


@contextmanager
def one_thread():
    """scikit-learn's OpenMP/BLAS threads on one core: with a few thousand answers the work is
    small, and threads that spin-wait beside other busy processes (Dagster runs steps in
    parallel) made a k-means fit 10x slower on a loaded 2-core machine (make bench)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def _kmeans(x: np.ndarray, k: int, seed: int, n_init: int):
    from sklearn.cluster import KMeans

    with warnings.catch_warnings():
        # Fewer distinct points than k only happens in restarts of tiny inputs; labels stay valid.
        warnings.simplefilter("ignore", category=UserWarning)
        return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x)


def cluster_kmeans(
    vectors: np.ndarray,
    *,
    k_min: int = 2,
    k_max: int = 8,
    k_rule: str = "silhouette",
    restarts: int = 5,
    seed: int = 0,
    n_init: int = 10,
) -> Clustering:
    """The k-means sweep, choice of K, representatives and restart stability (module doc)."""
    with one_thread():
        return _cluster_kmeans(vectors, k_min, k_max, k_rule, restarts, seed, n_init)


def _cluster_kmeans(vectors, k_min, k_max, k_rule, restarts, seed, n_init) -> Clustering:
    from sklearn.metrics import adjusted_rand_score, silhouette_score

    x = unit_rows(vectors)
    n = x.shape[0]
    distinct = len(np.unique(x.round(12), axis=0))
    top = min(k_max, distinct, n - 1)
    if top < max(k_min, 2):
        labels = np.zeros(n, dtype=int)
        return Clustering(
            "kmeans",
            labels,
            1,
            nearest_to_centroid(x, labels),
            chosen_by="too few distinct answers",
            note=f"{distinct} distinct answers: one cluster",
        )
    total = float(((x - x.mean(axis=0)) ** 2).sum())  # inertia of K = 1
    sweep, fits = [SweepPoint(1, total, None)], {}
    for k in range(max(k_min, 2), top + 1):
        model = _kmeans(x, k, seed, n_init)
        fits[k] = model.labels_
        sweep.append(
            SweepPoint(k, float(model.inertia_), float(silhouette_score(x, model.labels_)))
        )
    curve = [p for p in sweep if p.k == 1 or p.k >= k_min]
    knee_k = knee([p.k for p in curve], [p.inertia for p in curve])
    by_silhouette = max((p for p in sweep if p.silhouette is not None), key=lambda p: p.silhouette)
    if k_rule == "knee" and knee_k is not None and knee_k in fits:
        k, chosen_by = knee_k, "knee"
    else:
        k = by_silhouette.k
        chosen_by = "silhouette" if k_rule == "silhouette" else "silhouette (no knee)"
    labels = first_appearance_labels(fits[k])
    runs = [_kmeans(x, k, seed + 1 + r, 1).labels_ for r in range(restarts)]
    scores = [adjusted_rand_score(a, b) for a, b in combinations(runs, 2)]
    return Clustering(
        "kmeans",
        labels,
        k,
        nearest_to_centroid(x, labels),
        silhouette=next(p.silhouette for p in sweep if p.k == k),
        sweep=sweep,
        knee_k=knee_k,
        chosen_by=chosen_by,
        stability_ari=float(np.mean(scores)) if scores else None,
        stability_min_ari=float(np.min(scores)) if scores else None,
    )


def cluster_hdbscan(vectors: np.ndarray, *, min_cluster_size: int = 5) -> Clustering:
    """Density-based clusters (HDBSCAN); answers in no dense region are noise."""
    from sklearn.cluster import HDBSCAN
    from sklearn.metrics import silhouette_score

    x = unit_rows(vectors)
    if x.shape[0] < max(min_cluster_size, 2):
        labels = np.zeros(x.shape[0], dtype=int)
        return Clustering(
            "hdbscan",
            labels,
            1,
            nearest_to_centroid(x, labels),
            chosen_by="too few answers",
            note=f"{x.shape[0]} answers, below min_cluster_size {min_cluster_size}: one cluster",
        )
    with one_thread():
        fitted = HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit(x)
    labels = first_appearance_labels(fitted.labels_)
    k = int(labels.max()) + 1 if (labels >= 0).any() else 0
    clustered = labels != NOISE
    silhouette = None
    if 2 <= k < int(clustered.sum()):
        with one_thread():
            silhouette = float(silhouette_score(x[clustered], labels[clustered]))
    return Clustering(
        "hdbscan",
        labels,
        k,
        nearest_to_centroid(x, labels),
        silhouette=silhouette,
        chosen_by="density",
    )


def project_2d(vectors: np.ndarray) -> np.ndarray:
    """The answers on their first two principal components (zeros where there are fewer)."""
    from sklearn.decomposition import PCA

    x = unit_rows(vectors)
    components = min(2, x.shape[0], x.shape[1])
    out = np.zeros((x.shape[0], 2))
    if components and x.shape[0] > 1:
        with one_thread():
            out[:, :components] = PCA(n_components=components).fit_transform(x)
    return out
