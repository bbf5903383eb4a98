"""A clock that tests move by hand, for limiters that read time from a `Clock`: what a limiter
does is then the same on a busy machine as on an idle one.

By default a wait moves the clock to its end (time "passes" only while someone waits; waits
that overlap end together). With `auto=False` a wait blocks until the test calls `advance()` past its end,
so a test can look at who is waiting before any time passes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from study_query_dagster.services.inference import Clock


class ManualClock:
    def __init__(self, start: float = 0.0, *, auto: bool = True):
        self.time = start
        self.auto = auto
        self.sleeps: list[float] = []  # every wait a limiter asked for, in order
        self._moved = asyncio.Condition() if not auto else None

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> Awaitable[None]:
        # The end is fixed when the wait is asked for (not when its task first runs), as
        # with a real clock that keeps running.
        self.sleeps.append(seconds)
        return self._until(self.time + max(seconds, 0.0))

    async def _until(self, until: float) -> None:
        if self.auto:
            # Waits that overlap end together, as they would in real time.
            self.time = max(self.time, until)
            await asyncio.sleep(0)  # let other tasks run, as a real wait would
            return
        assert self._moved is not None
        async with self._moved:
            await self._moved.wait_for(lambda: self.time >= until)

    async def advance(self, seconds: float) -> None:
        """Move time forward (waking the waits it ends, with auto=False)."""
        self.time += seconds
        if self._moved is not None:
            async with self._moved:
                self._moved.notify_all()
        await asyncio.sleep(0)

    @property
    def clock(self) -> Clock:
        return Clock(self.now, self.sleep)

    @property
    def waited(self) -> float:
        return sum(self.sleeps)
