"""The backup and restore procedures of docs/DEPLOYMENT.md, run for real: pg_dump/pg_restore of the
PostgreSQL app database (with pgvector and the append-only triggers) and SQLite's backup API."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from study_query_dagster.db import DatabaseConnection, RawCallRepository, VectorStore


def _fill(db: DatabaseConnection) -> None:
    with db.session_scope() as session:
        repo = RawCallRepository(session)
        vectors = VectorStore(session)
        ids = repo.insert_raw_calls(
            [
                {"provider": "offline", "model": "m", "status": status, "request_json": {"i": i}}
                for i, status in enumerate(["success", "failed", "success", "timeout"])
            ]
        )
        vectors.insert_embedding_vectors(
            [{"call_id": ids[0], "model": "e", "vector": [1.0, 0.0, 0.0]}]
            + [{"call_id": ids[2], "model": "e", "vector": [0.0, 1.0, 0.0]}]
        )


def _check_restored(db: DatabaseConnection) -> None:
    with db.session_scope() as session:
        repo = RawCallRepository(session)
        vectors = VectorStore(session)
        assert repo.count_raw_calls() == 4
        (nearest, distance), _ = vectors.nearest_embeddings([0.9, 0.1, 0.0], k=2)
        assert np.allclose(nearest.vector, [1.0, 0.0, 0.0]) and distance < 0.1
    # The append-only guarantee comes back with the data.
    with pytest.raises(DatabaseError, match="append-only"), db.engine.begin() as conn:
        conn.execute(text("UPDATE raw_calls SET status = 'success'"))
    db.init_db()  # already at head: upgrading a restored database is a no-op


def _pg_tool(name: str) -> str:
    try:
        import pgserver

        bundled = Path(pgserver.__file__).parent / "pginstall" / "bin" / name
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} not available")
    return found


def _libpq(url) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def test_pg_dump_and_pg_restore_round_trip(pg_db, pg_server, tmp_path):
    _fill(pg_db)
    dump = tmp_path / "study.dump"
    subprocess.run(
        [_pg_tool("pg_dump"), "--format=custom", f"--file={dump}", _libpq(pg_db.url)], check=True
    )

    target_url = pg_server.create_database(migrated=False)
    try:
        subprocess.run(
            [_pg_tool("pg_restore"), "--no-owner", "--exit-on-error",
             f"--dbname={_libpq(target_url)}", str(dump)],
            check=True,
        )  # fmt: skip
        restored = DatabaseConnection(target_url)
        try:
            _check_restored(restored)
        finally:
            restored.dispose()
    finally:
        pg_server.drop_database(target_url)


def _backup_command(tool: str, source: Path, backup: Path) -> list[str]:
    """The two commands DEPLOYMENT.md gives; both use SQLite's online backup API."""
    if tool == "sqlite3":
        shell = shutil.which("sqlite3")
        if not shell:
            pytest.skip("the sqlite3 shell is not installed")
        return [shell, str(source), f".backup '{backup}'"]
    code = f"import sqlite3; sqlite3.connect('{source}').backup(sqlite3.connect('{backup}'))"
    return [sys.executable, "-c", code]


@pytest.mark.parametrize("tool", ["sqlite3", "python"])
def test_sqlite_online_backup_while_the_database_is_open(tool, sqlite_db, tmp_path):
    _fill(sqlite_db)
    source = Path(sqlite_db.url.database)
    backup = tmp_path / "study-backup.db"
    # The app's own connection stays open, as it would during a run; recent commits are still
    # in the -wal file, which a plain file copy would miss.
    with sqlite_db.engine.connect():
        assert Path(f"{source}-wal").stat().st_size > 0
        subprocess.run(_backup_command(tool, source, backup), check=True)
    with sqlite3.connect(backup) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    restored = DatabaseConnection(f"sqlite:///{backup}")
    try:
        _check_restored(restored)
    finally:
        restored.dispose()
