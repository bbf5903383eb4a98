"""`insert_ignore` and `insert_or_update`: INSERTs that resolve a unique-key conflict by skipping
the row or by updating the existing one, on both backends.

Concurrent writers (two migrations, two embedding workers, a sensor seeing a run twice) rely on
it to end with one row instead of an error.
"""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session


def _insert(bind: Session | Connection):
    dialect = bind.get_bind().dialect if isinstance(bind, Session) else bind.dialect
    return pg_insert if dialect.name == "postgresql" else sqlite_insert


def insert_ignore(bind: Session | Connection, model, index_elements: list[str]):
    """`INSERT ... ON CONFLICT (index_elements) DO NOTHING` for `model` (a mapped class or
    table) in the dialect of the session or connection."""
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
