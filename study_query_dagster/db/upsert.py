"""`insert_ignore` and `insert_or_update`: INSERTs that resolve a unique-key conflict by skipping
the row or by updating the existing one, on both backends.

Concurrent writers (two migrations, two embedding workers, a sensor seeing a run twice) rely on
it to end with one row instead of an error.
"""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session


def insert_ignore(session: Session, model, index_elements: list[str]):
    """`INSERT ... ON CONFLICT (index_elements) DO NOTHING` for `model` (a mapped class or
    table) in the session's dialect."""
    if session.get_bind().dialect.name == "postgresql":
        return pg_insert(model).on_conflict_do_nothing(index_elements=index_elements)
    return sqlite_insert(model).on_conflict_do_nothing(index_elements=index_elements)


def insert_or_update(session: Session, model, index_elements: list[str], update: list[str]):
    """`INSERT ... ON CONFLICT (index_elements) DO UPDATE SET` the `update` columns to the
    values being inserted."""
    dialect_insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = dialect_insert(model)
    return stmt.on_conflict_do_update(
        index_elements=index_elements, set_={name: stmt.excluded[name] for name in update}
    )
