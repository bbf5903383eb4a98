"""The production Dagster instance (deploy/dagster.yaml) on the embedded PostgreSQL.

`pg_deployment` lays out what a production host has: a DAGSTER_HOME holding an unmodified copy
of deploy/dagster.yaml, an empty Dagster database and a migrated app database on the same
PostgreSQL server, and the environment variables that point at them. `pg_dagster_instance`
runs `dagster instance migrate` (the real CLI) on it and yields the DagsterInstance, ready for
`materialize(..., instance=...)`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import DagsterInstance

from .postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = ROOT / "deploy"
DAGSTER_CLI = str(Path(sys.executable).with_name("dagster"))


@dataclass
class PgDeployment:
    home: Path  # DAGSTER_HOME, holding a copy of deploy/dagster.yaml
    dagster_db_url: str  # postgresql+psycopg2://...?host=<socket dir> (unix socket)
    app_db_url: str  # migrated v2 schema, same server
    env: dict[str, str]  # what the processes of a deployment see

    def dagster(self, *args: str) -> subprocess.CompletedProcess:
        """Run the `dagster` CLI against this instance; raise with its output if it fails."""
        result = subprocess.run(
            [DAGSTER_CLI, *args], env=self.env, cwd=ROOT, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise AssertionError(
                f"dagster {' '.join(args)} exited with {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def migrate(self) -> subprocess.CompletedProcess:
        return self.dagster("instance", "migrate")


def _url(url) -> str:
    rendered = url.render_as_string(hide_password=False)
    assert rendered.startswith("postgresql+psycopg2://"), rendered
    return rendered


@pytest.fixture
def pg_deployment(pg_server: PostgresServer, tmp_path, monkeypatch) -> Iterator[PgDeployment]:
    dagster_db = pg_server.create_database(migrated=False)
    app_db = pg_server.create_database()
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY_DIR / "dagster.yaml", home / "dagster.yaml")
    variables = {
        "DAGSTER_HOME": str(home),
        "DAGSTER_POSTGRES_URL": _url(dagster_db),
        "DATABASE_URL": _url(app_db),
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    yield PgDeployment(
        home=home,
        dagster_db_url=variables["DAGSTER_POSTGRES_URL"],
        app_db_url=variables["DATABASE_URL"],
        env=env,
    )
    pg_server.drop_database(app_db)
    pg_server.drop_database(dagster_db)


@pytest.fixture
def pg_dagster_instance(pg_deployment: PgDeployment) -> Iterator[DagsterInstance]:
    """The instance configured by deploy/dagster.yaml, after `dagster instance migrate`."""
    pg_deployment.migrate()
    with DagsterInstance.get() as instance:
        yield instance
