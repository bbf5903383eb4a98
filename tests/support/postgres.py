"""An embedded PostgreSQL + pgvector for tests (pgserver), or TEST_DATABASE_URL when set.

One server per test session (per xdist worker); every test gets its own database cloned from a
template that was migrated once, so tests are isolated and fast.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass, field

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from study_query_dagster.db import DatabaseConnection, normalize_url

TEMPLATE_DB = "sqd_template"


@dataclass
class PostgresServer:
    admin_url: URL
    _server: object | None = None
    _tmpdir: tempfile.TemporaryDirectory | None = None
    _template_ready: bool = field(default=False)

    @classmethod
    def start(cls) -> PostgresServer:
        external = os.environ.get("TEST_DATABASE_URL")
        if external:
            return cls(admin_url=normalize_url(external))
        import pgserver

        tmpdir = tempfile.TemporaryDirectory(prefix="sqd-pg-")
        server = pgserver.get_server(tmpdir.name, cleanup_mode="stop")
        return cls(admin_url=normalize_url(server.get_uri()), _server=server, _tmpdir=tmpdir)

    def url_for(self, database: str) -> URL:
        return self.admin_url.set(database=database)

    def _admin(self, sql: str) -> None:
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(sql))
        finally:
            engine.dispose()

    def _ensure_template(self) -> None:
        if self._template_ready:
            return
        suffix = os.environ.get("PYTEST_XDIST_WORKER", "main")
        self.template = f"{TEMPLATE_DB}_{suffix}_{uuid.uuid4().hex[:6]}"
        self._admin(f'CREATE DATABASE "{self.template}"')
        db = DatabaseConnection(self.url_for(self.template))
        db.init_db()
        db.dispose()
        self._template_ready = True

    def create_database(self, migrated: bool = True) -> URL:
        """A fresh database; `migrated` clones the v2 schema at head (with pgvector)."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        if migrated:
            self._ensure_template()
            self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        else:
            self._admin(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def drop_database(self, url: URL | str) -> None:
        name = make_url(url).database
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self._template_ready:
            self.drop_database(self.url_for(self.template))
        if self._server is not None:
            self._server.cleanup()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
