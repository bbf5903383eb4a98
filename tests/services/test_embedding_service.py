"""EmbeddingService on both backends (the `db` fixture) against the loopback fake server,
through the real openai SDK: the plan's Step 7.5 checklist and then some."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading

import numpy as np
import psycopg2.extensions
import pytest
from sqlalchemy import event, func, select, text

from study_query_dagster.db import DatabaseConnection, EmbeddingVector, GroupRepository, RawCall
from study_query_dagster.providers.base import ProviderError
from study_query_dagster.providers.embeddings import (
    AzureEmbeddingProvider,
    OfflineEmbeddingProvider,
    OpenAIEmbeddingProvider,
)
from study_query_dagster.services.embeddings import (
    DEFAULT_RETRY,
    EmbeddingError,
    EmbeddingRequest,
    EmbeddingService,
    RetryPolicy,
    canonical_json,
    compute_request_hash,
    normalize_text,
)
from tests.support.fake_llm_server import Fault, fake_embedding

KEY = "sk-embedding-service-secret-42"
MODEL = "text-embedding-3-small"
# Small waits where the wait itself is not what a test is about.
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


def sent_inputs(llm_server) -> list[list[str]]:
    return [r.body["input"] for r in llm_server.requests if r.kind == "embeddings"]


# --- request identity -----------------------------------------------------------------------


def test_request_hash_is_sha256_of_canonical_json():
    expected = hashlib.sha256(
        json.dumps(
            {
                "key_version": 1,
                "provider": "openai",
                "model": MODEL,
                "normalized_text": "hello world",
                "dimensions": 256,
                "encoding_format": "float",
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
    ).hexdigest()
    got = compute_request_hash(
        "hello world", provider="openai", model=MODEL, dimensions=256, encoding_format="float"
    )
    assert got == expected
    # Key order of the call never matters: canonical JSON sorts keys.
    assert canonical_json({"b": 1, "a": {"d": 2, "c": 3}}) == canonical_json(
        {"a": {"c": 3, "d": 2}, "b": 1}
    )


def test_same_input_same_hash_and_variants_normalise_to_it():
    def h(text, **kw):
        args = {
            "provider": "openai",
            "model": MODEL,
            "dimensions": None,
            "encoding_format": "float",
            **kw,
        }
        return compute_request_hash(text, **args)

    reference = h("café au lait")
    assert h("café au lait") == reference
    for variant in (
        "  café   au\tlait\n",
        "café\u00a0au lait",
        "caf\u00e9 au\x00 lait",
        "cafe\u0301 au lait",
        "\x00café au lait\x00",
    ):
        assert h(variant) == reference, repr(variant)
    assert normalize_text("cafe\u0301  au\n\tlait\x00") == "café au lait"
    # Anything that changes the answer changes the hash.
    assert h("café au lait", dimensions=256) != reference
    assert h("café au lait", dimensions=256) != h("café au lait", dimensions=512)
    assert h("café au lait", model="text-embedding-3-large") != reference
    assert h("café au lait", provider="azure") != reference
    assert h("café au lait", encoding_format="base64") != reference
    assert h("Café au lait") != reference  # case is content


# --- cache ----------------------------------------------------------------------------------


async def test_cache_hit_returns_the_stored_vector_without_a_provider_call(db, llm_server):
    async with service(db, llm_server) as first:
        fresh = await first.get_embedding("What is the capital of France?")
    assert fresh.cached is False and llm_server.count("embeddings") == 1

    async with service(db, llm_server) as second:  # new process-like service: empty LRU
        hit = await second.get_embedding("  What is the capital of  France?\x00 ")
        again = await second.get_embedding("What is the capital of France?")  # from the LRU
    assert llm_server.count("embeddings") == 1
    assert hit.cached and again.cached
    assert hit.vector == fresh.vector == again.vector
    assert (hit.embedding_id, hit.raw_call_id, hit.request_hash) == (
        fresh.embedding_id,
        fresh.raw_call_id,
        fresh.request_hash,
    )
    assert second.stats["db_hits"] == 1 and second.stats["lru_hits"] == 1
    with db.session_scope() as session:
        stored = session.get(EmbeddingVector, fresh.embedding_id)
        assert stored.vector.tolist() == fresh.vector
        assert stored.request_hash == fresh.request_hash
        assert stored.text == "What is the capital of France?"
    np.testing.assert_allclose(fresh.vector, fake_embedding(fresh.text, 16), rtol=1e-6)


def traced_connection(db: DatabaseConnection) -> tuple[DatabaseConnection, list[str]]:
    """Another connection to `db`'s database whose driver reports each statement it runs:
    sqlite3's trace callback, or a psycopg2 cursor class (COPY goes past SQLAlchemy's events)."""
    statements: list[str] = []
    if db.dialect == "sqlite":
        traced = DatabaseConnection(db.url)
        event.listen(
            traced.engine, "connect", lambda conn, _: conn.set_trace_callback(statements.append)
        )
        return traced, statements

    class TracedCursor(psycopg2.extensions.cursor):
        def execute(self, query, vars=None):
            statements.append(str(query))
            return super().execute(query, vars)

        def copy_expert(self, sql, file, size=8192):
            statements.append(str(sql))
            return super().copy_expert(sql, file, size)

    return DatabaseConnection(db.url, connect_args={"cursor_factory": TracedCursor}), statements


async def test_a_batch_is_looked_up_with_one_query_per_chunk(db, llm_server):
    texts = [f"answer number {i}" for i in range(2500)]
    async with EmbeddingService(db, OfflineEmbeddingProvider(16)) as warmup:
        stored = await warmup.get_embeddings_batch(texts)

    traced, statements = traced_connection(db)
    try:
        async with EmbeddingService(traced, OfflineEmbeddingProvider(16)) as cold_lru:
            responses = await cold_lru.get_embeddings_batch(texts)
    finally:
        traced.dispose()
    assert all(r.cached for r in responses)
    assert [(r.embedding_id, r.raw_call_id, r.vector) for r in responses] == [
        (r.embedding_id, r.raw_call_id, r.vector) for r in stored
    ]
    lookups = [s for s in statements if "embedding_vectors" in s.lower()]
    assert len(lookups) == 3, lookups  # ceil(2500 / 1000), not 2500


async def test_mixed_batch_gives_each_item_its_result_with_the_expected_calls(db, llm_server):
    async with service(db, llm_server, max_batch_size=2) as svc:
        await svc.get_embeddings_batch(["cached one", "cached two"])
        assert llm_server.count("embeddings") == 1
        llm_server.requests.clear()

        items = [
            "cached one",  # 0 hit
            "new alpha",  # 1 miss
            "new beta",  # 2 miss
            "  new   alpha ",  # 3 duplicate of 1 (normalises to it)
            "cached two",  # 4 hit
            " \x00 \t ",  # 5 empty after normalisation: error, no call
            "new gamma",  # 6 miss
            "new beta",  # 7 exact duplicate of 2
            EmbeddingRequest("new delta", dimensions=0),  # 8 bad item
        ]
        results = await svc.get_embeddings_batch(items)

    # 3 unique misses in calls of at most 2 inputs: exactly 2 API calls, no duplicate sent.
    assert sorted(sent_inputs(llm_server)) == [["new alpha", "new beta"], ["new gamma"]]
    assert [r.ok for r in results] == [True, True, True, True, True, False, True, True, False]
    assert [r.cached for r in results] == [
        True,
        False,
        False,
        False,
        True,
        False,
        False,
        False,
        False,
    ]
    assert results[5].error.kind == "invalid_input" and "empty" in results[5].error.message
    assert results[8].error.kind == "invalid_input" and "dimensions" in results[8].error.message
    assert (
        results[3].vector == results[1].vector
        and results[3].request_hash == results[1].request_hash
    )
    assert results[7].embedding_id == results[2].embedding_id
    assert results[1].raw_call_id == results[2].raw_call_id != results[6].raw_call_id
    for r in results:
        if r.ok:
            np.testing.assert_allclose(r.vector, fake_embedding(r.text, 16), rtol=1e-6)
    assert vector_count(db) == 5


# --- deployments ----------------------------------------------------------------------------


async def test_an_invalid_deployment_is_skipped_and_logged_once(db, llm_server, caplog):
    caplog.set_level(logging.INFO, logger="study_query_dagster")
    llm_server.unknown_models = {"gone-deploy", "also-gone"}

    def warnings() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING and "gone-deploy" in r.getMessage()
        ]

    async with service(db, llm_server, max_batch_size=1) as svc:
        batch = [EmbeddingRequest(f"text {i}", model="gone-deploy") for i in range(3)]
        batch += ["good one", "good two"]
        results = await svc.get_embeddings_batch(batch)
        # One probe call to the missing deployment; its other two chunks are never sent.
        assert llm_server.count("embeddings") == 1 + 2
        assert [r.ok for r in results] == [False, False, False, True, True]
        assert {r.error.kind for r in results[:3]} == {"invalid_deployment"}
        assert "gone-deploy" in results[0].error.message
        assert results[0].error.provider_error.status_code == 404
        assert len(warnings()) == 1

        again = await svc.get_embeddings_batch([EmbeddingRequest("text 9", model="gone-deploy")])
        assert again[0].error.kind == "invalid_deployment"
        assert llm_server.count("embeddings") == 3  # remembered: no new call
        assert len(warnings()) == 1  # and not logged again

        valid = await svc.filter_valid_deployments([MODEL, "gone-deploy", "also-gone", MODEL])
        assert valid == [MODEL]
        assert llm_server.count("embeddings") == 4  # only "also-gone" was unknown
        assert await svc.filter_valid_deployments([MODEL, "also-gone"]) == [MODEL]
        assert llm_server.count("embeddings") == 4

    async with service(db, llm_server) as other:
        assert await other.filter_valid_deployments(["fresh-model"]) == ["fresh-model"]
    probes = [c for c in calls(db) if (c.metadata_json or {}).get("purpose") == "probe"]
    assert [(c.model, c.status) for c in probes] == [
        ("also-gone", "failed"),
        ("fresh-model", "success"),
    ]
    failed = [c for c in calls(db) if c.model == "gone-deploy"]
    assert [(c.status, c.error_json["status_code"]) for c in failed] == [("failed", 404)]
    assert vector_count(db) == 2  # probes are captured, not cached


# --- retries and failures -------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [Fault(status=502), Fault(status=429, retry_after=0.3), Fault(kind="drop")],
    ids=["502", "429", "connection"],
)
async def test_retry_resolves_transient_errors(db, llm_server, fault):
    llm_server.script(fault, fault, match="embeddings")
    async with service(db, llm_server) as svc:
        response = await svc.get_embedding("flaky network")
    assert response.ok and not response.cached
    assert llm_server.count("embeddings") == 3
    [call] = calls(db)  # one logical call, one row
    assert call.status == "success"
    assert call.metadata_json["attempts"] == 3
    expected = {502: "server_error", 429: "rate_limit"}.get(fault.status, "connection")
    if fault.kind == "drop":
        expected = "connection_closed"  # the server closed it without answering
    retried = call.metadata_json["retried_errors"]
    assert [e["type"] for e in retried] == [expected, expected]
    if fault.retry_after:  # Retry-After honoured, twice
        assert [e["wait_s"] for e in retried] == [fault.retry_after] * 2


async def test_gives_up_after_six_attempts_and_captures_the_failure(db, llm_server):
    llm_server.script(*[Fault(status=503)] * 10, match="embeddings")
    async with service(db, llm_server) as svc:
        [result] = await svc.get_embeddings_batch(["never works"])
    assert llm_server.count("embeddings") == 6
    assert result.error.kind == "provider_error"
    assert result.error.provider_error.retryable
    [call] = calls(db)
    assert call.id == result.error.raw_call_id
    assert call.status == "failed" and call.metadata_json["attempts"] == 6
    assert call.error_json["type"] == "server_error" and call.error_json["status_code"] == 503
    assert vector_count(db) == 0


async def test_non_retryable_errors_are_persisted_as_failed_calls(db, llm_server):
    llm_server.script(Fault(status=400), match="embeddings")
    async with service(db, llm_server, max_batch_size=2) as svc:
        results = await svc.get_embeddings_batch(["bad a", "bad b", "fine c"])
    assert llm_server.count("embeddings") == 2  # no retry for a 400
    assert [r.ok for r in results] == [False, False, True]
    failed, ok = calls(db)
    assert results[0].error.raw_call_id == results[1].error.raw_call_id == failed.id
    assert failed.status == "failed" and failed.modality == "embedding"
    assert failed.error_json["type"] == "bad_request" and failed.error_json["status_code"] == 400
    assert failed.error_json["retryable"] is False
    assert failed.request_json == {
        "input": ["bad a", "bad b"],
        "model": MODEL,
        "dimensions": None,
        "encoding_format": "float",
    }
    assert failed.metadata_json["request_hashes"] == [r.request_hash for r in results[:2]]
    assert ok.status == "success"
    # A failure is not cached: the next batch tries again.
    async with service(db, llm_server) as svc:
        assert (await svc.get_embedding("bad a")).ok


async def test_a_timeout_is_captured_with_status_timeout(db, llm_server):
    llm_server.script(Fault(kind="hang", hang_s=None), match="embeddings")  # never answers
    provider = OpenAIEmbeddingProvider(KEY, llm_server.openai_base_url, timeout=0.3)
    async with EmbeddingService(db, provider, retry=RetryPolicy(max_retries=0)) as svc:
        [result] = await svc.get_embeddings_batch(["slow"])
    assert result.error.provider_error.error_type == "timeout"
    [call] = calls(db)
    assert call.status == "timeout" and call.error_json["type"] == "timeout"


def test_default_retry_policy_is_the_shared_one_with_six_attempts_of_1_to_30_seconds():
    policy = EmbeddingService(None, OfflineEmbeddingProvider(8)).retry
    assert policy is DEFAULT_RETRY and isinstance(policy, RetryPolicy)
    assert policy.max_attempts == 6
    error = ProviderError("busy", "openai", 502, retryable=True, error_type="server_error")
    for attempt, low in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (6, 30), (9, 30)]:
        waits = [policy.wait(error, attempt) for _ in range(50)]
        assert min(waits) >= low and max(waits) <= min(low + 1, 30)
        if low < 30:
            assert max(waits) > min(waits)  # jitter
    # Retry-After replaces the backoff, capped.
    limited = ProviderError("slow down", "openai", 429, retryable=True, retry_after=12)
    assert policy.wait(limited, 5) == 12
    flooded = ProviderError("slow down", "openai", 429, retryable=True, retry_after=3600)
    assert policy.wait(flooded, 1) == 60


async def test_transient_database_errors_are_retried(pg_db, llm_server, caplog):
    caplog.set_level(logging.WARNING, logger="study_query_dagster")
    # A short lock_timeout turns a held table lock into an OperationalError at once.
    impatient = DatabaseConnection(pg_db.url, connect_args={"options": "-c lock_timeout=100"})
    locked, retrying, released = threading.Event(), threading.Event(), threading.Event()

    class ReleaseOnRetry(logging.Handler):
        """The service logs the failed step before it waits: the test lets go of the lock
        then, and the retry waits for that, so it cannot arrive before the lock is gone."""

        def emit(self, record):
            if "database step failed" in record.getMessage():
                retrying.set()
                released.wait()

    def hold_lock():
        with pg_db.engine.begin() as conn:
            conn.execute(text("LOCK TABLE embedding_vectors IN ACCESS EXCLUSIVE MODE"))
            locked.set()
            retrying.wait()
        released.set()

    handler = ReleaseOnRetry()
    logging.getLogger("study_query_dagster").addHandler(handler)
    holder = threading.Thread(target=hold_lock)
    holder.start()
    locked.wait()
    try:
        async with service(impatient, llm_server) as svc:
            response = await svc.get_embedding("while the table is locked")
    finally:
        retrying.set()  # never leave the holder waiting, whatever happened
        holder.join()
        logging.getLogger("study_query_dagster").removeHandler(handler)
        impatient.dispose()
    assert response.ok
    failures = [r for r in caplog.records if "database step failed" in r.getMessage()]
    assert len(failures) == 1  # the first attempt met the lock; the retry did not
    assert vector_count(pg_db) == 1


# --- token limits ---------------------------------------------------------------------------


async def test_over_long_inputs_fail_per_item_or_are_truncated_when_asked(db, llm_server):
    async with service(db, llm_server, token_limits={MODEL: 20}) as svc:
        results = await svc.get_embeddings_batch(["short text", "x" * 21, "é" * 15])
        assert [r.ok for r in results] == [True, False, False]
        assert results[1].error.kind == "too_long"
        assert (
            "20-token limit" in results[1].error.message
            and "truncate=True" in results[1].error.message
        )
        assert sent_inputs(llm_server) == [["short text"]]

        cut = await svc.get_embeddings_batch(["y" * 40, "é" * 15], truncate=True)
    assert [r.ok for r in cut] == [True, True]
    assert cut[0].truncated and cut[0].text == "y" * 20
    assert cut[1].text == "é" * 10  # 20 UTF-8 bytes: cut on a character boundary
    assert sent_inputs(llm_server)[1] == ["y" * 20, "é" * 10]
    # The hash is the hash of what was sent.
    assert cut[0].request_hash == svc._compute_request_hash("y" * 20)


async def test_openai_models_default_to_the_8191_token_limit(db, llm_server):
    async with service(db, llm_server) as svc:
        [long] = await svc.get_embeddings_batch(["word " * 2000])  # 9,999 bytes
    assert long.error.kind == "too_long" and "8191" in long.error.message
    assert llm_server.count() == 0


# --- provenance, capture, secrets -----------------------------------------------------------


async def test_calls_are_captured_with_provenance_and_never_the_key(db, llm_server, caplog):
    caplog.set_level(logging.DEBUG)
    with db.session_scope() as session:
        group_id = GroupRepository(session).create_group("experiment", "embeddings-e1")
    meta = {"seed": 7, "versions": {"numpy": np.__version__}}
    async with service(db, llm_server, group_id=group_id, metadata=meta, dimensions=8) as svc:
        results = await svc.get_embeddings_batch(
            ["first answer", "second answer"], metadata={"run": "r1"}
        )
    [call] = calls(db)
    assert call.modality == "embedding" and call.provider == "openai" and call.model == MODEL
    assert call.request_json == {
        "input": ["first answer", "second answer"],
        "model": MODEL,
        "dimensions": 8,
        "encoding_format": "float",
    }
    assert call.response_json["count"] == 2 and call.response_json["dimension"] == 8
    assert call.tokens_json == {"prompt_tokens": 4, "total_tokens": 4}
    assert call.latency_ms > 0
    assert call.metadata_json["group_id"] == group_id
    assert call.metadata_json["caller"] == {
        "seed": 7,
        "versions": {"numpy": np.__version__},
        "run": "r1",
    }
    assert call.metadata_json["request_hashes"] == [r.request_hash for r in results]
    with db.session_scope() as session:
        members = GroupRepository(session).get_group_members(group_id)
        assert [m.call_id for m in members] == [call.id]
        dump = json.dumps([c.to_dict() for c in session.scalars(select(RawCall))], default=str)
    assert KEY not in dump
    assert KEY not in caplog.text


async def test_bad_call_arguments_raise_before_any_call(db, llm_server):
    with pytest.raises(ValueError, match="dimensions"):
        service(db, llm_server, dimensions=0)
    with pytest.raises(ValueError, match="encoding_format"):
        service(db, llm_server, encoding_format="int8")
    with pytest.raises(ValueError, match="max_batch_size"):
        service(db, llm_server, max_batch_size=5000)
    with pytest.raises(ValueError, match="metadata"):
        service(db, llm_server, metadata={"when": object()})
    with pytest.raises(ValueError, match="deployment name"):
        EmbeddingService(db, AzureEmbeddingProvider(KEY, llm_server.url, "2024-10-21"))
    async with service(db, llm_server) as svc:
        with pytest.raises(ValueError, match="list of texts"):
            await svc.get_embeddings_batch("not a list")
        with pytest.raises(ValueError, match="group_id 999 does not exist"):
            await svc.get_embeddings_batch(["x"], group_id=999)
        with pytest.raises(EmbeddingError, match="empty after normalisation"):
            await svc.get_embedding("   ")
    assert llm_server.count() == 0
    assert calls(db) == []


async def test_concurrent_batches_on_one_service_agree_on_one_entry_per_text(db, llm_server):
    llm_server.latency_s = 0.05
    texts = [f"shared {i}" for i in range(40)]
    async with service(db, llm_server, max_batch_size=8, concurrency=3) as svc:
        first, second = await asyncio.gather(
            svc.get_embeddings_batch(texts), svc.get_embeddings_batch(texts[::-1])
        )
    assert all(r.ok for r in first + second)
    by_hash = {r.request_hash: r.embedding_id for r in first}
    assert all(by_hash[r.request_hash] == r.embedding_id for r in second)
    assert vector_count(db) == 40


async def test_calls_respect_the_per_call_token_budget(db, llm_server):
    texts = [f"ten bytes{i}" for i in range(5)]  # 10 UTF-8 bytes each
    async with service(db, llm_server, max_tokens_per_call=30) as svc:
        results = await svc.get_embeddings_batch([*texts, EmbeddingRequest("x", model=5)])
    assert sent_inputs(llm_server) == [texts[:3], texts[3:]]
    assert [r.ok for r in results] == [True] * 5 + [False]
    assert results[5].error.kind == "invalid_input" and "`model`" in results[5].error.message


async def test_azure_deployments_through_the_service(db, llm_server):
    llm_server.unknown_models = {"deleted-deploy"}

    def azure(**kwargs) -> EmbeddingService:
        provider = AzureEmbeddingProvider(KEY, llm_server.url, "2024-10-21")
        return EmbeddingService(db, provider, model="embed-deploy", retry=FAST, **kwargs)

    async with azure() as svc:
        results = await svc.get_embeddings_batch(
            ["azure text", EmbeddingRequest("azure text", model="deleted-deploy")]
        )
        assert await svc.filter_valid_deployments(["embed-deploy", "deleted-deploy"]) == [
            "embed-deploy"
        ]
    assert results[0].ok and results[1].error.kind == "invalid_deployment"
    assert sorted(r.path for r in llm_server.requests) == [
        "/openai/deployments/deleted-deploy/embeddings",
        "/openai/deployments/embed-deploy/embeddings",
    ]
    async with azure() as svc:
        assert (await svc.get_embedding("azure text")).cached
    # The same text and model name under another provider is another cache entry.
    async with service(db, llm_server, model="embed-deploy") as svc:
        other = await svc.get_embedding("azure text")
    assert not other.cached and other.request_hash != results[0].request_hash
    assert {c.provider for c in calls(db)} == {"azure", "openai"}


async def test_an_unusable_database_gives_per_item_errors_and_no_api_call(empty_db_url, llm_server):
    unmigrated = DatabaseConnection(empty_db_url)  # no tables: every query fails
    try:
        async with service(unmigrated, llm_server) as svc:
            results = await svc.get_embeddings_batch(["one", "two", ""])
    finally:
        unmigrated.dispose()
    assert [r.error.kind for r in results] == ["storage_error", "storage_error", "invalid_input"]
    assert "cache lookup failed" in results[0].error.message
    assert llm_server.count() == 0


async def test_the_lru_is_bounded_and_falls_back_to_the_database(db, llm_server):
    async with service(db, llm_server, cache_size=2) as svc:
        await svc.get_embeddings_batch(["a1", "a2", "a3"])
        assert len(svc.cache.lru) == 2
        again = await svc.get_embeddings_batch(["a1", "a2", "a3"])
    assert all(r.cached for r in again)
    assert svc.stats["lru_hits"] + svc.stats["db_hits"] == 3 and svc.stats["db_hits"] >= 1
    assert llm_server.count("embeddings") == 1
    with pytest.raises(ValueError, match="read-only"):
        again[0].array[0] = 1.0  # responses share the cached array: it cannot be corrupted
