"""Embedding cache: 10,000 texts (1,000 of them duplicates) embedded cold, then warm.

Cold: every unique text is a miss; the service sends ceil(unique / 256) API calls to the
loopback fake server. Warm: a fresh service (empty in-process LRU) finds everything in the
database with one query per chunk of 1,000 hashes, and sends no API call; a second warm pass
on the same service is served by its LRU. Baseline, measured in the same run on the same
database: the naive cache lookup (normalise, hash, then one query per item for the
same columns, decoded the same way).
"""

from __future__ import annotations

import asyncio
import math
import random

from sqlalchemy import bindparam, func, select

from study_query_dagster.db import EmbeddingVector
from study_query_dagster.db.vector_store import decode_vector_send
from study_query_dagster.providers.embeddings import OpenAIEmbeddingProvider
from study_query_dagster.services.embeddings import EmbeddingService
from tests.support.fake_llm_server import FakeLLMServer

from .support import postgres_database, ratio_line, sqlite_database, timed

N = 10_000
DUPLICATES = 1_000
DIMENSIONS = 256
BATCH = 256


def make_texts() -> list[str]:
    rng = random.Random(42)
    unique = [
        f"answer {i}: the model said something about topic {i % 97}" for i in range(N - DUPLICATES)
    ]
    texts = unique + [f"  {t}  " for t in rng.sample(unique, DUPLICATES)]  # same after normalising
    rng.shuffle(texts)
    return texts


def measure(db, label: str, server: FakeLLMServer):
    texts = make_texts()
    unique = N - DUPLICATES
    server.reset()

    def service() -> EmbeddingService:
        provider = OpenAIEmbeddingProvider("bench-key", server.openai_base_url)
        return EmbeddingService(db, provider, dimensions=DIMENSIONS, max_batch_size=BATCH)

    async def cold_pass():
        async with service() as svc:
            results = await svc.get_embeddings_batch(texts)
        assert all(r.ok for r in results)

    async def warm_passes() -> tuple[float, float]:
        async with service() as svc:
            started = asyncio.get_running_loop().time()
            results = await svc.get_embeddings_batch(texts)
            from_db = asyncio.get_running_loop().time() - started
            assert all(r.cached for r in results)
            started = asyncio.get_running_loop().time()
            await svc.get_embeddings_batch(texts)
            from_lru = asyncio.get_running_loop().time() - started
        return from_db, from_lru

    def naive_lookup():
        # The same columns and decoding as the service's lookup, but one query per item.
        hasher = service()
        postgres = db.dialect == "postgresql"
        vector = func.vector_send(EmbeddingVector.vector) if postgres else EmbeddingVector.vector
        stmt = select(
            EmbeddingVector.id,
            EmbeddingVector.call_id,
            EmbeddingVector.model,
            EmbeddingVector.dimension,
            vector,
            EmbeddingVector.text,
        ).where(EmbeddingVector.request_hash == bindparam("request_hash"))
        with db.session_scope() as session:
            for t in texts:
                row = session.execute(stmt, {"request_hash": hasher._compute_request_hash(t)}).one()
                values = decode_vector_send(row[4]) if postgres else row[4]
                assert values.size == DIMENSIONS

    t_cold = timed(lambda: asyncio.run(cold_pass()))
    cold_calls = server.count("embeddings")
    t_db, t_lru = asyncio.run(warm_passes())
    warm_calls = server.count("embeddings") - cold_calls
    expected = math.ceil(unique / BATCH)
    if (cold_calls, warm_calls) != (expected, 0):
        raise AssertionError(
            f"{label}: API calls cold={cold_calls} warm={warm_calls}, expected {expected} and 0"
        )
    t_naive = timed(naive_lookup)
    yield (
        f"{label} embeddings {N:,} texts ({unique:,} unique): API calls cold {cold_calls} "
        f"(expected ceil({unique:,}/{BATCH}) = {expected}), warm {warm_calls}; "
        f"cold pass {N / t_cold:,.0f} items/s"
    )
    yield ratio_line(
        f"{label} warm pass, database cache",
        N / t_db,
        N / t_naive,
        "items/s",
        "(baseline: one query per item)",
    )
    yield ratio_line(
        f"{label} warm pass, in-process LRU",
        N / t_lru,
        N / t_naive,
        "items/s",
        "(baseline: one query per item)",
    )


def run():
    with FakeLLMServer() as server:
        with sqlite_database() as db:
            yield from measure(db, "sqlite", server)
        with postgres_database() as db:
            yield from measure(db, "postgresql", server)
