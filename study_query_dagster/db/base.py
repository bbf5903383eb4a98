"""Declarative bases. v1 and v2 live in different databases, so they keep separate metadata."""

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

# Stable constraint names keep Alembic migrations identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """v2 (store of record)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class V1Base(DeclarativeBase):
    """v1 (legacy, read for migration)."""

    metadata = MetaData()
