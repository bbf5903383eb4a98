"""Dedup of identical in-flight requests: concurrent callers with the same request hash share
one provider call and one raw_calls row; each gets the result, and the calls that joined add
their own group memberships to that row."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable

from .capture import Membership
from .records import Outcome
from .requests import ChatRequest

Execute = Callable[[ChatRequest, list[Membership]], Awaitable[Outcome]]
Join = Callable[[int, list[Membership]], Awaitable[object]]


class _Shared:
    """An in-flight call that identical concurrent requests wait on together."""

    def __init__(self, task: asyncio.Task, memberships: list[Membership]):
        self.task = task
        self.group_ids = {m.group_id for m in memberships}
        self.waiters = 0


class InflightCalls:
    """The calls in flight on one event loop, by (request hash, cache flag)."""

    def __init__(self):
        self._calls: dict[tuple[str, bool], _Shared] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(
        self, request: ChatRequest, memberships: list[Membership], execute: Execute, join: Join
    ) -> Outcome:
        """`execute(request, memberships)` makes and captures the call, unless an identical
        one is in flight; a caller that joins one adds its memberships with `join`.
        (Passed per call, not held: the service owning this object would otherwise be in a
        reference cycle and keep its capture thread alive until the garbage collector ran.)"""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # tasks belong to one loop; Dagster runs one per step
            self._loop, self._calls = loop, {}
        key = (request.request_hash, request.cache)
        shared = self._calls.get(key)
        owner = shared is None
        if shared is None:
            task = asyncio.ensure_future(execute(request, memberships))
            shared = self._calls[key] = _Shared(task, memberships)
            task.add_done_callback(lambda _t, k=key, s=shared: self._forget(k, s))
        shared.waiters += 1
        try:
            outcome: Outcome = await asyncio.shield(shared.task)
        except asyncio.CancelledError:
            shared.waiters -= 1
            if shared.waiters == 0 and not shared.task.done():
                # The last one waiting is gone: stop the call and let it record itself.
                shared.task.cancel()
                await asyncio.wait([shared.task])
            raise
        shared.waiters -= 1
        if owner:
            return outcome
        result = copy.deepcopy(outcome.result)
        result["metadata"]["deduplicated"] = True
        call_id = result["id"]
        extra = [m for m in memberships if m.group_id not in shared.group_ids]
        if extra and call_id is not None:
            await join(call_id, extra)
        return Outcome(result, outcome.error)

    def _forget(self, key: tuple[str, bool], shared: _Shared) -> None:
        if self._calls.get(key) is shared:
            del self._calls[key]
