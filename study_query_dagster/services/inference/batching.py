"""Many calls at once: a pool of workers runs a batch's requests with bounded concurrency and
returns their outcomes in input order (`run_pool`), or takes them from a stream and keeps
nothing (`stream_pool`); a batch that cannot go on stops every worker."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
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

    async def keep(i: int, item: Item) -> None:
        results[i] = await call(i, item)

    await stream_pool(items, min(len(items), workers), keep)
    return results  # type: ignore[return-value]


async def stream_pool(
    items: Iterable[Item], workers: int, call: Callable[[int, Item], Awaitable[object]]
) -> None:
    """`call(i, item)` for every item of `items` (any iterable, read as workers reach it),
    `workers` at a time; results are not kept, so a stream of any length runs in flat memory.
    Stops like `run_pool`."""
    todo = iter(enumerate(items))

    async def worker() -> None:
        # Several workers share one iterator: next() runs to completion between awaits.
        for i, item in todo:
            await call(i, item)

    tasks = [asyncio.ensure_future(worker()) for _ in range(workers)]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
