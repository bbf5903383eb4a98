"""The adaptive quota: how much of a server's quota a batch uses, and how many 429s it costs;
alone, and shared by three processes through the app database.

The loopback fake server (its own process) enforces 60 requests per 2 s window (1,800 a
minute: OpenAI's 60 a minute, 30 times faster) and reports the quota in OpenAI's
`x-ratelimit-*` headers. No client-side RPM is configured (concurrency 16). Figures: calls
completed per minute, over the whole quota windows the calls spanned, / the server's quota
per minute (the baseline), with the 429s they cost per window; every call must succeed.

1. One process, 360 calls through `InferenceService.run_batch` (in-process limits).
2. Three processes, 200 calls each, started together, each with `SharedProviderLimits` on one
   app database (SQLite, then PostgreSQL); and, for contrast, the same three with limits of
   their own (each learns the quota alone and spends it as if it were its only user).
3. The cost of sharing: 2,000 calls with no quota, concurrency 16, through shared limits on
   SQLite / PostgreSQL vs in-process limits (the baseline), with the database transactions
   ("rounds") the shared limits ran.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from study_query_dagster.db import DatabaseConnection
from study_query_dagster.providers import OpenAIProvider
from study_query_dagster.services import InferenceService, ProviderLimits, SharedProviderLimits

from .support import ROOT, fake_server, ratio_line

QUOTA = 60
WINDOW_S = 2.0
CALLS = 360
CONCURRENCY = 16
LATENCY_S = 0.02
PROCESSES = 3
CALLS_EACH = 200
OVERHEAD_CALLS = 2000


async def batch(base_url: str) -> tuple[float, list[dict]]:
    provider = OpenAIProvider("sk-bench", "gpt-4o-mini", base_url=base_url, timeout=60)
    service = InferenceService(provider, None, max_concurrency=CONCURRENCY, close_provider=True)
    async with service:
        started = time.perf_counter()
        results = await service.run_batch([f"quota question {i}" for i in range(CALLS)])
        return time.perf_counter() - started, results


def utilisation(label: str, calls: int, elapsed: float, refused: int) -> str:
    # Over the whole windows the calls spanned: a last window that is only begun would
    # otherwise count as if its quota had been used in a fraction of its time.
    windows = math.ceil(elapsed / WINDOW_S)
    per_minute = calls / (windows * WINDOW_S) * 60
    return ratio_line(
        label,
        per_minute,
        QUOTA * 60 / WINDOW_S,
        "calls/min",
        f"(baseline: the server's quota; 0 calls lost, {refused} 429s in {windows} windows, "
        f"{refused / windows:.1f} per window; target: ratio >= 0.9, <= 3 429s per window)",
    )


def one_process(base_url: str) -> str:
    elapsed, results = asyncio.run(batch(base_url))
    succeeded = sum(r["status"] == "success" for r in results)
    assert succeeded == CALLS, f"{CALLS - succeeded} calls lost"
    refused = sum(
        a["type"] == "rate_limit" for r in results for a in r["metadata"].get("attempt_errors", [])
    )
    return utilisation(
        f"quota utilisation: {CALLS} calls, one process, server quota {QUOTA} per {WINDOW_S:g} s",
        succeeded,
        elapsed,
        refused,
    )


def processes(db_url: str, base_url: str, mode: str) -> tuple[int, float, int]:
    """(calls succeeded, seconds from the start signal to the last call's end, 429s met)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = [sys.executable, "-m", "tests.support.quota_worker", db_url, base_url]
    procs = [
        subprocess.Popen(
            [*worker, str(CALLS_EACH), f"{mode}{i}", str(CONCURRENCY), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for i in range(PROCESSES)
    ]
    for proc in procs:  # every process is ready (imports done) before any starts
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    reports = [json.loads(proc.communicate(timeout=600)[0].splitlines()[-1]) for proc in procs]
    # Each process times its own batch from the signal: the longest is when the last call
    # ended (its exit and report are not the quota's time).
    elapsed = max(r["elapsed_s"] for r in reports)
    succeeded = sum(r["succeeded"] for r in reports)
    assert succeeded == PROCESSES * CALLS_EACH, f"{PROCESSES * CALLS_EACH - succeeded} calls lost"
    return succeeded, elapsed, sum(r["rate_limited"] for r in reports)


def shared_processes(label: str, db_url: str, base_url: str) -> Iterator[str]:
    for mode, how in (("shared", "shared through the app DB"), ("local", "each on its own")):
        calls, elapsed, refused = processes(db_url, base_url, mode)
        yield utilisation(
            f"quota utilisation: {PROCESSES} processes x {CALLS_EACH} calls, {how} ({label})",
            calls,
            elapsed,
            refused,
        )


async def overhead_run(db: DatabaseConnection, base_url: str, shared: bool, tag: str):
    limits = (
        SharedProviderLimits(db, f"openai@overhead-{tag}", CONCURRENCY)
        if shared
        else ProviderLimits(CONCURRENCY)
    )
    provider = OpenAIProvider("sk-bench", "gpt-4o-mini", base_url=base_url, timeout=60)
    service = InferenceService(provider, db, limits=limits, close_provider=True)
    async with service:
        started = time.perf_counter()
        results = await service.run_batch([f"{tag} overhead {i}" for i in range(OVERHEAD_CALLS)])
        elapsed = time.perf_counter() - started
    assert all(r["status"] == "success" for r in results)
    return elapsed, getattr(limits, "rounds", 0)


def overhead(label: str, db: DatabaseConnection, base_url: str) -> str:
    shared_s, local_s, rounds = [], [], 0
    for i in range(2):  # alternating; the best of each counts
        elapsed, rounds = asyncio.run(overhead_run(db, base_url, True, f"s{i}"))
        shared_s.append(elapsed)
        local_s.append(asyncio.run(overhead_run(db, base_url, False, f"l{i}"))[0])
    ours, baseline = min(shared_s), min(local_s)
    return ratio_line(
        f"shared quota overhead: {OVERHEAD_CALLS:,} calls @ {LATENCY_S * 1000:.0f} ms, "
        f"concurrency {CONCURRENCY}, {label}",
        OVERHEAD_CALLS / ours,
        OVERHEAD_CALLS / baseline,
        "calls/s",
        f"(baseline: in-process limits; {rounds:,} database rounds for {OVERHEAD_CALLS:,} "
        f"calls, {OVERHEAD_CALLS / max(rounds, 1):.1f} calls per round)",
    )


@contextmanager
def databases() -> Iterator[list[tuple[str, str]]]:
    """(label, URL) of a migrated SQLite file, then of an embedded PostgreSQL database."""
    from tests.support.postgres import PostgresServer

    with tempfile.TemporaryDirectory(prefix="sqd-bench-quota-") as tmp:
        sqlite = f"sqlite:///{Path(tmp) / 'app.db'}"
        DatabaseConnection(sqlite).init_db()
        server = PostgresServer.start()
        try:
            url = server.create_database()
            yield [("SQLite", sqlite), ("PostgreSQL", url.render_as_string(hide_password=False))]
            server.drop_database(url)
        finally:
            server.stop()


def run():
    with fake_server(LATENCY_S, QUOTA, WINDOW_S) as base_url:
        yield one_process(base_url)
    with databases() as dbs:
        for label, url in dbs:
            with fake_server(LATENCY_S, QUOTA, WINDOW_S) as base_url:
                yield from shared_processes(label, url, base_url)
        with fake_server(LATENCY_S) as base_url:
            for label, url in dbs:
                db = DatabaseConnection(url)
                yield overhead(label, db, base_url)
                db.dispose()
