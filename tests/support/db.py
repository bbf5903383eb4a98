"""Database fixtures: every DB test runs on SQLite (a file in a temp dir) and on PostgreSQL."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from study_query_dagster.db import DatabaseConnection, RawCallRepository, VectorStore

from .postgres import PostgresServer

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A SQLite file migrated to head once; tests copy it instead of re-running Alembic."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    db = DatabaseConnection(f"sqlite:///{path}")
    db.init_db()
    with db.engine.connect() as conn:  # fold the WAL back so a plain file copy is complete
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.dispose()
    return path


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def db_url(backend, request, tmp_path) -> Iterator[str]:
    """URL of a fresh, migrated v2 database on the current backend."""
    if backend == "sqlite":
        path = tmp_path / "app.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
    else:
        server: PostgresServer = request.getfixturevalue("pg_server")
        url = server.create_database()
        yield url.render_as_string(hide_password=False)
        server.drop_database(url)


@pytest.fixture
def db(db_url) -> Iterator[DatabaseConnection]:
    connection = DatabaseConnection(db_url)
    yield connection
    connection.dispose()


@pytest.fixture
def empty_db_url(backend, request, tmp_path) -> Iterator[str]:
    """URL of an empty database (no schema) on the current backend."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("pg_server")
        url = server.create_database(migrated=False)
        yield url.render_as_string(hide_password=False)
        server.drop_database(url)


@pytest.fixture
def pg_db(pg_server) -> Iterator[DatabaseConnection]:
    """A fresh, migrated PostgreSQL database, for tests of PostgreSQL-only behaviour."""
    url = pg_server.create_database()
    connection = DatabaseConnection(url)
    yield connection
    connection.dispose()
    pg_server.drop_database(url)


@pytest.fixture
def sqlite_db(request, tmp_path) -> Iterator[DatabaseConnection]:
    path = tmp_path / "app.db"
    shutil.copy(request.getfixturevalue("sqlite_template"), path)
    connection = DatabaseConnection(f"sqlite:///{path}")
    yield connection
    connection.dispose()


def store_vectors(db: DatabaseConnection, vectors, model: str = "e") -> list[int]:
    """One embedding call holding `vectors` (texts t0, t1, ...) for `model`; their ids."""
    with db.session_scope() as session:
        call_id = RawCallRepository(session).insert_raw_call(
            provider="offline", model=model, modality="embedding", status="success",
            request_json={"input": "x"},
        )  # fmt: skip
        return VectorStore(session).insert_embedding_vectors(
            [{"call_id": call_id, "model": model, "vector": v, "text": f"t{i}"}
             for i, v in enumerate(vectors)]
        )  # fmt: skip
