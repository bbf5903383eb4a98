"""The migration ledger table (revision 0002): constraints and a clean downgrade/upgrade."""

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from study_query_dagster.db import MigrationLedger, RawCallRepository
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
