"""The adaptive quota: how much of a server's quota a batch uses, and how many 429s it costs.

The loopback fake server (its own process) enforces 60 requests per 2 s window (1,800 a
minute: OpenAI's 60 a minute, 30 times faster) and reports the quota in OpenAI's
`x-ratelimit-*` headers. 360 calls through `InferenceService.run_batch` with no client-side
limit configured (concurrency 16). The figure is calls completed per minute, over the whole
quota windows the batch spanned, / the server's quota per minute (the baseline, from the same
server), with the 429s it cost per window; every call must succeed.
"""

from __future__ import annotations

import asyncio
import math
import time

from study_query_dagster.providers import OpenAIProvider
from study_query_dagster.services import InferenceService

from .support import fake_server, ratio_line

QUOTA = 60
WINDOW_S = 2.0
CALLS = 360
CONCURRENCY = 16
LATENCY_S = 0.02


async def batch(base_url: str) -> tuple[float, list[dict]]:
    provider = OpenAIProvider("sk-bench", "gpt-4o-mini", base_url=base_url, timeout=60)
    service = InferenceService(provider, None, max_concurrency=CONCURRENCY, close_provider=True)
    async with service:
        started = time.perf_counter()
        results = await service.run_batch([f"quota question {i}" for i in range(CALLS)])
        return time.perf_counter() - started, results


def run():
    with fake_server(LATENCY_S, QUOTA, WINDOW_S) as base_url:
        elapsed, results = asyncio.run(batch(base_url))
    succeeded = sum(r["status"] == "success" for r in results)
    assert succeeded == CALLS, f"{CALLS - succeeded} calls lost"
    refused = sum(
        a["type"] == "rate_limit" for r in results for a in r["metadata"].get("attempt_errors", [])
    )
    # Over the whole windows the batch spanned: a last window that is only begun would
    # otherwise count as if its quota had been used in a fraction of its time.
    windows = math.ceil(elapsed / WINDOW_S)
    per_minute = succeeded / (windows * WINDOW_S) * 60
    quota_per_minute = QUOTA * 60 / WINDOW_S
    yield ratio_line(
        f"quota utilisation: {CALLS} calls, no client limit, server quota {QUOTA} per "
        f"{WINDOW_S:g} s",
        per_minute,
        quota_per_minute,
        "calls/min",
        f"(baseline: the server's quota; 0 calls lost, {refused} 429s in {windows} windows, "
        f"{refused / windows:.1f} per window; target: ratio near 1, <= 3 429s per window)",
    )
