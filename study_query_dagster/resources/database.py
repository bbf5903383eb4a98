"""Database resources: the v2 app database and the legacy v1 database.

A connection (engine + pool) is made once per process and URL; the app schema is upgraded to
the newest Alembic revision the first time a process uses it.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from pydantic import Field
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError

from ..config import DEFAULT_DATABASE_URL
from ..db import DatabaseConnection
from ..db.connection import db_error_reason

_lock = threading.Lock()
_connections: dict[tuple[str, bool], DatabaseConnection] = {}


def shared_connection(url: str, *, migrate: bool) -> DatabaseConnection:
    key = (url, migrate)
    with _lock:
        connection = _connections.get(key)
        if connection is None:
            connection = DatabaseConnection(url)
            if migrate:
                connection.init_db()
            _connections[key] = connection
        return connection


def dispose_shared_connections() -> None:
    """Close every pooled connection (tests that stop a database server call this)."""
    with _lock:
        for connection in _connections.values():
            connection.dispose()
        _connections.clear()


class DatabaseResource(dg.ConfigurableResource):
    """The app database (v2 store of record): SQLite by default, PostgreSQL + pgvector in
    production. Set DATABASE_URL to change it."""

    url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL of the app database (DATABASE_URL).",
    )

    def get_connection(self) -> DatabaseConnection:
        return shared_connection(self.url, migrate=True)

    @contextmanager
    def failures(
        self,
        during: str,
        resume: str = "items that already succeeded are not sent again",
    ) -> Iterator[None]:
        """Fail the step with what happened and what to do when the database is lost or
        refuses connections (instead of a driver traceback with SQL and row parameters);
        `resume` says what a re-execution keeps."""
        try:
            yield
        except (OperationalError, InterfaceError) as exc:
            where = make_url(self.url).render_as_string(hide_password=True)
            reason = db_error_reason(exc)
            raise dg.Failure(
                description=(
                    f"The app database ({where}) failed during {during}: {reason}. Calls "
                    "captured before the failure are kept. Once the database is reachable again, "
                    f"re-execute this run from failure: {resume}."
                ),
                metadata={"database": where, "database_error": reason},
            ) from exc


class LegacyDatabaseResource(dg.ConfigurableResource):
    """The legacy v1 database (LEGACY_DATABASE_URL). The migration service opens it read-only
    (SQLite `mode=ro`, PostgreSQL read-only transactions), so it is never written."""

    url: str | None = Field(
        default=None, description="SQLAlchemy URL of the v1 database (LEGACY_DATABASE_URL)."
    )

    @property
    def configured(self) -> bool:
        return bool(self.url)

    def source_url(self) -> str:
        if not self.url:
            raise dg.Failure(
                "No legacy database configured: set LEGACY_DATABASE_URL to the v1 database's URL "
                "(e.g. sqlite:///data/legacy_v1.db)."
            )
        return self.url
