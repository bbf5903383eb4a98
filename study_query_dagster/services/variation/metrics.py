"""Answer-variation metrics as pure functions of class labels, texts and vectors.

Per cell (one prompt sent to one target n times), with p_k the share of class k:

- `semantic_entropy` = -sum p_k ln p_k over the equivalence classes (the discrete variant of
  Kuhn et al. 2023 / Farquhar et al., Nature 2024); 0 when every answer is in one class, ln n when
  all n differ. `normalized_semantic_entropy` = SE / ln n (n >= 2).
- `num_classes` K, `modal_share` max p_k.
- `likelihood_semantic_entropy` (Kuhn et al. 2023): the answers' likelihoods (each the sum of
  its token log-probabilities) summed per class and normalised over the sampled answers give
  p_c; then -sum p_c ln p_c. In [0, ln K]; equal to the discrete one when every answer is
  equally likely.
- `raw_agreement` / `parsed_agreement` (Atil et al. 2024): 1 when all n raw / normalised answers
  are identical, else 0.
- `seu` = 1 - mean pairwise cosine similarity of the answers' embeddings (n >= 2).
- `vendi` = exp(von Neumann entropy of G/n), G the cosine-similarity matrix (Friedman & Dieng
  2023): 1 for identical answers, n for mutually orthogonal ones.

Between two class distributions over the same classes: `jsd` (Jensen-Shannon divergence, base
2, in [0, 1]), `cross_agreement` = sum_k P_a(k) P_b(k) (the chance that one answer of each
agrees) and `modal_agreement` (1 when the two share a most frequent class).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np
from scipy.special import entr, logsumexp, rel_entr

# Values within this distance of a bound count as on it (floating-point rounding of sums).
TOLERANCE = 1e-9


def class_counts(labels: Sequence[Hashable]) -> dict[Hashable, int]:
    """How many answers each class holds, classes in order of first appearance."""
    counts: dict[Hashable, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return counts


def _counts_array(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    array = np.asarray(counts, dtype=float)
    if array.ndim != 1 or array.size == 0 or np.any(array < 0) or array.sum() <= 0:
        raise ValueError(f"class counts must be non-negative with a positive total (got {counts})")
    return array


def _entropy(weights: np.ndarray) -> float:
    # scipy's `entr` ufunc (-x ln x, 0 at 0); `scipy.stats.entropy` would do the same at ~50x
    # the cost per call, which adds up over thousands of cells.
    return float(entr(weights / weights.sum()).sum())


def semantic_entropy(counts: Sequence[int] | np.ndarray) -> float:
    """-sum p_k ln p_k of the class counts (nats)."""
    return _entropy(_counts_array(counts))


def likelihood_semantic_entropy(labels: Sequence[Hashable], log_likelihoods) -> float:
    """-sum_c p_c ln p_c with p_c = sum of exp(log-likelihood) over the answers of class c,
    divided by the sum over every answer (computed in log space: long answers have
    likelihoods far below the smallest float)."""
    values = np.asarray(log_likelihoods, dtype=float)
    if values.ndim != 1 or values.size == 0 or values.size != len(labels):
        raise ValueError(
            f"one log-likelihood per answer is needed ({len(labels)} answers, {values.size} values)"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError("log-likelihoods must be finite")
    total = logsumexp(values)
    classes = list(class_counts(labels))
    per_class = np.array(
        [logsumexp(values[[k == c for k in labels]]) - total for c in classes], dtype=float
    )
    return float(entr(np.exp(per_class)).sum())


def normalized_semantic_entropy(counts: Sequence[int] | np.ndarray) -> float | None:
    """Semantic entropy / ln n, in [0, 1]; None for n < 2 (ln 1 = 0: nothing to compare)."""
    n = int(round(_counts_array(counts).sum()))
    return semantic_entropy(counts) / math.log(n) if n >= 2 else None


def modal_share(counts: Sequence[int] | np.ndarray) -> float:
    array = _counts_array(counts)
    return float(array.max() / array.sum())


def all_identical(values: Sequence[Hashable]) -> float:
    """1.0 when every value is the same (raw or parsed agreement), else 0.0."""
    if not values:
        raise ValueError("agreement needs at least one answer")
    return 1.0 if len(set(values)) == 1 else 0.0


def mean_length(texts: Sequence[str]) -> float:
    """Mean answer length in characters (Unicode code points)."""
    if not texts:
        raise ValueError("mean length needs at least one answer")
    return float(np.mean([len(t) for t in texts]))


def unit_rows(vectors: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """The vectors (one per row) scaled to unit length; ValueError for an empty matrix or a
    zero or non-finite vector (its direction is undefined)."""
    matrix = np.asarray(vectors, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise ValueError(f"expected a non-empty matrix of vectors (got shape {matrix.shape})")
    norms = np.linalg.norm(matrix, axis=1)
    if np.any(norms == 0) or not np.all(np.isfinite(norms)):
        raise ValueError("every vector needs a finite, non-zero norm")
    return matrix / norms[:, None]


def cosine_similarity_matrix(vectors) -> np.ndarray:
    unit = unit_rows(vectors)
    return np.clip(unit @ unit.T, -1.0, 1.0)


def seu(vectors) -> float | None:
    """1 - mean pairwise cosine similarity (pairs i < j); None for fewer than two answers."""
    similarity = cosine_similarity_matrix(vectors)
    n = similarity.shape[0]
    if n < 2:
        return None
    upper = similarity[np.triu_indices(n, k=1)]
    return float(1.0 - upper.mean())


def vendi(vectors) -> float:
    """exp(-sum lambda ln lambda) over the eigenvalues lambda of G/n."""
    similarity = cosine_similarity_matrix(vectors)
    eigenvalues = np.linalg.eigvalsh(similarity / similarity.shape[0])
    # G is positive semi-definite: negative eigenvalues are rounding noise.
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    return float(math.exp(_entropy(eigenvalues)))


def _distributions(p, q) -> tuple[np.ndarray, np.ndarray]:
    p, q = _counts_array(p), _counts_array(q)
    if p.shape != q.shape:
        raise ValueError(f"distributions over different classes ({p.size} vs {q.size})")
    return p / p.sum(), q / q.sum()


def jsd(p, q) -> float:
    """Jensen-Shannon divergence (base 2) of two count or probability vectors: 0 for equal
    distributions, 1 for disjoint ones."""
    p, q = _distributions(p, q)
    m = (p + q) / 2
    value = (rel_entr(p, m).sum() + rel_entr(q, m).sum()) / (2 * math.log(2))
    return float(min(max(value, 0.0), 1.0))


def cross_agreement(p, q) -> float:
    """sum_k P_a(k) P_b(k): the chance that an answer of each, drawn at random, agree."""
    p, q = _distributions(p, q)
    return float(np.dot(p, q))


def modal_classes(counts: Sequence[int] | np.ndarray) -> frozenset[int]:
    """Indices of the most frequent classes (several on a tie)."""
    array = _counts_array(counts)
    return frozenset(int(i) for i in np.flatnonzero(array == array.max()))


def modal_agreement(p, q) -> float:
    """1.0 when the two distributions share a most frequent class, else 0.0. A tie makes every
    tied class modal, so a 5/5 split agrees with either of its classes."""
    _distributions(p, q)
    return 1.0 if modal_classes(p) & modal_classes(q) else 0.0
