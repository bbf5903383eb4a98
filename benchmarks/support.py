"""Shared benchmark helpers: databases to measure against and a timer."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from study_query_dagster.db import DatabaseConnection


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


@contextmanager
def sqlite_database() -> Iterator[DatabaseConnection]:
    with tempfile.TemporaryDirectory(prefix="sqd-bench-") as tmp:
        db = DatabaseConnection(f"sqlite:///{Path(tmp) / 'bench.db'}")
        db.init_db()
        yield db
        db.dispose()


@contextmanager
def postgres_database() -> Iterator[DatabaseConnection]:
    """BENCH_DATABASE_URL if set (its database is used as is), else an embedded pgserver."""
    from tests.support.postgres import PostgresServer

    external = os.environ.get("BENCH_DATABASE_URL")
    if external:
        db = DatabaseConnection(external)
        db.init_db()
        yield db
        db.dispose()
        return
    server = PostgresServer.start()
    try:
        url = server.create_database()
        db = DatabaseConnection(url)
        yield db
        db.dispose()
        server.drop_database(url)
    finally:
        server.stop()


def ratio_line(label: str, value: float, baseline: float, unit: str, note: str = "") -> str:
    ratio = value / baseline if baseline else float("nan")
    extra = f"  {note}" if note else ""
    return f"{label}: {value:,.0f} {unit} vs baseline {baseline:,.0f} {unit} -> ratio {ratio:.2f}{extra}"
