"""Many calls at once: a pool of workers runs a batch's requests with bounded concurrency and
returns their outcomes in input order; a batch that cannot go on stops every worker."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class BatchResults(list):
    """Results in input order; `group_id` is the group the calls were added to (None without
    a database)."""

    group_id: int | None = None


async def run_pool(
    items: Sequence[Item],
    workers: int,
    call: Callable[[int, Item], Awaitable[Result]],
) -> list[Result]:
    """`call(i, item)` for every item, `workers` at a time; results in input order.

    A pool of workers rather than one task per item keeps a 100k-item batch at a few hundred
    live tasks. If the pool is cancelled, or a call raises (e.g. its row could not be
    captured), every other worker is stopped before the error propagates, so that no call is
    sent after the batch has given up; items no worker had reached are never called."""
    results: list[Result | None] = [None] * len(items)
    todo = iter(enumerate(items))

    async def worker() -> None:
        for i, item in todo:
            results[i] = await call(i, item)

    tasks = [asyncio.ensure_future(worker()) for _ in range(min(len(items), workers))]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return results  # type: ignore[return-value]
