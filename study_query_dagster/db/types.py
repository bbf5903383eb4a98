"""Column types that behave the same on SQLite and PostgreSQL.

- `JSONType`: JSONB on PostgreSQL, JSON (text) on SQLite. Python None is stored as SQL NULL,
  not as the JSON value `null`, so `IS NULL` finds absent values (rows written before this
  hold JSON null; `raw_calls.json_absent` treats both alike).
- `UTCDateTime`: always returns timezone-aware UTC datetimes. SQLite has no time zones, so values
  are stored as naive UTC; naive inputs are taken to be UTC already.
- `Vector`: pgvector `vector` on PostgreSQL (dimension-less, so one column holds every model's
  vectors), a float32 little-endian blob on SQLite. Both return a float32 `numpy.ndarray`.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import JSON, DateTime, LargeBinary
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

JSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def to_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class UTCDateTime(TypeDecorator):
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = to_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):  # rows written by plain SQL on SQLite
            value = datetime.fromisoformat(value)
        return to_utc(value)


class Vector(TypeDecorator):
    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "postgresql":
            return dialect.type_descriptor(VECTOR())
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        array = np.asarray(value, dtype=np.float32)
        if array.ndim != 1:
            raise ValueError(f"a vector must be one-dimensional, got shape {array.shape}")
        if dialect.name == "postgresql":
            return array
        return array.astype("<f4").tobytes()

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if dialect.name == "postgresql":
            return np.asarray(value, dtype=np.float32)
        return np.frombuffer(value, dtype="<f4").copy()

    @property
    def python_type(self):
        return np.ndarray
