"""The original tool's v1 database API in one import: `DatabaseConnection` (v1 flavour),
`InferenceRepository`, `InferenceRun` and `Base`.

Code written for the original tool runs against a v1 database with only its imports changed to
`study_query_dagster.db.v1`: `DatabaseConnection(url).init_db()` creates the v1 table (not the
v2 schema, which `study_query_dagster.db.DatabaseConnection.init_db()` migrates with Alembic),
`get_session()`, `recreate_db()` and `drop_all_tables()` work as they did, and nothing changes a
v1 SQLite file's journal mode (the v2 connection switches its databases to WAL).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from ..log import get_logger
from .base import V1Base as Base
from .connection import DatabaseConnection as _V2Connection
from .connection import normalize_url
from .inference_repository import InferenceRepository
from .models_v1 import InferenceRun

logger = get_logger(__name__)


class V1DatabaseConnection(_V2Connection):
    """A connection to a v1 database as the original tool made it: plain SQLAlchemy engine
    defaults (no WAL, no pragmas), `init_db()` creates the v1 table."""

    def __init__(self, connection_string: str | URL, echo: bool = False):
        self.connection_string = str(connection_string)
        self.url = normalize_url(connection_string)
        kwargs: dict = {"echo": echo}
        if self.url.get_backend_name() == "sqlite":
            if self.url.database in (None, "", ":memory:"):
                kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
            else:
                Path(self.url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
                kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine = create_engine(self.url, **kwargs)
        self.SessionLocal = sessionmaker(autocommit=False, autoflush=False, bind=self.engine)
        self._sessionmaker = self.SessionLocal
        logger.info("v1 database connection: %s", self.safe_url)

    def init_db(self) -> None:
        """Create the v1 table if it is missing (safe to call again)."""
        Base.metadata.create_all(bind=self.engine)

    def drop_all_tables(self) -> None:
        """Drop the v1 table. Deletes every v1 row."""
        Base.metadata.drop_all(bind=self.engine)

    def recreate_db(self) -> None:
        """Drop and create the v1 table: an empty v1 database."""
        self.drop_all_tables()
        self.init_db()

    def get_session(self) -> Session:
        """A new session; the caller closes it (`session_scope()` does that for you)."""
        return self.SessionLocal()


DatabaseConnection = V1DatabaseConnection

__all__ = [
    "Base",
    "DatabaseConnection",
    "InferenceRepository",
    "InferenceRun",
    "V1DatabaseConnection",
]
