"""Alembic environment: uses the connection handed over by `init_db()`, or DATABASE_URL."""

from alembic import context

from study_query_dagster.db import models_v2  # noqa: F401  (registers the tables)
from study_query_dagster.db.base import Base
from study_query_dagster.db.connection import DatabaseConnection

target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    from study_query_dagster.config import get_settings

    db = DatabaseConnection(get_settings().database_url)
    with db.engine.begin() as conn:
        _run(conn)
    db.dispose()
