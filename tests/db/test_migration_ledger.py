"""The migration ledger (revision 0002; append-only since 0004) and the quarantine (0004):
constraints, triggers and clean downgrades/upgrades, on SQLite and PostgreSQL."""

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.exc import DatabaseError, IntegrityError

from study_query_dagster.db import MigrationLedger, MigrationQuarantine, RawCallRepository
from study_query_dagster.db.connection import alembic_config


def alembic_head() -> str:
    from alembic.script import ScriptDirectory

    from study_query_dagster.db.connection import alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _calls(db, n):
    with db.session_scope() as session:
        return RawCallRepository(session).insert_raw_calls(
            [{"provider": "v1", "status": "success", "request_json": {"prompt": "p"}}] * n
        )


def test_one_raw_call_per_source_and_v1_id(db):
    a, b = _calls(db, 2)
    with db.session_scope() as session:
        session.add(MigrationLedger(source="s1", v1_id=1, raw_call_id=a))
        session.add(MigrationLedger(source="s2", v1_id=1, raw_call_id=b))  # other source: fine
    with pytest.raises(IntegrityError), db.session_scope() as session:
        session.add(MigrationLedger(source="s1", v1_id=1, raw_call_id=b))
    with pytest.raises(IntegrityError), db.session_scope() as session:
        session.add(MigrationLedger(source="s3", v1_id=7, raw_call_id=a))  # a call maps once
    with pytest.raises(IntegrityError), db.session_scope() as session:
        session.add(MigrationLedger(source="s3", v1_id=8, raw_call_id=10_000))  # no such call


def test_downgrade_to_0001_and_back(db):
    with db.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0001")
    assert "migration_ledger" not in inspect(db.engine).get_table_names()
    db.init_db()
    assert "migration_ledger" in inspect(db.engine).get_table_names()
    with db.engine.connect() as conn:
        assert (
            conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == alembic_head()
        )


def test_ledger_is_append_only_in_the_database(db):
    """Deleting a ledger entry would make the next run copy its v1 row again: the database
    refuses it (and UPDATE, and on PostgreSQL TRUNCATE), whoever asks."""
    a, b = _calls(db, 2)
    with db.session_scope() as session:
        session.add(MigrationLedger(source="s1", v1_id=1, raw_call_id=a))
    statements = [
        "DELETE FROM migration_ledger",
        "UPDATE migration_ledger SET v1_id = 2",
        f"UPDATE migration_ledger SET raw_call_id = {b}",
    ]
    if db.dialect == "postgresql":
        statements.append("TRUNCATE migration_ledger CASCADE")
    for statement in statements:
        with pytest.raises(DatabaseError, match="migration_ledger is append-only"):
            with db.engine.begin() as conn:
                conn.execute(text(statement))
    with db.engine.connect() as conn:
        assert conn.execute(
            text("SELECT source, v1_id, raw_call_id FROM migration_ledger")
        ).all() == [("s1", 1, a)]


def test_quarantine_is_one_entry_per_source_and_v1_id(db):
    with db.session_scope() as session:
        session.add(MigrationQuarantine(source="s1", v1_id=1, field="provider", reason="empty"))
    with pytest.raises(IntegrityError), db.session_scope() as session:
        session.add(MigrationQuarantine(source="s1", v1_id=1, field="tokens", reason="x"))
    with db.engine.begin() as conn:  # bookkeeping, not history: entries leave when fixed
        conn.execute(text("DELETE FROM migration_quarantine"))


def test_downgrade_to_0003_drops_quarantine_and_triggers(db):
    with db.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0003")
    assert "migration_quarantine" not in inspect(db.engine).get_table_names()
    (call,) = _calls(db, 1)
    with db.engine.begin() as conn:  # no trigger left behind
        conn.execute(
            text(
                f"INSERT INTO migration_ledger (source, v1_id, raw_call_id, migrated_at)"
                f" VALUES ('s', 1, {call}, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(text("DELETE FROM migration_ledger"))
    db.init_db()
    assert "migration_quarantine" in inspect(db.engine).get_table_names()
    with pytest.raises(DatabaseError, match="append-only"), db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO migration_ledger (source, v1_id, raw_call_id, migrated_at)"
                f" VALUES ('s', 1, {call}, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(text("DELETE FROM migration_ledger"))
