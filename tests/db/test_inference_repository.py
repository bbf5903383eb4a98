"""The v1 API: `InferenceRepository` reads a v1 database (SQLite and PostgreSQL) made by plain
SQL in the original layout, and `study_query_dagster.db.v1` behaves as the original tool's
database layer did (its connection, repository, batch and model behaviours, restated here), on
an in-memory SQLite database as the original's tests used, a SQLite file and PostgreSQL."""

import hashlib
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, text

from study_query_dagster.db import DatabaseConnection, InferenceRepository
from study_query_dagster.db.v1 import DatabaseConnection as V1Connection
from study_query_dagster.db.v1 import InferenceRun
from tests.support.legacy import create_v1_postgres, create_v1_sqlite

ROWS = [
    {
        "prompt": "What is AI?",
        "response": "A field.",
        "provider": "azure",
        "tokens": 10,
        "latency_ms": 100.0,
        "metadata": {"temperature": 0.7},
        "batch_id": "b-1",
        "created_at": "2024-05-01 10:00:00",
    },
    {
        "prompt": "Explain ML",
        "response": "Learning.",
        "provider": "azure",
        "tokens": 30,
        "latency_ms": 300.0,
        "metadata": None,
        "batch_id": "b-1",
        "created_at": "2024-05-01 10:00:05",
    },
    {
        "prompt": "Naïve café prompt ☕",
        "response": "ok",
        "provider": "openai",
        "tokens": None,
        "latency_ms": None,
        "metadata": None,
        "batch_id": None,
        "created_at": "2024-05-02 08:30:00",
    },
    # created_at left to the column default (CURRENT_TIMESTAMP)
    {"prompt": "default time", "response": "r", "provider": "hyperbolic"},
]


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
            None,
            None,
            None,
            None,
        )
        assert third.prompt == "Naïve café prompt ☕"
        assert repo.get_inference_by_id(4).created_at.tzinfo is not None
        assert repo.get_total_count() == 4
        assert repo.get_inference_by_id(99) is None


def test_queries_stats_search_and_batches(legacy):
    with legacy.session_scope() as session:
        repo = InferenceRepository(session)
        assert [r.id for r in repo.query_inferences(provider="azure")] == [2, 1]
        window = (
            datetime(2024, 5, 1, 10, 0, 1, tzinfo=timezone.utc),
            datetime(2024, 5, 2, 23, 0, tzinfo=timezone.utc),
        )
        assert [r.id for r in repo.query_inferences(date_range=window)] == [3, 2]
        assert [r.id for r in repo.query_inferences(limit=1, offset=1)][0] in {1, 2, 3}

        stats = {s["provider"]: s for s in repo.get_provider_stats()}
        assert stats["azure"] == {
            "provider": "azure",
            "count": 2,
            "avg_tokens": 20.0,
            "avg_latency_ms": 200.0,
            "total_tokens": 40,
        }
        assert stats["openai"]["avg_tokens"] is None and stats["openai"]["total_tokens"] == 0

        assert [r.id for r in repo.search_by_prompt("café")] == [3]
        assert [r.id for r in repo.search_by_prompt("WHAT IS")] == [1]
        assert [r.id for r in repo.search_by_prompt("explain")] == [2]
        assert [r.id for r in repo.get_inferences_by_batch_id("b-1")] == [2, 1]  # newest first
        summary = repo.get_batch_summary("b-1")
        assert summary["count"] == summary["total_runs"] == 2 and summary["total_tokens"] == 40
        assert summary["providers"] == ["azure"]
        assert summary["first_created_at"] == datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
        assert summary["created_at_range"] == (
            datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc),
            datetime(2024, 5, 1, 10, 0, 5, tzinfo=timezone.utc),
        )
        assert repo.get_batch_summary("nope")["total_runs"] == 0
        assert repo.get_count_by_provider("azure") == 2


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


# --- the original tool's behaviours, restated ---------------------------------------------------


@pytest.fixture(params=["sqlite-memory", "sqlite-file", "postgresql"])
def v1_db(request, tmp_path):
    """A v1 database through the v1 `DatabaseConnection`, schema created by `init_db()`."""
    if request.param == "sqlite-memory":
        url = "sqlite:///:memory:"
    elif request.param == "sqlite-file":
        url = f"sqlite:///{tmp_path / 'v1.db'}"
    else:
        server = request.getfixturevalue("pg_server")
        made = server.create_database(migrated=False)
        url = made.render_as_string(hide_password=False)
        request.addfinalizer(lambda: server.drop_database(made))
    db = V1Connection(url)
    db.init_db()
    yield db
    db.dispose()


def test_connection_creates_the_v1_schema_and_hands_out_sessions(v1_db):
    assert v1_db.engine is not None and v1_db.SessionLocal is not None
    assert inspect(v1_db.engine).get_table_names() == ["inference_runs"]  # v1 only, no v2
    v1_db.init_db()  # a second call is harmless
    with v1_db.session_scope() as session:
        assert session.query(InferenceRun).count() == 0
    session = v1_db.get_session()
    session.add(InferenceRun(prompt="Test", response="Response", provider="test"))
    session.commit()
    session.close()
    with v1_db.session_scope() as session:
        assert session.query(InferenceRun).count() == 1


def test_session_scope_rolls_back_on_error(v1_db):
    with pytest.raises(ValueError), v1_db.session_scope() as session:
        session.add(InferenceRun(prompt="Test", response="Response", provider="test"))
        raise ValueError("boom")
    with v1_db.session_scope() as session:
        assert session.query(InferenceRun).count() == 0


def test_recreate_db_empties_the_table(v1_db):
    with v1_db.session_scope() as session:
        session.add(InferenceRun(prompt="Test", response="Response", provider="test"))
    v1_db.recreate_db()
    with v1_db.session_scope() as session:
        assert session.query(InferenceRun).count() == 0
    v1_db.drop_all_tables()
    assert inspect(v1_db.engine).get_table_names() == []


def test_insert_get_and_count(v1_db):
    with v1_db.session_scope() as session:
        repo = InferenceRepository(session)
        assert repo.get_total_count() == 0
        first = repo.insert_inference_run(
            "What is 2+2?",
            "4",
            "azure_openai_gpt-4",
            tokens=10,
            latency_ms=250.5,
            metadata={"temperature": 0.7},
        )
        second = repo.insert_inference_run("Test prompt", "Test response", "test")
        assert 0 < first < second
        got = repo.get_inference_by_id(second)
        assert (got.id, got.prompt, got.response) == (second, "Test prompt", "Test response")
        assert got.metadata_json == {}  # the original stored no metadata as {}
        assert repo.get_total_count() == 2
        ids = repo.batch_insert_inferences(
            [
                {
                    "prompt": f"Prompt {i}",
                    "response": f"Response {i}",
                    "provider": "test",
                    "tokens": 10 * i,
                    "latency_ms": 100.0 * i,
                }
                for i in range(5)
            ]
        )
        assert len(ids) == 5 and ids == sorted(ids) and ids[0] > second
        assert repo.get_total_count() == 7
        assert repo.get_count_by_provider("test") == 6
        assert repo.get_count_by_provider("azure_openai_gpt-4") == 1
        assert repo.get_count_by_provider("nonexistent") == 0


def test_query_by_provider_dates_and_pages(v1_db):
    with v1_db.session_scope() as session:
        repo = InferenceRepository(session)
        for i in range(10):
            repo.insert_inference_run(f"Prompt {i}", f"Response {i}", "test")
        repo.insert_inference_run("P", "R", "azure")
        repo.insert_inference_run("P", "R", "azure")
        azure = repo.query_inferences(provider="azure")
        assert len(azure) == 2 and all(r.provider == "azure" for r in azure)
        now = datetime.now(timezone.utc)
        assert (
            len(
                repo.query_inferences(date_range=(now - timedelta(days=1), now + timedelta(days=1)))
            )
            == 12
        )
        first, second = repo.query_inferences(limit=5), repo.query_inferences(limit=5, offset=5)
        assert len(first) == len(second) == 5
        assert {r.id for r in first}.isdisjoint({r.id for r in second})


def test_provider_stats_and_search(v1_db):
    with v1_db.session_scope() as session:
        repo = InferenceRepository(session)
        repo.insert_inference_run("P1", "R1", "azure", tokens=100, latency_ms=500.0)
        repo.insert_inference_run("P2", "R2", "azure", tokens=200, latency_ms=1000.0)
        repo.insert_inference_run("P3", "R3", "openai", tokens=150, latency_ms=750.0)
        stats = {s["provider"]: s for s in repo.get_provider_stats()}
        assert len(stats) == 2
        assert (
            stats["azure"]["count"],
            stats["azure"]["avg_tokens"],
            stats["azure"]["total_tokens"],
        ) == (2, 150.0, 300)
        repo.insert_inference_run("What is Python?", "A programming language", "test")
        repo.insert_inference_run("What is Java?", "Another language", "test")
        repo.insert_inference_run("Tell me about Python", "Python is great", "test")
        found = repo.search_by_prompt("Python")
        assert len(found) == 2 and all("Python" in r.prompt for r in found)


def test_batches(v1_db):
    batch, other = str(uuid.uuid4()), str(uuid.uuid4())
    with v1_db.session_scope() as session:
        repo = InferenceRepository(session)
        run_id = repo.insert_inference_run("Test", "Response", "azure", batch_id=other)
        assert repo.get_inference_by_id(run_id).batch_id == other
        times = [datetime(2024, 1, 1, 12, 0, s, tzinfo=timezone.utc) for s in (0, 2, 1)]
        for i, (provider, tokens, latency) in enumerate(
            [("azure", 100, 500.0), ("openai", 200, 1000.0), ("azure", 150, 750.0)]
        ):
            repo.insert_inference_run(
                f"Test {i}",
                f"Response {i}",
                provider,
                batch_id=batch,
                tokens=tokens,
                latency_ms=latency,
                created_at=times[i],
            )
        repo.insert_inference_run("Other prompt", "Other response", "azure")
    with v1_db.session_scope() as session:
        repo = InferenceRepository(session)
        runs = repo.get_inferences_by_batch_id(batch)
        # the original listed a batch newest first
        assert [r.prompt for r in runs] == ["Test 1", "Test 2", "Test 0"]
        assert [r.batch_id for r in repo.get_inferences_by_batch_id(other)] == [other]
        assert repo.get_inferences_by_batch_id(str(uuid.uuid4())) == []
        summary = repo.get_batch_summary(batch)
        assert summary["batch_id"] == batch and summary["total_runs"] == 3
        assert set(summary["providers"]) == {"azure", "openai"}
        assert (summary["total_tokens"], summary["avg_tokens"]) == (450, 150.0)
        assert (
            summary["avg_latency_ms"],
            summary["min_latency_ms"],
            summary["max_latency_ms"],
        ) == (750.0, 500.0, 1000.0)
        assert summary["created_at_range"] == (times[0], times[1])


def test_batch_summary_of_an_unknown_batch_and_of_missing_values(v1_db):
    unknown = str(uuid.uuid4())
    batch = str(uuid.uuid4())
    with v1_db.session_scope() as session:
        repo = InferenceRepository(session)
        summary = repo.get_batch_summary(unknown)
        assert summary["batch_id"] == unknown
        assert (
            summary["total_runs"],
            summary["providers"],
            summary["total_tokens"],
            summary["avg_tokens"],
            summary["avg_latency_ms"],
        ) == (0, [], 0, 0.0, 0.0)
        assert (summary["min_latency_ms"], summary["max_latency_ms"]) == (None, None)
        assert summary["created_at_range"] == (None, None)
        repo.insert_inference_run("T1", "R1", "azure", batch_id=batch, tokens=100, latency_ms=500.0)
        repo.insert_inference_run("T2", "R2", "azure", batch_id=batch)
        summary = repo.get_batch_summary(batch)
        assert (
            summary["total_runs"],
            summary["total_tokens"],
            summary["avg_tokens"],
            summary["avg_latency_ms"],
        ) == (2, 100, 100.0, 500.0)


def test_model_defaults_repr_and_to_dict(v1_db):
    bare = InferenceRun(prompt="Test", response="Response", provider="test")
    assert (bare.tokens, bare.latency_ms, bare.metadata_json, bare.batch_id) == (None,) * 4
    made = datetime(2024, 1, 1, 12, 0, 0)
    run = InferenceRun(
        id=1,
        prompt="Test prompt",
        response="Test response",
        provider="azure",
        tokens=100,
        latency_ms=500.0,
        metadata_json={"key": "value"},
        batch_id="b",
        created_at=made,
    )
    assert "InferenceRun" in repr(run) and "id=1" in repr(run) and "provider=azure" in repr(run)
    assert run.to_dict() == {
        "id": 1,
        "prompt": "Test prompt",
        "response": "Test response",
        "provider": "azure",
        "tokens": 100,
        "latency_ms": 500.0,
        "metadata": {"key": "value"},
        "batch_id": "b",
        "created_at": made.isoformat(),
    }
    with v1_db.session_scope() as session:
        run_id = InferenceRepository(session).insert_inference_run("p", "r", "azure")
    with v1_db.session_scope() as session:
        stored = InferenceRepository(session).get_inference_by_id(run_id).to_dict()
    assert isinstance(stored["created_at"], str)
    assert datetime.fromisoformat(stored["created_at"]).tzinfo is not None


def test_v1_connection_leaves_an_existing_file_as_it_is(tmp_path):
    """Reading a v1 file through the v1 API neither rewrites it nor switches it to WAL."""
    path = create_v1_sqlite(tmp_path / "v1.db", ROWS)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    db = V1Connection(f"sqlite:///{path}")
    with db.session_scope() as session:
        assert InferenceRepository(session).get_total_count() == len(ROWS)
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "delete"
    db.dispose()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert not any(path.with_name(path.name + s).exists() for s in ("-wal", "-shm"))
