"""Schema set-up, Alembic parity, and the append-only guarantee, on SQLite and PostgreSQL."""

import sqlite3

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event, inspect, text
from sqlalchemy.exc import DatabaseError, IntegrityError

from study_query_dagster.db import DatabaseConnection, GroupRepository, RawCallRepository
from study_query_dagster.db.base import Base

TABLES = {"raw_calls", "call_artifacts", "embedding_vectors", "groups", "group_members",
          "migration_ledger", "migration_quarantine", "run_failures",
          "variation_results"}  # fmt: skip


def alembic_head() -> str:
    from alembic.script import ScriptDirectory

    from study_query_dagster.db.connection import alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_init_db_creates_schema_and_is_idempotent(empty_db_url):
    db = DatabaseConnection(empty_db_url)
    db.init_db()
    db.init_db()  # a second upgrade is a no-op, not an error
    tables = set(inspect(db.engine).get_table_names())
    assert tables >= TABLES
    with db.engine.connect() as conn:
        assert (
            conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == alembic_head()
        )
    db.dispose()


def test_a_process_migrating_a_new_sqlite_file_waits_for_one_that_wrote_meanwhile(tmp_path):
    # Another process (a sensor, a second run) holds the write lock on the new file and commits
    # right before our first write, the worst moment: a transaction that had read first would
    # fail at once with "database is locked" (a stale snapshot gets no busy wait).
    path = tmp_path / "app.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA journal_mode=WAL")
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE written_by_another_process (x)")
    db = DatabaseConnection(f"sqlite:///{path}")

    @event.listens_for(db.engine, "before_cursor_execute")
    def other_commits_before_our_first_write(conn, cursor, statement, *args):
        words = statement.split()[:2]
        takes_the_lock = words[:1] in (["CREATE"], ["INSERT"], ["ALTER"]) or words == [
            "BEGIN",
            "IMMEDIATE",
        ]  # a deferred BEGIN takes no lock, nor does a read
        if other.in_transaction and takes_the_lock:
            other.execute("COMMIT")

    try:
        db.init_db()
    finally:
        event.remove(db.engine, "before_cursor_execute", other_commits_before_our_first_write)
        other.close()
    assert set(inspect(db.engine).get_table_names()) >= TABLES | {"written_by_another_process"}
    db.dispose()


def test_autogenerate_finds_no_difference(db):
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_postgres_vector_column_is_pgvector(pg_db):
    with pg_db.engine.connect() as conn:
        column_type = conn.execute(
            text(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'embedding_vectors'::regclass AND attname = 'vector'"
            )
        ).scalar()
        extension = conn.execute(
            text("SELECT extname FROM pg_extension WHERE extname = 'vector'")
        ).scalar()
    assert column_type == "vector"
    assert extension == "vector"


def _one_call(db) -> int:
    with db.session_scope() as session:
        return RawCallRepository(session).insert_raw_call(
            provider="offline", model="m", status="success", request_json={"prompt": "hi"}
        )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE raw_calls SET status = 'failed' WHERE id = :id",
        "UPDATE raw_calls SET response_json = NULL WHERE id = :id",
        "DELETE FROM raw_calls WHERE id = :id",
    ],
)
def test_raw_calls_refuse_update_and_delete(db, statement):
    call_id = _one_call(db)
    with pytest.raises(DatabaseError, match="raw_calls is append-only"):
        with db.engine.begin() as conn:
            conn.execute(text(statement), {"id": call_id})
    with db.engine.connect() as conn:
        row = conn.execute(text("SELECT status FROM raw_calls WHERE id = :id"), {"id": call_id})
        assert row.scalar() == "success"


def test_postgres_refuses_truncate(pg_db):
    _one_call(pg_db)
    with pytest.raises(DatabaseError, match="append-only"), pg_db.engine.begin() as conn:
        conn.execute(text("TRUNCATE raw_calls CASCADE"))


def test_orm_update_is_refused_too(db):
    call_id = _one_call(db)
    with pytest.raises(DatabaseError, match="append-only"), db.session_scope() as session:
        call = RawCallRepository(session).get_raw_call(call_id)
        call.status = "failed"


def test_groups_and_memberships_stay_mutable(db):
    call_id = _one_call(db)
    with db.session_scope() as session:
        repo = GroupRepository(session)
        group_id = repo.create_group("label", "draft")
        repo.add_group_members(group_id, [call_id])
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE groups SET name = 'final' WHERE id = :id"), {"id": group_id})
        conn.execute(text("DELETE FROM group_members WHERE group_id = :id"), {"id": group_id})
    with db.session_scope() as session:
        repo = GroupRepository(session)
        assert repo.get_group(group_id).name == "final"
        assert repo.get_group_members(group_id) == []


def test_check_constraint_rejects_bad_status_in_raw_sql(db):
    with pytest.raises(IntegrityError), db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO raw_calls (provider, modality, status, request_json, created_at)"
                " VALUES ('x', 'text', 'done', '{}', CURRENT_TIMESTAMP)"
            )
        )
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM raw_calls")).scalar() == 0


def test_head_is_the_newest_revision_file():
    from study_query_dagster.db.connection import MIGRATIONS_DIR

    newest = max(p.name.split("_")[0] for p in (MIGRATIONS_DIR / "versions").glob("[0-9]*.py"))
    assert alembic_head() == newest
