"""Drift of one cell between a run and its baseline run, as pure functions.

Both runs' answers are classified together (one pooled partition), so class k means the same
answer in both. From that partition: `drift_jsd` (JSD of the two class distributions, base 2),
`modal_changed` (1 when the runs share no most frequent class), `delta_semantic_entropy` and,
from the texts and embeddings, `delta_mean_length` and `centroid_shift` (1 - cosine of the mean
answer embeddings). `drift_p_value` comes from a permutation test of the run labels:
p = (1 + #{JSD_perm >= JSD_obs}) / (B + 1), so it is never 0 and at best 1 / (B + 1).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..prompt_sets.variation import DEFAULT_PERMUTATIONS
from .metrics import TOLERANCE, modal_classes, semantic_entropy


def _label_counts(labels: np.ndarray, classes: int) -> np.ndarray:
    return np.bincount(labels, minlength=classes).astype(float)


def _row_counts(rows: np.ndarray, classes: int) -> np.ndarray:
    """Class counts of each row of a label matrix, with one bincount (offset per row)."""
    offsets = (np.arange(rows.shape[0]) * classes)[:, None]
    flat = np.bincount((rows + offsets).ravel(), minlength=rows.shape[0] * classes)
    return flat.reshape(rows.shape[0], classes).astype(float)


def _jsd_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """JSD (base 2) of each row pair of two count matrices (vectorised for the permutations)."""
    p = p / p.sum(axis=1, keepdims=True)
    q = q / q.sum(axis=1, keepdims=True)
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log(p / m), 0.0).sum(axis=1)
        kl_q = np.where(q > 0, q * np.log(q / m), 0.0).sum(axis=1)
    return np.clip((kl_p + kl_q) / (2 * math.log(2)), 0.0, 1.0)


@dataclass(frozen=True)
class PermutationTest:
    observed: float  # JSD of the two runs' class distributions
    p_value: float
    permutations: int
    min_p_value: float  # the smallest p this test could return for these sample sizes

    def testable(self, alpha: float) -> bool:
        """Whether samples this small could show a difference at level `alpha` at all."""
        return self.min_p_value < alpha


def min_attainable_p(n_a: int, n_b: int, permutations: int) -> float:
    """The smallest p-value a permutation test of these sample sizes can give: no fewer than
    the relabelings that reproduce the observed split (two when n_a = n_b, as swapping the runs
    gives the same JSD) can reach the observed JSD, and never below 1 / (B + 1)."""
    splits = math.comb(n_a + n_b, n_a)
    reproducing = 2 if n_a == n_b else 1
    return max(1.0 / (permutations + 1), reproducing / splits)


def permutation_test(
    labels_a: Sequence[int],
    labels_b: Sequence[int],
    *,
    permutations: int = DEFAULT_PERMUTATIONS,
    seed: int | Sequence[int] = 0,
) -> PermutationTest:
    """Do the two runs' answers come from one distribution over the pooled classes? Shuffles
    which answers belong to which run `permutations` times (seeded: the same inputs give the
    same p) and counts how often the shuffled JSD reaches the observed one.

    Shuffles are drawn with replacement from every relabeling, the observed one included, which
    keeps p = (1 + hits) / (B + 1) valid for any sample size; so for two disjoint samples of 10
    it is 1 / (B + 1) unless a shuffle happens to reproduce the observed split (a chance of
    2 / C(20, 10) per shuffle, about 1% over 999)."""
    if permutations < 1:
        raise ValueError(f"permutations must be at least 1 (got {permutations})")
    a = np.asarray(labels_a, dtype=np.int64)
    b = np.asarray(labels_b, dtype=np.int64)
    if a.size == 0 or b.size == 0:
        raise ValueError("a permutation test needs answers in both runs")
    if a.min() < 0 or b.min() < 0:
        raise ValueError("class labels must be non-negative integers")
    pooled = np.concatenate([a, b])
    classes = int(pooled.max()) + 1
    observed = float(
        _jsd_rows(_label_counts(a, classes)[None, :], _label_counts(b, classes)[None, :])[0]
    )
    rng = np.random.default_rng(seed)
    shuffled = rng.permuted(np.broadcast_to(pooled, (permutations, pooled.size)), axis=1)
    counts_a = _row_counts(shuffled[:, : a.size], classes)
    counts_b = _row_counts(shuffled[:, a.size :], classes)
    extreme = int(np.count_nonzero(_jsd_rows(counts_a, counts_b) >= observed - TOLERANCE))
    return PermutationTest(
        observed=observed,
        p_value=(1 + extreme) / (permutations + 1),
        permutations=permutations,
        min_p_value=min_attainable_p(a.size, b.size, permutations),
    )


def cell_seed(seed: int, *parts: str) -> list[int]:
    """A seed per cell from the configured seed and the cell's identity, so that cells of equal
    sizes do not share one stream of shuffles (and with it their luck)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return [seed, *(int.from_bytes(digest[i : i + 4], "big") for i in range(0, 16, 4))]


def modal_changed(counts_run: Sequence[int], counts_baseline: Sequence[int]) -> float:
    """1.0 when the two runs share no most frequent class (over the pooled classes)."""
    return 0.0 if modal_classes(counts_run) & modal_classes(counts_baseline) else 1.0


def delta_semantic_entropy(counts_run: Sequence[int], counts_baseline: Sequence[int]) -> float:
    """SE(run) - SE(baseline): positive when the run's answers are more arbitrary."""
    return semantic_entropy(counts_run) - semantic_entropy(counts_baseline)


def centroid_shift(mean_run: np.ndarray, mean_baseline: np.ndarray) -> float:
    """1 - cosine similarity of the two runs' mean answer embeddings."""
    a = np.asarray(mean_run, dtype=np.float64)
    b = np.asarray(mean_baseline, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"mean embeddings of different shapes ({a.shape} vs {b.shape})")
    denominator = np.linalg.norm(a) * np.linalg.norm(b)
    if denominator == 0:
        raise ValueError("a mean embedding is the zero vector: its direction is undefined")
    return float(1.0 - np.clip(a @ b / denominator, -1.0, 1.0))
