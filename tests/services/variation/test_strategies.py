"""Equivalence strategies: `exact` on normalised strings, `embedding` by average-linkage
clustering of cosine distances cut at a threshold."""

import math

import pytest

from study_query_dagster.services.variation.strategies import (
    EmbeddingStrategy,
    ExactStrategy,
    Partition,
    build_strategy,
)

from .support import TableEmbedder, unit


async def test_exact_classes_by_normalised_text_in_first_appearance_order():
    texts = ["Sydney", "Canberra.", "the capital is Canberra", "canberra", "SYDNEY!", "Perth"]
    partition = await ExactStrategy().partition(texts)
    assert partition.labels == (0, 1, 2, 1, 0, 3)
    assert partition.num_classes == 4
    assert partition.members(1) == [1, 3]


async def test_exact_representative_is_the_most_frequent_spelling():
    texts = ["canberra", "Canberra", "Canberra", "CANBERRA"]
    partition = await ExactStrategy().partition(texts)
    assert partition == Partition(labels=(0, 0, 0, 0), representatives=(1,))


async def test_embedding_threshold_cuts_between_near_and_far():
    # a and a2 are 0.05 apart (cosine distance), b is orthogonal to both.
    a2 = math.acos(0.95)
    embedder = TableEmbedder({"a": unit(0), "a2": unit(a2), "b": unit(math.pi / 2 + a2 / 2)})
    strategy = EmbeddingStrategy(embedder, threshold=0.15)
    partition = await strategy.partition(["a", "b", "a2", "a"])
    assert partition.labels == (0, 1, 0, 0)
    tight = await EmbeddingStrategy(embedder, threshold=0.04).partition(["a", "b", "a2", "a"])
    assert tight.labels == (0, 1, 2, 0)


async def test_embedding_uses_average_not_single_linkage():
    """A chain p0 - p1 - p2 with neighbours 0.1 apart and the ends ~0.38 apart: single linkage
    would join all three below 0.2; average linkage joins p2 only at (0.1 + 0.38) / 2 = 0.24."""
    step = math.acos(0.9)
    embedder = TableEmbedder({"p0": unit(0), "p1": unit(step), "p2": unit(2 * step)})
    texts = ["p0", "p1", "p2"]
    assert (await EmbeddingStrategy(embedder, 0.2).partition(texts)).num_classes == 2
    assert (await EmbeddingStrategy(embedder, 0.25).partition(texts)).num_classes == 1


async def test_embedding_medoid_is_the_central_member():
    step = math.acos(0.99)
    embedder = TableEmbedder({"l": unit(-step), "c": unit(0), "r": unit(step)})
    partition = await EmbeddingStrategy(embedder, 0.15).partition(["l", "r", "c"])
    assert partition.labels == (0, 0, 0)
    assert partition.representatives == (2,)


async def test_embedding_puts_empty_answers_in_a_class_of_their_own_without_embedding_them():
    embedder = TableEmbedder({"a": unit(0)})
    partition = await EmbeddingStrategy(embedder).partition(["", "a", "  ", "a"])
    assert partition.labels == (0, 1, 0, 1)


async def test_a_single_answer_is_one_class():
    partition = await EmbeddingStrategy(TableEmbedder({"a": unit(1)})).partition(["a"])
    assert partition == Partition((0,), (0,))


def test_settings_are_recorded_and_keyed():
    embedder = TableEmbedder({})
    strategy = EmbeddingStrategy(embedder, 0.15)
    assert strategy.settings() == {
        "embedder": "table",
        "model": "table-v1",
        "threshold": 0.15,
        "linkage": "average",
        "distance": "cosine",
    }
    assert strategy.key.startswith("embedding-") and len(strategy.key) == len("embedding-") + 8
    assert strategy.key == EmbeddingStrategy(embedder, 0.15).key
    assert strategy.key != EmbeddingStrategy(embedder, 0.2).key
    assert ExactStrategy().key == "exact"


def test_build_strategy():
    assert isinstance(build_strategy("exact"), ExactStrategy)
    built = build_strategy("embedding", embedder=TableEmbedder({}), threshold=None)
    assert isinstance(built, EmbeddingStrategy) and built.threshold == 0.15
    with pytest.raises(ValueError, match="needs an embedder"):
        build_strategy("embedding")
    with pytest.raises(ValueError, match="unknown equivalence strategy 'nli'"):
        build_strategy("nli")
    with pytest.raises(ValueError, match="built from its configuration"):
        build_strategy("entailment")
    with pytest.raises(ValueError, match="threshold"):
        EmbeddingStrategy(TableEmbedder({}), threshold=0)
