"""Shared benchmark helpers: databases to measure against and a timer."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from study_query_dagster.db import DatabaseConnection

ROOT = Path(__file__).resolve().parent.parent

_SERVER = (
    "import sys\n"
    "from tests.support.fake_llm_server import FakeLLMServer, Quota\n"
    "server = FakeLLMServer(latency_s=float(sys.argv[1])).start()\n"
    "if int(sys.argv[2]):\n"
    "    server.quota = Quota(requests=int(sys.argv[2]), window_s=float(sys.argv[3]))\n"
    "print(server.port, flush=True)\n"
    "sys.stdin.read()\n"  # runs until the benchmark closes our stdin
)


@contextmanager
def fake_server(latency_s: float, quota: int = 0, window_s: float = 1.0) -> Iterator[str]:
    """The loopback fake LLM server in its own process (its threads do not share our GIL),
    enforcing `quota` requests per `window_s` when given; yields its OpenAI base URL."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-c", _SERVER, str(latency_s), str(quota), str(window_s)]
    proc = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env
    )
    try:
        yield f"http://127.0.0.1:{int(proc.stdout.readline())}/v1"
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


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


def bench_resources(
    db_url: str, prompt_dir: Path, base_url: str, *, concurrency: int, embedder: str | None = None
) -> dict:
    """The code location's resources (`build_resources`, as in production: shared quotas
    included) with the loopback server as OpenAI and nothing read from the environment."""
    from study_query_dagster.resources import build_resources
    from tests.support.pipeline import SettingsForTest

    values = {
        "DATABASE_URL": db_url,
        "PROMPT_SETS_DIR": prompt_dir,
        "EXPORTS_DIR": prompt_dir / "exports",
        "REPORTS_DIR": prompt_dir / "reports",
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": base_url,
        "OPENAI_MAX_CONCURRENCY": concurrency,
    }
    if embedder:
        values["EMBEDDING_PROVIDER"] = embedder
    return build_resources(SettingsForTest(**values))


def truncate_postgres(db: DatabaseConnection, tables: str) -> None:
    """TRUNCATE `tables` (and what references them) in a throw-away benchmark database. The
    append-only tables refuse TRUNCATE by trigger; replica mode (the superuser's, as pgserver's
    is) fires no ordinary trigger, whichever append-only tables the cascade reaches."""
    with db.engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        conn.exec_driver_sql(f"TRUNCATE {tables} CASCADE")


def ratio_line(label: str, value: float, baseline: float, unit: str, note: str = "") -> str:
    ratio = value / baseline if baseline else float("nan")
    extra = f"  {note}" if note else ""
    return f"{label}: {value:,.0f} {unit} vs baseline {baseline:,.0f} {unit} -> ratio {ratio:.2f}{extra}"
