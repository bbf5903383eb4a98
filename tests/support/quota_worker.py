"""One process of the shared-quota drills and benchmark: N calls through `InferenceService`
with `SharedProviderLimits` on the given app database, against the given OpenAI-compatible
server, started when the parent writes a line to our stdin (so every process starts together).

    python -m tests.support.quota_worker DB_URL BASE_URL CALLS LABEL MAX_CONCURRENCY [SHARED]

Prints one JSON line: calls that succeeded, failed, and the 429s the attempts met.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from study_query_dagster.db import DatabaseConnection
from study_query_dagster.providers import OpenAIProvider
from study_query_dagster.services import InferenceService, ProviderLimits, SharedProviderLimits


async def main(db_url: str, base_url: str, calls: int, label: str, concurrency: int, shared: bool):
    db = DatabaseConnection(db_url)
    if shared:
        limits = SharedProviderLimits(db, "openai@quota-drill", concurrency)
    else:
        limits = ProviderLimits(concurrency)
    provider = OpenAIProvider("sk-quota-drill", "gpt-4o-mini", base_url=base_url, timeout=60)
    service = InferenceService(
        provider, db, limits=limits, max_retries=8, initial_wait=0.05, close_provider=True
    )
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    async with service:
        results = await service.run_batch([f"{label} question {i}" for i in range(calls)])
    elapsed = time.perf_counter() - started
    db.dispose()
    rate_limited = sum(
        a["type"] == "rate_limit" for r in results for a in r["metadata"].get("attempt_errors", [])
    )
    print(
        json.dumps(
            {
                "succeeded": sum(r["status"] == "success" for r in results),
                "failed": sum(r["status"] != "success" for r in results),
                "rate_limited": rate_limited,
                "elapsed_s": elapsed,
                "rounds": getattr(limits, "rounds", 0),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    db_url, base_url, calls, label, concurrency = sys.argv[1:6]
    shared = sys.argv[6] != "local" if len(sys.argv) > 6 else True
    asyncio.run(main(db_url, base_url, int(calls), label, int(concurrency), shared))
