"""`EmbeddingService.similar`: the same answers on SQLite (numpy) and PostgreSQL (pgvector,
with its HNSW index created on first use), and answers that follow shared words."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import text

from study_query_dagster.db.vector_store import hnsw_index_name
from study_query_dagster.providers.embeddings import OfflineEmbeddingProvider
from study_query_dagster.services.embeddings import EmbeddingService

CORPUS = [
    "the cat sat on the mat",
    "a cat slept on the warm mat",
    "The cat sat on the mat!",  # same words as the first: an exact tie
    "dogs chase cats in the garden",
    "my dog sleeps in the garden all day",
    "stock markets fell sharply on monday",
    "the central bank raised interest rates",
    "interest rates and inflation worry markets",
    "the football team won the final match",
    "a late goal won the match for the home team",
    "bake the bread in a hot oven",
    "fresh bread and butter for breakfast",
    "quantum computers use qubits",
    "the qubits of a quantum processor are fragile",
    "rain is expected over the weekend",
    "heavy rain and wind this weekend",
]
MODEL = "offline-hash-v1"


async def _service(db, dimensions=64) -> EmbeddingService:
    svc = EmbeddingService(db, OfflineEmbeddingProvider(dimensions))
    responses = await svc.get_embeddings_batch(CORPUS)
    assert all(r.ok for r in responses)
    return svc


async def test_similar_agrees_between_sqlite_and_postgres(sqlite_db, pg_db):
    on_sqlite, on_pg = await _service(sqlite_db), await _service(pg_db)
    vectors = {t: (await on_sqlite.get_embedding(t)).vector for t in CORPUS}

    probe = np.asarray(vectors["heavy rain and wind this weekend"]) + 0.01
    a, b = await on_sqlite.similar(probe, k=6), await on_pg.similar(probe, k=6)
    assert [h.text for h in a] == [h.text for h in b]
    # ... and both agree with a brute-force cosine ranking (ties by insertion order = id).
    matrix = np.asarray([vectors[t] for t in CORPUS], dtype=np.float64)
    sims = matrix @ probe / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(probe))
    assert [h.text for h in a] == [CORPUS[i] for i in np.argsort(1 - sims, kind="stable")[:6]]

    # A text query is embedded (and stored) through the cache first.
    for query in ["cat on a mat", "interest rates", "who won the match", "the cat sat on the mat"]:
        a, b = await on_sqlite.similar(query, k=4), await on_pg.similar(query, k=4)
        assert [h.text for h in a] == [h.text for h in b], query
        assert [h.distance for h in a] == pytest.approx([h.distance for h in b], abs=1e-5)
        assert len(a) == 4

    # PostgreSQL got its HNSW index for this model and dimension on first use.
    with pg_db.engine.connect() as conn:
        names = conn.execute(text("SELECT indexname FROM pg_indexes")).scalars().all()
    assert hnsw_index_name(MODEL, 64) in names


async def test_similar_follows_shared_words_and_leaves_out_the_query_itself(db):
    svc = await _service(db, dimensions=256)
    hits = await svc.similar("the cat sat on the mat", k=3)
    # The query's own entry is left out; its tie ("The cat sat on the mat!") is not the query.
    assert [h.text for h in hits][:2] == ["The cat sat on the mat!", "a cat slept on the warm mat"]
    assert hits[0].distance == pytest.approx(0, abs=1e-6) and hits[0].similarity == pytest.approx(1)
    assert all(h.model == MODEL and h.raw_call_id and h.embedding_id for h in hits)

    hits = await svc.similar("fresh bread from the oven", k=2)
    assert {h.text for h in hits} == {
        "fresh bread and butter for breakfast",
        "bake the bread in a hot oven",
    }
    assert await svc.similar("anything", k=3, model="no-such-model") == []
    with pytest.raises(ValueError, match="`k`"):
        await svc.similar("x", k=0)
