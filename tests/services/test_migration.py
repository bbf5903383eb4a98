"""v1 -> v2 migration: complete and exact, streamed, idempotent and incremental, read-only on
the legacy side. Targets: SQLite and PostgreSQL (the `db` fixture); sources: SQLite files and
a PostgreSQL database, all built by plain SQL."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from study_query_dagster.db import (
    DatabaseConnection,
    Group,
    GroupMember,
    MigrationLedger,
    RawCall,
    validate_raw_call,
)
from study_query_dagster.services.migration import (
    CHECKS,
    LegacySource,
    legacy_stats,
    migrate_v1_to_v2,
    opened,
    parse_v1_timestamp,
    pending_v1_rows,
    resolve_source_id,
    source_fingerprint,
    v1_row_to_raw_call,
    validate_migration,
)
from tests.support.legacy import add_v1_postgres_rows, add_v1_sqlite_rows, create_v1_sqlite

from .conftest import BASE, HUGE, V1_ROWS, v1_dataset


def v1_table(path) -> list[dict]:
    """The v1 rows as stored (ids, and created_at as SQLite keeps it), read with sqlite3."""
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute("SELECT * FROM inference_runs ORDER BY id")]
    con.close()
    return rows


def migrated(db) -> dict[int, RawCall]:
    """v1 id -> raw_call, through the ledger."""
    with db.session_scope() as session:
        pairs = session.execute(
            select(MigrationLedger.v1_id, RawCall).join(
                RawCall, RawCall.id == MigrationLedger.raw_call_id
            )
        ).all()
        return {v1_id: call for v1_id, call in pairs}


def batch_members(db, name: str) -> list[RawCall]:
    with db.session_scope() as session:
        return list(
            session.scalars(
                select(RawCall)
                .join(GroupMember, GroupMember.call_id == RawCall.id)
                .join(Group, Group.id == GroupMember.group_id)
                .where(Group.group_type == "batch", Group.name == name)
                .order_by(GroupMember.position)
            )
        )


def count(db, model) -> int:
    with db.session_scope() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_every_row_migrates_exactly(db, v1_url, v1_path):
    result = migrate_v1_to_v2(v1_url, db)
    v1 = v1_table(v1_path)
    assert len(v1) == V1_ROWS
    assert (result.migrated, result.already_migrated, result.v1_rows) == (V1_ROWS, 0, V1_ROWS)
    assert (result.first_v1_id, result.last_v1_id) == (1, V1_ROWS)
    calls = migrated(db)
    assert sorted(calls) == [r["id"] for r in v1]
    assert count(db, RawCall) == V1_ROWS

    for row in v1:
        call = calls[row["id"]]
        metadata = json.loads(row["metadata"]) if row["metadata"] is not None else None
        assert call.request_json == {"prompt": row["prompt"]}
        assert call.response_json == {"text": row["response"]}
        assert call.provider == row["provider"]
        assert (call.status, call.modality, call.error_json) == ("success", "text", None)
        assert call.tokens_json == (
            None if row["tokens"] is None else {"total_tokens": row["tokens"]}
        )
        assert call.latency_ms == row["latency_ms"]
        assert call.metadata_json == {
            "migrated_from": "v1",
            "v1_source": result.source_id,
            "v1_id": row["id"],
            "v1_batch_id": row["batch_id"],
            "v1_metadata": metadata,
        }
        expected_model = metadata.get("model") if isinstance(metadata, dict) else None
        assert call.model == expected_model
        # naive v1 text is UTC; microseconds survive
        stored = datetime.fromisoformat(row["created_at"]).replace(tzinfo=timezone.utc)
        assert call.created_at == stored

    # spot checks on the awkward rows, against the dataset itself
    by_prompt = {c.request_json["prompt"]: c for c in calls.values()}
    assert len(by_prompt[HUGE].request_json["prompt"]) == 100_000
    assert by_prompt[HUGE].response_json["text"] == HUGE[::-1]
    assert by_prompt["question 5"].created_at == datetime(
        2025, 5, 1, 12, 1, 25, 5, tzinfo=timezone.utc
    )
    assert by_prompt["nothing known"].tokens_json is None
    assert by_prompt["nothing known"].metadata_json["v1_metadata"] is None


def test_batches_become_groups_ordered_by_created_at(db, v1_url):
    result = migrate_v1_to_v2(v1_url, db)
    big = batch_members(db, "batch-of-1000")
    assert len(big) == 1000
    times = [c.created_at for c in big]
    assert times == sorted(times)
    assert [c.request_json["prompt"] for c in big[:2]] == ["question 0", "question 953"]
    assert [c.request_json["prompt"] for c in batch_members(db, "batch-of-1")] == ["alone"]
    assert len(batch_members(db, "big-prompts")) == 1
    assert result.batch_memberships == 1006
    with db.session_scope() as session:
        names = session.scalars(select(Group.name).where(Group.group_type == "batch")).all()
        positions = session.scalars(
            select(GroupMember.position)
            .join(Group, Group.id == GroupMember.group_id)
            .where(Group.name == "batch-of-1000")
            .order_by(GroupMember.position)
        ).all()
    # rows without batch_id (NULL or '') are in no group
    assert set(names) == {
        "batch-of-1",
        "batch-of-1000",
        "big-prompts",
        "Zeta",
        "alpha",
        "zeta",
        "Ärger",
    }
    assert positions == list(range(1, 1001))


def test_rerun_imports_nothing_and_100_new_rows_exactly(db, v1_url, v1_path):
    first = migrate_v1_to_v2(v1_url, db)
    again = migrate_v1_to_v2(v1_url, db)
    assert (again.migrated, again.already_migrated) == (0, V1_ROWS)
    assert again.source_id == first.source_id
    assert count(db, RawCall) == V1_ROWS
    assert pending_v1_rows(v1_url, db) == 0

    new_rows = [
        {
            "prompt": f"new {i}",
            "response": f"r {i}",
            "provider": "openai",
            "tokens": i,
            "latency_ms": float(i),
            "batch_id": "batch-of-1" if i < 50 else "later-batch",
            # older than the member already there: positions must follow time
            "created_at": f"2025-04-30 {10 + i // 60:02d}:{i % 60:02d}:00",
        }
        for i in range(100)
    ]
    add_v1_sqlite_rows(v1_path, new_rows)
    assert pending_v1_rows(v1_url, db) == 100
    third = migrate_v1_to_v2(v1_url, db)
    assert (third.migrated, third.already_migrated) == (100, V1_ROWS)
    assert (third.first_v1_id, third.last_v1_id) == (V1_ROWS + 1, V1_ROWS + 100)
    assert third.reordered_members == 51  # batch-of-1 renumbered: "alone" goes last
    calls = migrated(db)
    assert len(calls) == count(db, RawCall) == V1_ROWS + 100
    assert {calls[i].request_json["prompt"] for i in range(V1_ROWS + 1, V1_ROWS + 101)} == {
        f"new {i}" for i in range(100)
    }
    joined = [c.request_json["prompt"] for c in batch_members(db, "batch-of-1")]
    assert joined == [f"new {i}" for i in range(50)] + ["alone"]  # by created_at
    assert len(batch_members(db, "later-batch")) == 50
    assert all(r.passed for r in validate_migration(v1_url, db, sample_size=None))


def test_rows_appearing_below_the_high_water_mark_are_migrated(db, tmp_path):
    # PostgreSQL SERIAL ids can commit out of order; the ledger, not max(id), decides.
    path = create_v1_sqlite(
        tmp_path / "gaps.db",
        [{"id": i, "prompt": f"p{i}", "response": "r", "provider": "p"} for i in (1, 2, 5, 9)],
    )
    url = f"sqlite:///{path}"
    assert migrate_v1_to_v2(url, db).migrated == 4
    add_v1_sqlite_rows(
        path,
        [
            {"id": 3, "prompt": "p3", "response": "r", "provider": "p"},
            {"id": 7, "prompt": "p7", "response": "r", "provider": "p"},
        ],
    )
    result = migrate_v1_to_v2(url, db)
    assert (result.migrated, result.already_migrated) == (2, 4)
    assert sorted(migrated(db)) == [1, 2, 3, 5, 7, 9]


def test_moved_or_copied_file_is_the_same_source(db, v1_url, v1_path, tmp_path):
    first = migrate_v1_to_v2(v1_url, db)
    moved = tmp_path / "elsewhere" / "renamed.sqlite"
    moved.parent.mkdir()
    shutil.move(v1_path, moved)
    result = migrate_v1_to_v2(f"sqlite:///{moved}", db)
    assert (result.source_id, result.migrated) == (first.source_id, 0)
    copy = tmp_path / "copy.db"
    shutil.copy(moved, copy)
    assert migrate_v1_to_v2(f"sqlite:///{copy}", db).migrated == 0
    # even with its first rows gone, the database is recognised by its new first row
    con = sqlite3.connect(copy)
    con.execute("DELETE FROM inference_runs WHERE id <= 3")
    con.commit()
    con.close()
    assert source_fingerprint(f"sqlite:///{copy}") != first.source_id
    assert resolve_source_id(f"sqlite:///{copy}", db) == first.source_id
    assert migrate_v1_to_v2(f"sqlite:///{copy}", db).migrated == 0
    assert count(db, RawCall) == V1_ROWS


def test_another_v1_database_is_another_source(db, v1_url, tmp_path):
    first = migrate_v1_to_v2(v1_url, db)
    other = create_v1_sqlite(
        tmp_path / "other.db",
        [
            {"prompt": f"other {i}", "response": "r", "provider": "p", "batch_id": "batch-of-1"}
            for i in range(3)
        ],
    )
    second = migrate_v1_to_v2(f"sqlite:///{other}", db)
    assert second.source_id != first.source_id and second.migrated == 3
    # same v1 ids, different source: both are in the ledger
    with db.session_scope() as session:
        sources = session.execute(
            select(MigrationLedger.source, func.count()).group_by(MigrationLedger.source)
        ).all()
    assert dict(sources) == {first.source_id: V1_ROWS, second.source_id: 3}
    # an explicit source id keeps a diverged copy apart from the original
    forced = migrate_v1_to_v2(v1_url, db, source_id="archive-2024")
    assert (forced.source_id, forced.migrated) == ("archive-2024", V1_ROWS)
    # now the same content is known under two ids: only an explicit id can say which
    with pytest.raises(ValueError, match="matches several migrated sources"):
        migrate_v1_to_v2(v1_url, db)
    assert migrate_v1_to_v2(v1_url, db, source_id="archive-2024").migrated == 0
    assert source_fingerprint(v1_url) == first.source_id  # deterministic, content-based


def test_chunks_bounded_by_rows_and_bytes(db, v1_url):
    seen = []
    result = migrate_v1_to_v2(
        v1_url, db, chunk_rows=300, chunk_bytes=150_000, on_chunk=lambda r: seen.append(r.migrated)
    )
    # 300-row chunks, and a 100k-character row (200k chars with its answer) closes a chunk
    assert result.chunks == len(seen) > V1_ROWS // 300 + 1
    assert seen[-1] == V1_ROWS and all(b > a for a, b in zip(seen, seen[1:], strict=False))
    assert all(r.passed for r in validate_migration(v1_url, db, sample_size=None))


def test_an_interrupted_run_resumes_without_duplicates(db, v1_url):
    class Stop(Exception):
        pass

    def stop_after_two(progress):
        if progress.chunks == 2:
            raise Stop

    with pytest.raises(Stop):
        migrate_v1_to_v2(v1_url, db, chunk_rows=200, on_chunk=stop_after_two)
    # whole chunks only: every written raw_call is in the ledger and vice versa
    assert count(db, MigrationLedger) == count(db, RawCall) == 400
    result = migrate_v1_to_v2(v1_url, db, chunk_rows=200)
    assert (result.migrated, result.already_migrated) == (V1_ROWS - 400, 400)
    assert count(db, RawCall) == V1_ROWS
    times = [c.created_at for c in batch_members(db, "batch-of-1000")]
    assert len(times) == 1000 and times == sorted(times)


def test_legacy_file_is_not_modified(db, v1_url, v1_path):
    """The v1 file's bytes stay the same and it never gets a -wal or -shm file: opened with
    `mode=ro`, also when handed over as a (v2) DatabaseConnection, whose own engine would
    switch it to WAL."""
    before = hashlib.sha256(v1_path.read_bytes()).hexdigest()
    migrate_v1_to_v2(v1_url, db)
    validate_migration(v1_url, db, sample_size=None)
    legacy_stats(v1_url)
    as_connection = DatabaseConnection(v1_url)
    assert migrate_v1_to_v2(as_connection, db).migrated == 0
    assert all(r.passed for r in validate_migration(as_connection, db, sample_size=None))
    as_connection.dispose()
    assert hashlib.sha256(v1_path.read_bytes()).hexdigest() == before
    assert not any(v1_path.with_name(v1_path.name + s).exists() for s in ("-wal", "-shm"))
    con = sqlite3.connect(v1_path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    con.close()
    source = LegacySource.open(v1_url)
    with pytest.raises(Exception, match="readonly"), source.engine.begin() as conn:
        conn.execute(text("DELETE FROM inference_runs"))
    with pytest.raises(Exception, match="readonly"), source.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")  # not even the journal mode can change
    source.dispose()
    assert hashlib.sha256(v1_path.read_bytes()).hexdigest() == before


def test_legacy_stats(v1_url, v1_path):
    stats = legacy_stats(v1_url)
    assert stats["row_count"] == V1_ROWS and stats["max_id"] == V1_ROWS
    newest = max(parse_v1_timestamp(r["created_at"], r["id"]) for r in v1_table(v1_path))
    assert stats["max_created_at"] == newest


def test_empty_legacy_database(db, tmp_path):
    url = f"sqlite:///{create_v1_sqlite(tmp_path / 'empty.db')}"
    result = migrate_v1_to_v2(url, db)
    assert (result.source_id, result.migrated) == (None, 0)
    assert all(r.passed for r in validate_migration(url, db))
    assert legacy_stats(url) == {"row_count": 0, "max_id": None, "max_created_at": None}


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ({"provider": ""}, r"an invalid 'provider' \(v1 ids \[3\]\)"),
        ({"provider": "p" * 65}, r"an invalid 'provider' \(v1 ids \[3\]\)"),
        ({"latency_ms": -1.0}, r"an invalid 'latency_ms' \(v1 ids \[3\]\)"),
        ({"created_at": "yesterday"}, r"id=3: field 'created_at' is not a timestamp \(got 'yes"),
        ({"metadata": "{not json"}, r"id=3: field 'metadata' is not valid JSON"),
        ({"tokens": "many"}, r"id=3: field 'tokens' is not a count \(got 'many'\)"),
    ],
)
def test_bad_legacy_rows_are_named_and_nothing_is_written(db, tmp_path, bad_row, message):
    rows = [{"prompt": f"p{i}", "response": "r", "provider": "p"} for i in range(5)]
    rows[2] = {**rows[2], **bad_row}
    path = create_v1_sqlite(tmp_path / "bad.db", rows)
    with pytest.raises(ValueError, match=message) as raised:
        migrate_v1_to_v2(f"sqlite:///{path}", db)
    assert "skip_invalid_rows: true" in str(raised.value) and str(path) in str(raised.value)
    assert count(db, RawCall) == count(db, MigrationLedger) == 0


def test_unusable_legacy_databases_get_clear_errors(db, tmp_path):
    with pytest.raises(FileNotFoundError, match="legacy v1 database file not found: .*nope.db"):
        migrate_v1_to_v2(f"sqlite:///{tmp_path / 'nope.db'}", db)
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(ValueError, match=r"other\.db has no table 'inference_runs'"):
        migrate_v1_to_v2(f"sqlite:///{tmp_path / 'other.db'}", db)
    con = sqlite3.connect(tmp_path / "partial.db")
    con.execute("CREATE TABLE inference_runs (id INTEGER PRIMARY KEY, prompt TEXT)")
    con.close()
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['response', 'provider'"):
        migrate_v1_to_v2(f"sqlite:///{tmp_path / 'partial.db'}", db)
    with pytest.raises(ValueError, match="chunk_rows and chunk_bytes must be >= 1"):
        migrate_v1_to_v2(f"sqlite:///{tmp_path / 'partial.db'}", db, chunk_rows=0)


def test_postgres_source(db, v1_pg_url):
    """PostgreSQL v1 (timestamptz, json column) into either target."""
    result = migrate_v1_to_v2(v1_pg_url, db)
    assert result.migrated == V1_ROWS
    reports = validate_migration(v1_pg_url, db, sample_size=None)
    assert [r.check for r in reports if not r.passed] == []
    calls = migrated(db)
    dataset = v1_dataset()
    assert calls[1].created_at == datetime.fromisoformat(dataset[0]["created_at"]).replace(
        tzinfo=timezone.utc
    )
    assert calls[1].metadata_json["v1_metadata"] == dataset[0]["metadata"]
    assert calls[1004].request_json["prompt"] == HUGE
    assert len(batch_members(db, "batch-of-1000")) == 1000
    add_v1_postgres_rows(
        v1_pg_url, [{"prompt": f"n{i}", "response": "r", "provider": "p"} for i in range(100)]
    )
    again = migrate_v1_to_v2(v1_pg_url, db)
    assert (again.migrated, again.already_migrated) == (100, V1_ROWS)


def test_postgres_source_sessions_are_read_only(v1_pg_url):
    source = LegacySource.open(v1_pg_url)
    with pytest.raises(Exception, match="read-only transaction"), source.engine.begin() as conn:
        conn.execute(text("DELETE FROM inference_runs"))
    source.dispose()


def test_dataset_shape():
    rows = v1_dataset()
    assert sum(r.get("batch_id") == "batch-of-1000" for r in rows) == 1000
    assert sum(1 for r in rows if not r.get("batch_id")) >= 4
    assert BASE.tzinfo is None


def test_api_md_migration_example_runs(tmp_path):
    """docs/API.md's migration example runs as written (offline, in a fresh directory)."""
    api = (Path(__file__).resolve().parents[2] / "docs" / "API.md").read_text()
    [example] = [
        b for b in re.findall(r"```python\n(.*?)```", api, re.S) if "migrate_v1_to_v2(" in b
    ]
    script = tmp_path / "example.py"
    script.write_text(example)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].split()[1:] == ["2", "0", "0"]  # migrated, already migrated, quarantined
    assert lines[1:] == [f"{name}: passed" for name in CHECKS]


def test_converted_rows_pass_the_repository_validation(v1_url):
    """The migration writes in bulk, past RawCallRepository: its conversion must produce only
    rows the repository's own validation accepts (the same rules, checked field by field)."""
    with opened(v1_url) as source:
        rows = source.first_rows(V1_ROWS)
    assert len(rows) == V1_ROWS
    for row in rows:
        converted = v1_row_to_raw_call(row, "v1-test")
        assert validate_raw_call(converted, f"v1 id {row.id}") == converted
