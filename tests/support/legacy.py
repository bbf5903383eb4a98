"""v1 databases built with plain SQL in the original tool's layout (not through our models)."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from study_query_dagster.db.legacy_reader import V1_COLUMNS

V1_SQLITE_DDL = """
CREATE TABLE inference_runs (
    id INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    response TEXT NOT NULL,
    provider VARCHAR(50) NOT NULL,
    tokens INTEGER,
    latency_ms FLOAT,
    metadata JSON,
    batch_id VARCHAR(36),
    created_at DATETIME DEFAULT (CURRENT_TIMESTAMP) NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX ix_inference_runs_provider ON inference_runs (provider);
CREATE INDEX ix_inference_runs_batch_id ON inference_runs (batch_id);
CREATE INDEX ix_inference_runs_created_at ON inference_runs (created_at);
"""

V1_POSTGRES_DDL = """
CREATE TABLE inference_runs (
    id SERIAL PRIMARY KEY,
    prompt TEXT NOT NULL,
    response TEXT NOT NULL,
    provider VARCHAR(50) NOT NULL,
    tokens INTEGER,
    latency_ms DOUBLE PRECISION,
    metadata JSON,
    batch_id VARCHAR(36),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL
);
CREATE INDEX ix_inference_runs_provider ON inference_runs (provider);
CREATE INDEX ix_inference_runs_batch_id ON inference_runs (batch_id);
CREATE INDEX ix_inference_runs_created_at ON inference_runs (created_at);
"""

COLUMNS = V1_COLUMNS  # the original layout's columns, in its order


def _runs(rows: Iterable[Mapping[str, Any]]):
    """Consecutive rows sharing the same columns, as (columns, value tuples), for executemany."""
    batch: list[tuple] = []
    names: tuple[str, ...] | None = None
    for row in rows:
        values = {k: row.get(k) for k in COLUMNS if k in row}
        if isinstance(values.get("metadata"), dict | list):
            values["metadata"] = json.dumps(values["metadata"])
        if names is not None and tuple(values) != names:
            yield names, batch
            batch = []
        names = tuple(values)
        batch.append(tuple(values.values()))
    if batch:
        yield names, batch


def create_v1_sqlite(path: Path, rows: Iterable[Mapping[str, Any]] = ()) -> Path:
    """A v1 SQLite file as the original tool left it; `created_at` strings as SQLite stores them."""
    con = sqlite3.connect(path)
    con.executescript(V1_SQLITE_DDL)
    add_v1_sqlite_rows(path, rows, con)
    con.close()
    return path


def add_v1_sqlite_rows(path: Path, rows: Iterable[Mapping[str, Any]], con=None) -> None:
    own = con is None
    con = con or sqlite3.connect(path)
    for names, values in _runs(rows):
        marks = ", ".join("?" for _ in names)
        con.executemany(f"INSERT INTO inference_runs ({', '.join(names)}) VALUES ({marks})", values)
    con.commit()
    if own:
        con.close()


def _pg_connect(url):
    import psycopg2
    from sqlalchemy.engine import make_url

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg2.connect(dsn)


def create_v1_postgres(url, rows: Iterable[Mapping[str, Any]] = ()) -> None:
    """The v1 table in an empty PostgreSQL database, by plain SQL (psycopg2, no SQLAlchemy)."""
    con = _pg_connect(url)
    with con, con.cursor() as cur:
        cur.execute(V1_POSTGRES_DDL)
    con.close()
    add_v1_postgres_rows(url, rows)


def add_v1_postgres_rows(url, rows: Iterable[Mapping[str, Any]]) -> None:
    from psycopg2.extras import execute_values

    con = _pg_connect(url)
    with con, con.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")  # the original tool wrote naive UTC timestamps
        for names, values in _runs(rows):
            execute_values(
                cur,
                f"INSERT INTO inference_runs ({', '.join(names)}) VALUES %s",
                values,
                page_size=1000,
            )
        # explicit ids must not collide with the SERIAL sequence afterwards
        cur.execute(
            "SELECT setval(pg_get_serial_sequence('inference_runs', 'id'),"
            " GREATEST((SELECT max(id) FROM inference_runs), 1))"
        )
    con.close()


def sql_v1(path_or_url, statement: str, params: Sequence[Any] = ()) -> None:
    """Run one statement against a v1 database (SQLite path or PostgreSQL URL): tampering."""
    if isinstance(path_or_url, Path):
        con = sqlite3.connect(path_or_url)
        con.execute(statement, params)
        con.commit()
        con.close()
        return
    con = _pg_connect(path_or_url)
    with con, con.cursor() as cur:
        cur.execute(statement.replace("?", "%s"), params)
    con.close()


def _ledger_revision():
    """The Alembic revision that makes the ledger append-only, loaded from its file."""
    from study_query_dagster.db.connection import MIGRATIONS_DIR

    [path] = (MIGRATIONS_DIR / "versions").glob("0004_*.py")
    spec = importlib.util.spec_from_file_location("ledger_revision", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def ledger_unlocked(db):
    """The v2 database's migration_ledger with its append-only triggers lifted (for tests that
    tamper with it, as someone with DDL rights could), put back afterwards by the revision's
    own code."""
    with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            conn.exec_driver_sql("ALTER TABLE migration_ledger DISABLE TRIGGER USER")
        else:
            conn.exec_driver_sql("DROP TRIGGER migration_ledger_no_update")
            conn.exec_driver_sql("DROP TRIGGER migration_ledger_no_delete")
    try:
        yield
    finally:
        with db.engine.begin() as conn:
            if db.dialect == "postgresql":
                conn.exec_driver_sql("ALTER TABLE migration_ledger ENABLE TRIGGER USER")
            else:
                from alembic.operations import Operations
                from alembic.runtime.migration import MigrationContext

                with Operations.context(MigrationContext.configure(conn)):
                    _ledger_revision()._ledger_triggers("sqlite")
