"""What the repositories share: the session-holding base class, dialect-aware upserts
(insert-or-ignore, insert-or-update) and chunking."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

# Rows per bulk statement and hashes per IN list: well under SQLite's 32,766 bound parameters.
CHUNK_SIZE = 1000

T = TypeVar("T")


class Repository:
    """Operations within one session: the caller owns the transaction."""

    def __init__(self, session: Session):
        self.session = session

    @property
    def dialect(self) -> str:
        return self.session.get_bind().dialect.name


def _insert(bind: Session | Connection):
    dialect = bind.get_bind().dialect if isinstance(bind, Session) else bind.dialect
    return pg_insert if dialect.name == "postgresql" else sqlite_insert


def insert_ignore(bind: Session | Connection, model, index_elements: list[str]):
    """`INSERT ... ON CONFLICT (index_elements) DO NOTHING` for `model` (a mapped class or
    table) in the dialect of the session or connection: concurrent writers end with one row
    instead of an error."""
    return _insert(bind)(model).on_conflict_do_nothing(index_elements=index_elements)


def insert_or_update(
    bind: Session | Connection, model, index_elements: list[str], update: list[str]
):
    """`INSERT ... ON CONFLICT (index_elements) DO UPDATE SET` the `update` columns to the
    values being inserted."""
    stmt = _insert(bind)(model)
    return stmt.on_conflict_do_update(
        index_elements=index_elements, set_={name: stmt.excluded[name] for name in update}
    )


def chunked(items: Sequence[T], size: int = CHUNK_SIZE) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
