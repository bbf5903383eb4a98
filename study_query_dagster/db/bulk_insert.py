"""`BulkInsert`: many rows into one table in few round trips, below SQLAlchemy's per-row
statement machinery (for the migration, whose chunks are thousands of rows).

Values go through each column type's own bind processor (JSON serialiser, UTC timestamps), so
rows are stored exactly as an ORM insert would store them, except that None in a JSON column
is SQL NULL. SQLite gets one `executemany`; PostgreSQL gets `COPY … FROM STDIN`, with ids
drawn from the table's sequence in one query when the caller needs them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from itertools import chain
from typing import Any

from sqlalchemy import JSON, Table
from sqlalchemy.engine import Connection

from .connection import _json_dumps as json_dumps
from .types import UTCDateTime, to_utc

_ENCODER = json.JSONEncoder(ensure_ascii=False)


def _encoder():
    """`json.dumps(value, ensure_ascii=False)`, without building an encoder for every call
    (json's C encoder, reused; without the check for circular references, which values read
    from JSON or built from rows cannot have)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _ENCODER.encode
    encode_string = json.encoder.encode_basestring
    chunks = make(None, _ENCODER.default, encode_string, None, ": ", ", ", False, False, True)

    def encode(value):
        if isinstance(value, str):
            return encode_string(value)
        return "".join(chunks(value, 0))

    return encode


SQLITE_PARAMETERS = 30_000  # bound parameters per statement (SQLite allows 32,766 since 3.32)
# COPY's text format: backslash escapes for the characters that delimit fields and rows.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_field(value: Any) -> str:
    kind = type(value)
    if kind is str:
        if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
            return value.translate(_COPY_ESCAPES)
        return value
    if value is None:
        return "\\N"
    if kind is int or kind is float:
        return str(value)
    if kind is bool:
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value).translate(_COPY_ESCAPES)


def _copy_text(values: list[tuple]) -> io.StringIO:
    """Rows in COPY's text format; a timestamp shared by consecutive rows is formatted once."""
    buffer = io.StringIO()
    last: dict[int, tuple] = {}
    lines = []
    for row in values:
        fields = []
        for i, value in enumerate(row):
            if isinstance(value, datetime):
                seen = last.get(i)
                if seen is None or seen[0] is not value:
                    last[i] = seen = (value, value.isoformat())
                fields.append(seen[1])
            else:
                fields.append(_copy_field(value))
        lines.append("\t".join(fields))
    buffer.write("\n".join(lines))
    buffer.write("\n")
    buffer.seek(0)
    return buffer


def _processor(type_, dialect):
    process = type_.dialect_impl(dialect).bind_processor(dialect)
    return None if process is None else _remembering(process)


def _remembering(process):
    """`process`, remembering its last timestamp: a chunk's rows share one (when they were
    written), and a timestamp costs microseconds to process."""
    last: list = [None, None]

    def remembered(value):
        if not isinstance(value, datetime):
            return process(value)
        if value is not last[0]:
            last[0], last[1] = value, process(value)
        return last[1]

    return remembered


def _fast(type_, dialect):
    """A quicker equivalent of the bind processor for the types a migration writes most."""
    impl = type_.dialect_impl(dialect)
    if isinstance(impl, JSON) and not impl.none_as_null:
        # What the JSON type's processor does for a value that is not None: the engine's
        # serializer. DatabaseConnection's is json.dumps(ensure_ascii=False) plus a U+0000 fix;
        # one prebuilt encoder saves json.dumps building one per call.
        serializer = getattr(dialect, "_json_serializer", None) or json.dumps
        if serializer is not json_dumps:
            return serializer
        encode = _encoder()

        def serialize(value):
            text = encode(value)
            return text if "\\u0000" not in text else serializer(value)

        return serialize
    if isinstance(impl, UTCDateTime) and dialect.name == "sqlite":
        # SQLAlchemy's SQLite DATETIME storage format, microseconds always written.
        def naive_utc(value: datetime) -> str:
            if value.tzinfo is not timezone.utc:
                value = to_utc(value)
            return (
                f"{value.year:04d}-{value.month:02d}-{value.day:02d} {value.hour:02d}:"
                f"{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
            )

        return _remembering(naive_utc)
    return None


class BulkInsert:
    """Inserts rows (tuples of Python values) into `columns` of `table`."""

    def __init__(self, conn: Connection, table: Table, columns: Sequence[str]):
        self.conn, self.table, self.columns = conn, table, list(columns)
        dialect = conn.dialect
        self.postgres = dialect.name == "postgresql"
        processors = [
            _fast(table.c[name].type, dialect) or _processor(table.c[name].type, dialect)
            for name in columns
        ]
        self.processed = [(i, p) for i, p in enumerate(processors) if p is not None]

    def _values(self, row: Sequence[Any]) -> tuple:
        values = list(row)
        for i, process in self.processed:
            if values[i] is not None:
                values[i] = process(values[i])
        return tuple(values)

    def insert(self, rows: Sequence[Sequence[Any]]) -> None:
        """Insert rows given as values in `columns` order."""
        if rows:
            self._write(self.columns, [self._values(r) for r in rows])

    def insert_returning_ids(self, rows: Sequence[Sequence[Any]]) -> list[int]:
        """Insert rows given as values in `columns` order; the new ids, in input order."""
        if not rows:
            return []
        values = [self._values(r) for r in rows]
        if self.postgres:
            ids = self._next_ids(len(values))
            self._write(["id", *self.columns], [(i, *v) for i, v in zip(ids, values, strict=True)])
            return ids
        self._write(self.columns, values)
        # The transaction holds SQLite's only write lock from its first INSERT on, and a rowid
        # table numbers new rows max(rowid)+1, +2, ...: one executemany's rows are contiguous.
        last = self.conn.exec_driver_sql("SELECT last_insert_rowid()").scalar_one()
        first = last - len(values) + 1
        counted = self.conn.exec_driver_sql(
            f"SELECT count(*) FROM {self.table.name} WHERE id BETWEEN ? AND ?", (first, last)
        ).scalar_one()
        if counted != len(values):  # never expected: better an error than wrong ids
            raise RuntimeError(f"{self.table.name}: ids {first}..{last} are not this insert's")
        return list(range(first, last + 1))

    def _next_ids(self, n: int) -> list[int]:
        stmt = (
            f"SELECT nextval(pg_get_serial_sequence('{self.table.name}', 'id'))"
            " FROM generate_series(1, %(n)s)"
        )
        return sorted(self.conn.exec_driver_sql(stmt, {"n": n}).scalars())

    def _write(self, columns: list[str], values: list[tuple]) -> None:
        names = ", ".join(columns)
        if not self.postgres:
            # Multi-row INSERTs, not an executemany: sqlite3 releases and retakes the GIL for
            # every row of an executemany, a queue behind the thread reading the next chunk.
            per_statement = max(1, SQLITE_PARAMETERS // len(columns))
            row = "(" + ", ".join("?" for _ in columns) + ")"
            for first in range(0, len(values), per_statement):
                part = values[first : first + per_statement]
                rows = ", ".join([row] * len(part))
                params = tuple(chain.from_iterable(part))
                self.conn.exec_driver_sql(
                    f"INSERT INTO {self.table.name} ({names}) VALUES {rows}", params
                )
            return
        buffer = _copy_text(values)
        cursor = self.conn.connection.dbapi_connection.cursor()
        try:
            cursor.copy_expert(f"COPY {self.table.name} ({names}) FROM STDIN", buffer)
        finally:
            cursor.close()
