"""Wait until concurrent identical calls have joined one in-flight call, so a test that holds
the server's answer back (`FakeLLMServer.hold`) releases it only once the race is set up,
instead of hoping server latency outlasts the callers' start-up."""

from __future__ import annotations

import asyncio

from study_query_dagster.services import InferenceService


def callers_waiting(service: InferenceService) -> list[int]:
    """How many callers wait on each call `service` has in flight (its dedup table)."""
    return sorted(shared.waiters for shared in service._inflight._calls.values())


async def until_joined(service: InferenceService, callers: int, tasks=()) -> None:
    """Yield to the event loop until `callers` callers wait on one in-flight call of
    `service` (no deadline: a hang fails the run, not a timer)."""
    while callers not in callers_waiting(service):
        for task in tasks:
            if task.done():
                task.result()  # surface its error
                raise AssertionError("a caller finished before the callers joined")
        await asyncio.sleep(0.005)
