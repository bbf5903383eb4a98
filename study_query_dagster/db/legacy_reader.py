"""`LegacySource`: read-only access to a v1 `inference_runs` table (SQLite file or PostgreSQL).

Everything the migration and its checks read from the legacy side is here: the schema check,
id pages, streamed rows, row lookups, statistics and per-batch aggregates. A SQLite file is
opened with `mode=ro` (so not even its journal mode changes) and PostgreSQL sessions are
read-only transactions: the legacy database is never written.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Text, cast, column, create_engine, func, inspect, or_, select, table
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from .connection import DatabaseConnection, normalize_url

V1_TABLE = "inference_runs"
V1_COLUMNS = (
    "id",
    "prompt",
    "response",
    "provider",
    "tokens",
    "latency_ms",
    "metadata",
    "batch_id",
    "created_at",
)
ID_PAGE = 5000  # v1 ids per scan page (and per IN list)
STREAM_ROWS = 500  # rows per fetch from the streaming cursor

# Untyped columns: the driver's own values (SQLite timestamps stay strings parsed by the caller).
v1 = table(V1_TABLE, *(column(name) for name in V1_COLUMNS))


def bytewise(column_, dialect: str):
    """`column_` collated bytewise (SQLite's BINARY): merging sorted streams from two
    databases needs one sort order."""
    return column_.collate("C") if dialect == "postgresql" else column_


def _select_rows():
    # metadata as text on both backends (psycopg2 would parse PostgreSQL json itself, and a
    # JSON string value would then be indistinguishable from JSON text).
    return select(
        *(
            cast(v1.c.metadata, Text).label("metadata") if c == "metadata" else v1.c[c]
            for c in V1_COLUMNS
        )
    )


def _batched():
    return (v1.c.batch_id.is_not(None), v1.c.batch_id != "")


# Rows the v2 schema cannot take, found by SQL before anything is written: (field, condition).
INVALID_ROWS = (
    ("provider", or_(v1.c.provider.is_(None), func.trim(v1.c.provider) == "")),
    ("provider", func.length(v1.c.provider) > 64),
    ("latency_ms", v1.c.latency_ms < 0),
    ("batch_id", func.length(v1.c.batch_id) > 255),
)


def legacy_label(url: str | URL) -> str:
    """What messages call a legacy database: a SQLite file's absolute path, or the URL without
    its password (the same text `LegacySource.safe_url` gives)."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return str(Path(parsed.database).expanduser().resolve())
    return parsed.render_as_string(hide_password=True)


@dataclass
class LegacySource:
    """A v1 database opened for reading only."""

    engine: Engine
    owned: bool = True
    label: str = ""  # what messages and logs call it: a file path, or a URL without password

    @classmethod
    def open(cls, url: str | URL) -> LegacySource:
        parsed = normalize_url(url)
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database
            if database in (None, "", ":memory:"):
                raise ValueError("the legacy database must be a SQLite file or PostgreSQL URL")
            path = Path(database).expanduser().resolve()
            if not path.is_file():
                raise FileNotFoundError(f"legacy v1 database file not found: {path}")
            uri = f"{path.as_uri()}?mode=ro"
            engine = create_engine(
                "sqlite://",
                creator=lambda: sqlite3.connect(uri, uri=True, timeout=30),
                poolclass=NullPool,
            )
            return cls(engine, label=legacy_label(parsed))
        engine = create_engine(
            parsed,
            poolclass=NullPool,
            connect_args={"options": "-c default_transaction_read_only=on"},
        )
        return cls(engine, label=legacy_label(parsed))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def safe_url(self) -> str:
        return self.label or self.engine.url.render_as_string(hide_password=True)

    def dispose(self) -> None:
        if self.owned:
            self.engine.dispose()

    # --- schema and statistics ----------------------------------------------------------

    def check_schema(self) -> None:
        """Raise a clear error unless the source has the v1 table with the v1 columns."""
        try:
            inspector = inspect(self.engine)
            if not inspector.has_table(V1_TABLE):
                raise ValueError(f"legacy database {self.safe_url} has no table '{V1_TABLE}'")
            present = {c["name"] for c in inspector.get_columns(V1_TABLE)}
        except OperationalError as exc:
            raise ValueError(f"cannot read legacy database {self.safe_url}: {exc.orig}") from exc
        missing = [c for c in V1_COLUMNS if c not in present]
        if missing:
            raise ValueError(
                f"legacy table {V1_TABLE} in {self.safe_url} lacks column(s) {missing}"
            )

    def stats(self) -> tuple[int, int | None, Any]:
        """(row count, max id, max created_at as the driver returns it)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(func.count(), func.max(v1.c.id), func.max(v1.c.created_at))
            ).one()
        return int(row[0]), row[1], row[2]

    def time_range(self, without: list[int] = ()) -> tuple[Any, Any]:
        """(min, max) created_at over all rows but `without`, as the driver returns them."""
        stmt = select(func.min(v1.c.created_at), func.max(v1.c.created_at))
        if without:
            stmt = stmt.where(v1.c.id.not_in(list(without)))
        with self.engine.connect() as conn:
            return tuple(conn.execute(stmt).one())

    def invalid_rows(self) -> Iterator[tuple[str, int]]:
        """(field, v1 id) of every row the v2 schema cannot take that SQL finds cheaply, one
        kind of problem after the other, ids ascending."""
        with self.engine.connect() as conn:
            for name, condition in INVALID_ROWS:
                stmt = select(v1.c.id).where(condition).order_by(v1.c.id)
                for v1_id in conn.execution_options(stream_results=True).scalars(stmt):
                    yield name, v1_id

    # --- rows -----------------------------------------------------------------------------

    def first_rows(self, n: int) -> list:
        with self.engine.connect() as conn:
            return conn.execute(_select_rows().order_by(v1.c.id).limit(n)).all()

    def id_pages(self, page: int = ID_PAGE) -> Iterator[list[int]]:
        """All v1 ids, ascending, `page` at a time (keyset paging on the primary key)."""
        after = None
        with self.engine.connect() as conn:
            while True:
                stmt = select(v1.c.id).order_by(v1.c.id).limit(page)
                if after is not None:
                    stmt = stmt.where(v1.c.id > after)
                ids = list(conn.scalars(stmt))
                if not ids:
                    return
                yield ids
                after = ids[-1]

    def stream_rows(self, ids: list[int], whole_range: bool) -> Iterator[Any]:
        """The rows with these ids (ascending ids), through a streaming cursor. With
        `whole_range` every row between the first and last id is read (rows committed into
        the range since the ids were scanned included: the caller filters)."""
        stmt = _select_rows().order_by(v1.c.id)
        if whole_range:
            stmt = stmt.where(v1.c.id.between(ids[0], ids[-1]))
        else:
            stmt = stmt.where(v1.c.id.in_(ids))
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=STREAM_ROWS).execute(
                stmt
            )
            yield from result

    def rows(self, ids: list[int]) -> list:
        """The rows with these ids, ascending."""
        with self.engine.connect() as conn:
            return conn.execute(_select_rows().where(v1.c.id.in_(ids)).order_by(v1.c.id)).all()

    def ids_at_or_below(self, high: int, n: int) -> list[int]:
        """The `n` highest v1 ids that are <= `high`, descending."""
        stmt = select(v1.c.id).where(v1.c.id <= high).order_by(v1.c.id.desc()).limit(n)
        with self.engine.connect() as conn:
            return list(conn.scalars(stmt))

    # --- batches --------------------------------------------------------------------------

    def _batch_stream(self, *aggregates) -> Iterator[tuple]:
        stmt = (
            select(v1.c.batch_id, *aggregates)
            .where(*_batched())
            .group_by(v1.c.batch_id)
            .order_by(bytewise(v1.c.batch_id, self.dialect))
        )
        with self.engine.connect() as conn:
            yield from (tuple(r) for r in conn.execution_options(stream_results=True).execute(stmt))

    def batch_sizes(self) -> Iterator[tuple[str, int]]:
        """(batch_id, rows) per non-empty batch_id, in bytewise batch_id order."""
        return self._batch_stream(func.count())

    def batch_time_ranges(self) -> Iterator[tuple[str, Any, Any]]:
        """(batch_id, min created_at, max created_at), in bytewise batch_id order."""
        return self._batch_stream(func.min(v1.c.created_at), func.max(v1.c.created_at))

    def batch_member_ids(self, batch_id: str) -> set[int]:
        with self.engine.connect() as conn:
            return set(conn.scalars(select(v1.c.id).where(v1.c.batch_id == batch_id)))

    def batch_ids_of(self, ids: list[int]) -> dict[int, str | None]:
        """v1 id -> its batch_id, for these ids."""
        with self.engine.connect() as conn:
            return dict(conn.execute(select(v1.c.id, v1.c.batch_id).where(v1.c.id.in_(ids))).all())

    def batch_time_range(self, batch_id: str, without: list[int]) -> tuple[Any, Any]:
        """(min, max) created_at of a batch leaving out the rows `without`."""
        stmt = select(func.min(v1.c.created_at), func.max(v1.c.created_at)).where(
            v1.c.batch_id == batch_id, v1.c.id.not_in(without)
        )
        with self.engine.connect() as conn:
            return tuple(conn.execute(stmt).one())

    def batch_rows(self) -> Iterator[tuple[str, int, Any]]:
        """(batch_id, id, created_at) of every batched row, in bytewise batch_id order."""
        stmt = (
            select(v1.c.batch_id, v1.c.id, v1.c.created_at)
            .where(*_batched())
            .order_by(bytewise(v1.c.batch_id, self.dialect))
        )
        with self.engine.connect() as conn:
            yield from (tuple(r) for r in conn.execution_options(stream_results=True).execute(stmt))


Legacy = LegacySource | DatabaseConnection | str | URL


@contextmanager
def opened(legacy: Legacy) -> Iterator[LegacySource]:
    """A `LegacySource` for a URL or a `DatabaseConnection`'s URL (disposed afterwards), or the
    given source."""
    if isinstance(legacy, LegacySource):
        yield legacy
        return
    # A DatabaseConnection's own engine would write (a SQLite file is switched to WAL on
    # connect): its URL is opened read-only instead.
    source = LegacySource.open(legacy.url if isinstance(legacy, DatabaseConnection) else legacy)
    try:
        yield source
    finally:
        source.dispose()
