"""What the embedding cache refuses to believe, and how long it waits (issue 12, items 3 and 7),
against the loopback fake server through the real openai SDK, on both backends.

- A vector whose length is not the requested `dimensions`, or not the length of the vectors
  already stored for that model, is a failed call (`dimension_mismatch`, captured), never a
  cache entry.
- The one retry policy: `Retry-After` replaces the backoff; a malformed 2xx body is retried once.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import func, select

from study_query_dagster.db import EmbeddingVector, RawCall, RawCallRepository, VectorStore
from study_query_dagster.providers.embeddings import OpenAIEmbeddingProvider
from study_query_dagster.services.embeddings import (
    DEFAULT_RETRY,
    EmbeddingRequest,
    EmbeddingService,
    RetryPolicy,
    compute_request_hash,
)
from tests.support.fake_llm_server import Fault, fake_embedding

KEY = "sk-embedding-fidelity"
MODEL = "text-embedding-3-small"
FAST = RetryPolicy(max_retries=5, initial_wait=0.01, max_wait=0.05)


def service(db, llm_server, **kwargs) -> EmbeddingService:
    provider = OpenAIEmbeddingProvider(KEY, llm_server.openai_base_url, timeout=10)
    return EmbeddingService(db, provider, **{"retry": FAST, **kwargs})


def calls(db) -> list[RawCall]:
    with db.session_scope() as session:
        return list(session.scalars(select(RawCall).order_by(RawCall.id)))


def vector_count(db) -> int:
    with db.session_scope() as session:
        return session.scalar(select(func.count()).select_from(EmbeddingVector))


# --- dimension mismatch ---------------------------------------------------------------------


async def test_a_server_that_ignores_dimensions_gives_failed_calls_not_cache_entries(
    db, llm_server
):
    llm_server.ignore_dimensions = True  # answers 16 components whatever is asked
    texts = [f"answer {i}" for i in range(5)]
    async with service(db, llm_server, dimensions=8, max_batch_size=2) as svc:
        results = await svc.get_embeddings_batch(texts)
        # The first call of a size goes alone: once it shows the mismatch, the rest stay unsent.
        assert llm_server.count("embeddings") == 1
        assert [r.error.kind for r in results] == ["dimension_mismatch"] * 5
        assert "16-dimension vectors but 8 were asked for" in results[0].error.message
        again = await svc.get_embeddings_batch(["answer 0", "another"])
        assert [r.error.kind for r in again] == ["dimension_mismatch"] * 2
        assert llm_server.count("embeddings") == 1  # remembered for the service's life

    [call] = calls(db)
    assert call.status == "failed" and call.modality == "embedding"
    assert call.error_json["type"] == "dimension_mismatch"
    assert call.error_json["retryable"] is False
    assert call.response_json["dimension"] == 16 and call.response_json["count"] == 2
    assert call.request_json["dimensions"] == 8
    assert results[0].error.raw_call_id == results[1].error.raw_call_id == call.id
    assert results[2].error.raw_call_id is None  # never sent
    assert vector_count(db) == 0  # nothing cached under the 8-dimension key

    # A failure is not remembered across services: once the server honours `dimensions`,
    # the same texts are embedded at the size asked for.
    llm_server.ignore_dimensions = False
    async with service(db, llm_server, dimensions=8) as svc:
        fixed = await svc.get_embeddings_batch(texts)
    assert all(r.ok and r.dimension == 8 and not r.cached for r in fixed)
    assert vector_count(db) == 5


async def test_a_vector_of_another_length_than_the_models_stored_ones_is_not_cached(db, llm_server):
    async with service(db, llm_server) as svc:  # no `dimensions`: the model's own size
        first = await svc.get_embedding("stored at the model's size")
    assert first.dimension == 16

    # The server now answers 24 components for the same model (e.g. it was swapped).
    llm_server.embedding_fn = lambda request, text, dims: fake_embedding(text, 24)
    async with service(db, llm_server) as svc:
        [other] = await svc.get_embeddings_batch(["a new text"])
        [hit] = await svc.get_embeddings_batch(["stored at the model's size"])
        # Asking for a size explicitly is another key: it is checked against that size only.
        [sized] = await svc.get_embeddings_batch([EmbeddingRequest("sized", dimensions=24)])
    assert other.error.kind == "dimension_mismatch"
    assert "24-dimension vectors but its vectors stored before have 16" in other.error.message
    assert hit.ok and hit.cached and hit.dimension == 16
    assert sized.ok and sized.dimension == 24
    statuses = [(c.status, (c.error_json or {}).get("type")) for c in calls(db)]
    assert statuses == [("success", None), ("failed", "dimension_mismatch"), ("success", None)]
    with db.session_scope() as session:
        stored = dict(
            session.execute(select(EmbeddingVector.text, EmbeddingVector.dimension)).all()
        )
    assert stored == {"stored at the model's size": 16, "sized": 24}


async def test_a_mismatched_entry_stored_earlier_is_not_served(db, llm_server):
    # As a version without the check could have stored it: 16 components under an 8 key.
    text = "stored before the check"
    request_hash = compute_request_hash(text, provider="openai", model=MODEL, dimensions=8)
    with db.session_scope() as session:
        call_id = RawCallRepository(session).insert_raw_call(
            provider="openai",
            model=MODEL,
            modality="embedding",
            status="success",
            request_json={"input": [text], "model": MODEL, "dimensions": 8},
        )
        vector = np.asarray(fake_embedding(text, 16), np.float32)
        VectorStore(session).insert_embedding_vectors(
            [
                {
                    "call_id": call_id,
                    "model": MODEL,
                    "vector": vector,
                    "request_hash": request_hash,
                    "text": text,
                }
            ]
        )
    async with service(db, llm_server, dimensions=8) as svc:
        [result] = await svc.get_embeddings_batch([text])
    assert result.error.kind == "dimension_mismatch"
    assert "16 dimensions but 8 were asked for" in result.error.message
    assert result.error.raw_call_id == call_id
    assert llm_server.count() == 0


# --- the one retry policy -------------------------------------------------------------------


async def test_retry_after_replaces_the_backoff(db, llm_server):
    # The default policy would back off 1 s, then 2 s; the server asks for 0.05 s each time.
    llm_server.script(*[Fault(status=429, retry_after=0.05)] * 2, match="embeddings")
    async with service(db, llm_server, retry=DEFAULT_RETRY) as svc:
        response = await svc.get_embedding("rate limited")
    assert response.ok
    [call] = calls(db)
    assert call.metadata_json["attempts"] == 3
    retried = call.metadata_json["retried_errors"]
    assert [(e["type"], e["wait_s"]) for e in retried] == [("rate_limit", 0.05)] * 2


async def test_a_malformed_body_is_retried_once_then_captured(db, llm_server):
    llm_server.script(*[Fault(kind="malformed")] * 6, match="embeddings")
    async with service(db, llm_server) as svc:  # up to 6 attempts for other errors
        [result] = await svc.get_embeddings_batch(["deterministically broken"])
    assert llm_server.count("embeddings") == 2
    assert result.error.kind == "provider_error"
    assert result.error.provider_error.error_type == "malformed_response"
    [call] = calls(db)
    assert call.status == "failed" and call.metadata_json["attempts"] == 2
    assert call.error_json["type"] == "malformed_response"
    assert vector_count(db) == 0
