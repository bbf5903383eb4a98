"""`DatabaseConnection`: one engine per URL, transactional sessions, and schema set-up.

The v2 schema is owned by Alembic (`init_db()` = upgrade to head); the v1 schema is only
created for fixtures and tests (`create_v1_schema()`), because real v1 databases already exist.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from ..log import get_logger
from .base import V1Base

logger = get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def normalize_url(url: str | URL) -> URL:
    """PostgreSQL URLs use psycopg2 (SQLAlchemy 2.1 would pick psycopg 3, which we do not ship)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed


# A real `\u0000` escape: preceded by an even number of backslashes (escaped backslashes).
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def _json_dumps(value) -> str:
    # Keep unicode readable in SQLite's JSON text (and searchable with LIKE).
    text = json.dumps(value, ensure_ascii=False)
    if "\\u0000" in text:
        # PostgreSQL's JSONB cannot hold U+0000: every JSON column stores it as U+FFFD, on both
        # backends so that the two stores agree.
        text = _NUL_ESCAPE.sub(r"\1\\ufffd", text)
    return text


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not pysqlite, emit BEGIN so SAVEPOINTs behave (SQLAlchemy's recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # `sqlite_immediate`: take the write lock up front. A deferred transaction that read
        # first and writes later fails at once ("database is locked", no busy wait) if another
        # process wrote in between.
        immediate = conn.get_execution_options().get("sqlite_immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class DatabaseConnection:
    """Engine + session factory for one database URL (SQLite or PostgreSQL)."""

    def __init__(self, url: str | URL, *, echo: bool = False, **engine_kwargs):
        self.url = normalize_url(url)
        kwargs: dict = {"echo": echo, "json_serializer": _json_dumps, **engine_kwargs}
        if self.url.get_backend_name() == "sqlite":
            database = self.url.database
            if database in (None, "", ":memory:"):
                kwargs.setdefault("poolclass", StaticPool)
                kwargs.setdefault("connect_args", {"check_same_thread": False})
            else:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
                kwargs.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
        else:
            kwargs.setdefault("pool_pre_ping", True)
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
        self._sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def safe_url(self) -> str:
        """The URL with any password masked: the only form that may be logged."""
        return self.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"DatabaseConnection({self.safe_url!r})"

    @contextmanager
    def session_scope(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on any error."""
        session = self._sessionmaker()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for a single read that needs no transaction: on PostgreSQL it runs in
        autocommit, which spares the BEGIN and COMMIT round trips (a warm embedding lookup is
        one statement); on SQLite, whose round trips are in-process, it is `session_scope`."""
        if self.dialect != "postgresql":
            with self.session_scope() as session:
                yield session
            return
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            with Session(bind=connection) as session:
                yield session

    def init_db(self) -> None:
        """Create or upgrade the v2 schema to the newest Alembic revision."""
        from alembic import command

        started = time.perf_counter()
        # Alembic reads the schema before it changes it: on SQLite, the write lock first, so
        # that processes starting together on a new file wait for each other instead of failing.
        options = {"sqlite_immediate": True} if self.dialect == "sqlite" else {}
        with self.engine.connect().execution_options(**options) as connection, connection.begin():
            config = alembic_config(connection)
            command.upgrade(config, "head")
        logger.info(
            "database schema at head: db=%s in %.0f ms",
            self.safe_url,
            (time.perf_counter() - started) * 1000,
        )

    def create_v1_schema(self) -> None:
        """Create the legacy v1 table (fixtures and tests; real v1 databases already exist)."""
        V1Base.metadata.create_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(connection=None):
    """An Alembic config pointing at the migrations shipped inside the package."""
    from alembic.config import Config

    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def db_error_reason(exc: BaseException) -> str:
    """The driver's own first line ("connection to server ... failed: ..."), without the SQL
    statement and row parameters SQLAlchemy appends (a failed bulk insert repeats every row)."""
    source = getattr(exc, "orig", None) or exc
    lines = str(source).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
