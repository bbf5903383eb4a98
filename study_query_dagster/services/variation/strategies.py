"""Equivalence strategies: how a cell's answers are grouped into classes of "the same answer".

A strategy turns a list of answer texts into a `Partition` (a class per answer, and each
class's medoid as its representative). `exact` compares normalised strings; `embedding` clusters
the answers' embeddings (average linkage on cosine distance, cut at a threshold). Both are
`EquivalenceStrategy` subclasses with an async `partition`, so a strategy that must call a
model (an LLM judge of mutual entailment) fits the same interface: register it in `STRATEGIES`.

`settings()` is recorded with every class and metric the strategy produced, so results made
with another embedder, model or threshold are never mixed up.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist, squareform

from ..prompt_sets.variation import DEFAULT_EMBEDDING_THRESHOLD, ModelTarget, VariationConfig
from .embedder import Embedder
from .judge import DEFAULT_PARAMS, Judge
from .normalize import normalize_answer


@dataclass(frozen=True)
class Partition:
    """Class of each answer (0..K-1, numbered by first appearance) and, per class, the index
    of its representative answer (the medoid)."""

    labels: tuple[int, ...]
    representatives: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return len(self.representatives)

    def members(self, label: int) -> list[int]:
        return [i for i, k in enumerate(self.labels) if k == label]


def first_appearance(keys: Sequence[Any]) -> list[int]:
    """Relabel arbitrary class keys as 0, 1, ... in order of first appearance."""
    numbering: dict[Any, int] = {}
    return [numbering.setdefault(key, len(numbering)) for key in keys]


def most_common_medoid(texts: Sequence[str], labels: Sequence[int]) -> tuple[int, ...]:
    """Per class, the answer whose raw text occurs most often in it (earliest on a tie): the
    medoid when members of a class are interchangeable."""
    counts = Counter(zip(labels, texts, strict=True))
    chosen: dict[int, tuple[int, int]] = {}  # label -> (-count, index)
    for index, (text, label) in enumerate(zip(texts, labels, strict=True)):
        best = chosen.get(label)
        if best is None or (-counts[label, text], index) < best:
            chosen[label] = (-counts[label, text], index)
    return tuple(chosen[k][1] for k in range(len(chosen)))


def distance_medoid(distances: np.ndarray, labels: Sequence[int]) -> tuple[int, ...]:
    """Per class, the member with the least total distance to the others (earliest on a tie)."""
    labels_array = np.asarray(labels)
    out = []
    for label in range(int(labels_array.max()) + 1 if len(labels) else 0):
        members = np.flatnonzero(labels_array == label)
        totals = distances[np.ix_(members, members)].sum(axis=1)
        out.append(int(members[int(np.argmin(totals))]))
    return tuple(out)


class EquivalenceStrategy(ABC):
    """Groups answers into classes of equivalent answers."""

    name: ClassVar[str]
    needs_embeddings: ClassVar[bool] = False

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Everything that determines the classes (recorded with every result)."""

    @abstractmethod
    async def partition(self, texts: Sequence[str], question: str | None = None) -> Partition:
        """The classes of these answers (at least one text) to `question` (the prompt; only
        a strategy that asks a model about the answers reads it)."""

    def usage(self) -> dict[str, int]:
        """Calls the strategy made so far (a judge's), for the asset's metadata."""
        return {}

    @property
    def key(self) -> str:
        """Short identity of strategy and settings, e.g. `exact` or `embedding-1a2b3c4d`."""
        settings = self.settings()
        if not settings:
            return self.name
        canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"))
        return f"{self.name}-{hashlib.sha256(canonical.encode()).hexdigest()[:8]}"


class ExactStrategy(EquivalenceStrategy):
    """Answers are equivalent when their normalised strings are equal (`normalize_answer`)."""

    name = "exact"

    def settings(self) -> dict[str, Any]:
        return {}

    async def partition(self, texts: Sequence[str], question: str | None = None) -> Partition:
        labels = first_appearance([normalize_answer(t) for t in texts])
        return Partition(tuple(labels), most_common_medoid(texts, labels))


class EmbeddingStrategy(EquivalenceStrategy):
    """Average-linkage agglomerative clustering of the answers' embeddings on cosine distance,
    cut at `threshold`: two groups merge while their mean pairwise distance is at most the
    threshold. Answers that are empty after stripping whitespace (nothing to embed) form one
    class of their own."""

    name = "embedding"
    needs_embeddings = True

    def __init__(self, embedder: Embedder, threshold: float = DEFAULT_EMBEDDING_THRESHOLD):
        if not 0.0 < threshold <= 2.0:
            raise ValueError(f"embedding threshold must be in (0, 2] (got {threshold})")
        self.embedder = embedder
        self.threshold = float(threshold)

    def settings(self) -> dict[str, Any]:
        return {
            **self.embedder.describe(),
            "threshold": self.threshold,
            "linkage": "average",
            "distance": "cosine",
        }

    async def partition(self, texts: Sequence[str], question: str | None = None) -> Partition:
        if not texts:
            raise ValueError("a partition needs at least one answer")
        filled = [i for i, t in enumerate(texts) if t.strip()]
        keys: list[Any] = [("empty",)] * len(texts)
        distances = np.zeros((len(texts), len(texts)))
        if filled:
            vectors = await self.embedder.embed([texts[i] for i in filled])
            cluster, sub = self.cluster(vectors)
            for position, index in enumerate(filled):
                keys[index] = ("cluster", int(cluster[position]))
            distances[np.ix_(filled, filled)] = sub
        labels = first_appearance(keys)
        return Partition(tuple(labels), distance_medoid(distances, labels))

    def cluster(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cluster id per vector, the square cosine-distance matrix)."""
        matrix = np.asarray(vectors, dtype=np.float64)
        if matrix.shape[0] == 1:
            return np.array([1]), np.zeros((1, 1))
        norms = np.linalg.norm(matrix, axis=1)
        if np.any(norms == 0):
            raise ValueError("an answer's embedding is the zero vector: cosine is undefined")
        # Cosine distances in [0, 2]; rounding can leave -1e-16 or 2 + 1e-16.
        condensed = np.clip(pdist(matrix / norms[:, None], metric="cosine"), 0.0, 2.0)
        tree = linkage(condensed, method="average")
        return fcluster(tree, t=self.threshold, criterion="distance"), squareform(condensed)


def _strategies() -> dict[str, type[EquivalenceStrategy]]:
    from .entailment import EntailmentStrategy  # it builds on this module

    return {s.name: s for s in (ExactStrategy, EmbeddingStrategy, EntailmentStrategy)}


STRATEGIES: dict[str, type[EquivalenceStrategy]] = _strategies()


def build_strategy(
    name: str, *, embedder: Embedder | None = None, threshold: float | None = None
) -> EquivalenceStrategy:
    """The strategy a prompt set's `variation:` block names."""
    if name == ExactStrategy.name:
        return ExactStrategy()
    if name == EmbeddingStrategy.name:
        if embedder is None:
            raise ValueError("the embedding strategy needs an embedder (the set's `embed:`)")
        return EmbeddingStrategy(embedder, threshold or DEFAULT_EMBEDDING_THRESHOLD)
    if name in STRATEGIES:
        raise ValueError(f"strategy {name!r} is built from its configuration (strategy_for_config)")
    raise ValueError(f"unknown equivalence strategy {name!r}; available: {', '.join(STRATEGIES)}")


def strategy_for_config(
    config: VariationConfig, *, embedder: Embedder | None = None, judge: Judge | None = None
) -> EquivalenceStrategy:
    """The strategy of a prompt set's `variation:` block. Without `judge`, an entailment
    strategy still has its key (what the checks need) but cannot partition."""
    if config.strategy == "entailment":
        from .entailment import EntailmentStrategy

        assert config.judge is not None  # the schema requires one
        return EntailmentStrategy(
            judge_describe(config.judge), judge, strict=config.strict_entailment
        )
    return build_strategy(config.strategy, embedder=embedder, threshold=config.effective_threshold)


def judge_describe(target: ModelTarget) -> dict[str, Any]:
    """The judge as recorded with its verdicts: provider, model and the params it is sent."""
    described = target.describe()
    return {**described, "params": {**DEFAULT_PARAMS, **described["params"]}}
