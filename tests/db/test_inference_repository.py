"""The v1 repository reads a v1 database (SQLite and PostgreSQL) made by plain SQL in the
original layout."""

from datetime import datetime, timezone

import pytest

from study_query_dagster.db import DatabaseConnection, InferenceRepository
from tests.support.legacy import create_v1_postgres, create_v1_sqlite

ROWS = [
    {"prompt": "What is AI?", "response": "A field.", "provider": "azure", "tokens": 10,
     "latency_ms": 100.0, "metadata": {"temperature": 0.7}, "batch_id": "b-1",
     "created_at": "2024-05-01 10:00:00"},
    {"prompt": "Explain ML", "response": "Learning.", "provider": "azure", "tokens": 30,
     "latency_ms": 300.0, "metadata": None, "batch_id": "b-1", "created_at": "2024-05-01 10:00:05"},
    {"prompt": "Naïve café prompt ☕", "response": "ok", "provider": "openai", "tokens": None,
     "latency_ms": None, "metadata": None, "batch_id": None, "created_at": "2024-05-02 08:30:00"},
    # created_at left to the column default (CURRENT_TIMESTAMP)
    {"prompt": "default time", "response": "r", "provider": "hyperbolic"},
]  # fmt: skip


@pytest.fixture
def legacy(backend, empty_db_url, tmp_path):
    if backend == "sqlite":
        url = f"sqlite:///{create_v1_sqlite(tmp_path / 'v1.db', ROWS)}"
    else:
        create_v1_postgres(empty_db_url, ROWS)
        url = empty_db_url
    db = DatabaseConnection(url)
    yield db
    db.dispose()


def test_reads_rows_including_nulls(legacy):
    with legacy.session_scope() as session:
        repo = InferenceRepository(session)
        first = repo.get_inference_by_id(1)
        assert first.metadata_json == {"temperature": 0.7}
        assert first.created_at == datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
        third = repo.get_inference_by_id(3)
        assert (third.tokens, third.latency_ms, third.metadata_json, third.batch_id) == (
            None, None, None, None,
        )  # fmt: skip
        assert third.prompt == "Naïve café prompt ☕"
        assert repo.get_inference_by_id(4).created_at.tzinfo is not None
        assert repo.get_total_count() == 4
        assert repo.get_inference_by_id(99) is None


def test_queries_stats_search_and_batches(legacy):
    with legacy.session_scope() as session:
        repo = InferenceRepository(session)
        assert [r.id for r in repo.query_inferences(provider="azure")] == [2, 1]
        window = (datetime(2024, 5, 1, 10, 0, 1, tzinfo=timezone.utc),
                  datetime(2024, 5, 2, 23, 0, tzinfo=timezone.utc))  # fmt: skip
        assert [r.id for r in repo.query_inferences(date_range=window)] == [3, 2]
        assert [r.id for r in repo.query_inferences(limit=1, offset=1)][0] in {1, 2, 3}

        stats = {s["provider"]: s for s in repo.get_provider_stats()}
        assert stats["azure"] == {"provider": "azure", "count": 2, "avg_tokens": 20.0,
                                  "avg_latency_ms": 200.0, "total_tokens": 40}  # fmt: skip
        assert stats["openai"]["avg_tokens"] is None and stats["openai"]["total_tokens"] == 0

        assert [r.id for r in repo.search_by_prompt("café")] == [3]
        assert [r.id for r in repo.search_by_prompt("WHAT IS")] == [1]
        assert [r.id for r in repo.search_by_prompt("explain")] == [2]
        assert [r.id for r in repo.get_inferences_by_batch_id("b-1")] == [1, 2]
        summary = repo.get_batch_summary("b-1")
        assert summary["count"] == 2 and summary["total_tokens"] == 40
        assert summary["providers"] == ["azure"]
        assert summary["first_created_at"] == datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
        assert repo.get_batch_summary("nope") is None


def test_writes_through_the_original_api(empty_db_url):
    db = DatabaseConnection(empty_db_url)
    db.create_v1_schema()
    with db.session_scope() as session:
        repo = InferenceRepository(session)
        first = repo.insert_inference_run("p", "r", "azure", tokens=5, metadata={"k": 1})
        ids = repo.batch_insert_inferences(
            [
                {"prompt": f"p{i}", "response": "r", "provider": "openai", "batch_id": "b"}
                for i in range(3)
            ]
        )
    assert ids == [first + 1, first + 2, first + 3]
    with pytest.raises(ValueError, match="row 0: field 'prompt' is required"):
        with db.session_scope() as session:
            InferenceRepository(session).batch_insert_inferences(
                [{"response": "r", "provider": "x"}]
            )
    with db.session_scope() as session:
        assert InferenceRepository(session).get_total_count() == 4
    db.dispose()
