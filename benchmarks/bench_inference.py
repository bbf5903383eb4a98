"""`InferenceService.run_batch` with capture to SQLite vs a plain client loop.

2000 chat calls against the loopback fake server (its own process, 50 ms latency per request),
concurrency 64. Baseline, measured in the same run on the same server: `AsyncOpenAI` (SDK
retries off) + `asyncio.Semaphore(64)`, no capture. Ours adds request hashing, dedup, retry
bookkeeping and a durable raw_calls row per call. Each side runs three times, alternating; the
best run of each counts. Also printed: efficiency against the ideal N x latency / concurrency,
and CPU time per call in this process (the SDK's own cost dominates both sides, and on a busy
machine the wall-clock ratio follows the CPU ratio).
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import func, select

from study_query_dagster.db import RawCall
from study_query_dagster.providers import OpenAIProvider
from study_query_dagster.services import InferenceService

from .support import fake_server, ratio_line, sqlite_database

N = 2000
CONCURRENCY = 64
LATENCY_S = 0.050
ROUNDS = 3


def prompts(tag: str) -> list[str]:
    return [f"{tag} question number {i}: what is {i} + {i}?" for i in range(N)]


def measured(coro) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for one run of `coro` in a fresh loop."""
    cpu = time.process_time()
    wall = asyncio.run(coro)
    return wall, time.process_time() - cpu


async def plain_loop(base_url: str, tag: str) -> float:
    import openai

    client = openai.AsyncOpenAI(api_key="sk-bench", base_url=base_url, max_retries=0, timeout=60)
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(prompt: str) -> str:
        async with semaphore:
            reply = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
            )
            return reply.choices[0].message.content

    started = time.perf_counter()
    answers = await asyncio.gather(*(one(p) for p in prompts(tag)))
    elapsed = time.perf_counter() - started
    assert len(answers) == N and all(answers)
    await client.close()
    return elapsed


async def with_service(base_url: str, db, tag: str) -> float:
    provider = OpenAIProvider("sk-bench", "gpt-4o-mini", base_url=base_url, timeout=60)
    service = InferenceService(provider, db, max_concurrency=CONCURRENCY)
    started = time.perf_counter()
    results = await service.run_batch(prompts(tag))
    elapsed = time.perf_counter() - started
    assert all(r["status"] == "success" for r in results)
    await provider.aclose()
    return elapsed


def run():
    ideal = N * LATENCY_S / CONCURRENCY
    with fake_server(LATENCY_S) as base_url, sqlite_database() as db:
        asyncio.run(plain_loop_warmup(base_url))
        plain, ours = [], []
        for round_number in range(ROUNDS):
            plain.append(measured(plain_loop(base_url, f"plain{round_number}")))
            ours.append(measured(with_service(base_url, db, f"ours{round_number}")))
        with db.session_scope() as session:
            stored = session.scalar(select(func.count()).select_from(RawCall))
        assert stored == N * ROUNDS, f"expected {N * ROUNDS} captured rows, found {stored}"
    best_plain, best_ours = min(w for w, _ in plain), min(w for w, _ in ours)
    cpu_plain, cpu_ours = min(c for _, c in plain) / N, min(c for _, c in ours) / N
    yield ratio_line(
        f"run_batch {N:,} calls @ {LATENCY_S * 1000:.0f} ms, concurrency {CONCURRENCY}, "
        "capture to SQLite",
        best_ours * 1000, best_plain * 1000, "ms",
        "(baseline: AsyncOpenAI + Semaphore, no capture; target <= 1.10)",
    )  # fmt: skip
    yield (
        f"efficiency vs ideal N x latency / concurrency ({ideal * 1000:,.0f} ms): "
        f"run_batch {ideal / best_ours:.2f}, baseline {ideal / best_plain:.2f}"
    )
    yield (
        f"CPU per call in the client process: run_batch {cpu_ours * 1000:.2f} ms vs baseline "
        f"{cpu_plain * 1000:.2f} ms -> ratio {cpu_ours / cpu_plain:.2f}"
    )


async def plain_loop_warmup(base_url: str) -> None:
    """Open connections and import the SDK once, outside the measured runs."""
    import openai

    client = openai.AsyncOpenAI(api_key="sk-bench", base_url=base_url, max_retries=0)
    await asyncio.gather(*(
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        for _ in range(CONCURRENCY)
    ))  # fmt: skip
    await client.close()
