"""Dialect-aware statement helpers the repositories share (insert-or-ignore, chunking)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
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


def insert_ignore(session: Session, model, index_elements: list[str]):
    """INSERT ... ON CONFLICT (index_elements) DO NOTHING, on either backend."""
    if session.get_bind().dialect.name == "postgresql":
        return pg_insert(model).on_conflict_do_nothing(index_elements=index_elements)
    return sqlite_insert(model).on_conflict_do_nothing(index_elements=index_elements)


def chunked(items: Sequence[T], size: int = CHUNK_SIZE) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
