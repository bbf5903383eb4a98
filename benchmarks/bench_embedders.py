"""Offline embedders: texts/s of the wordllama model against the feature-hashing embedder, on
the same 2,000 answer-like texts in calls of 256 (the service's batch size), in one process.

The model is loaded before timing (its one-off load is printed on its own line); the figure is
what a `response_embeddings` step pays per text once it runs.
"""

from __future__ import annotations

import asyncio
import random

from study_query_dagster.providers.embeddings import OfflineEmbeddingProvider
from study_query_dagster.providers.wordllama_embeddings import (
    WordLlamaEmbeddingProvider,
    load_model,
)

from .support import ratio_line, timed

N = 2_000
BATCH = 256
WORDS = [
    "the",
    "capital",
    "of",
    "france",
    "is",
    "paris",
    "answer",
    "model",
    "says",
    "probably",
    "city",
    "river",
    "population",
    "history",
    "north",
    "largest",
    "known",
    "official",
    "language",
    "because",
    "however",
    "in",
    "1889",
    "about",
]


def make_texts() -> list[str]:
    rng = random.Random(7)
    return [" ".join(rng.choices(WORDS, k=rng.randint(6, 40))) + "." for _ in range(N)]


def throughput(provider, texts: list[str]) -> float:
    async def embed_all():
        for start in range(0, len(texts), BATCH):
            await provider.embed(texts[start : start + BATCH])

    asyncio.run(embed_all())  # warm-up: first-call costs are not what is measured
    return len(texts) / timed(lambda: asyncio.run(embed_all()))


def run():
    load_model.cache_clear()
    load_s = timed(load_model)
    texts = make_texts()
    semantic = throughput(WordLlamaEmbeddingProvider(), texts)
    hashed = throughput(OfflineEmbeddingProvider(), texts)
    yield f"wordllama model load (once per process): {load_s * 1000:,.0f} ms"
    yield ratio_line(
        f"wordllama embedder, {N:,} texts of 6-40 words",
        semantic,
        hashed,
        "texts/s",
        "(baseline: the offline feature-hashing embedder)",
    )
