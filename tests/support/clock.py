"""A clock that tests move by hand, for limiters that read time from a `Clock`: a wait
advances the clock by exactly what was asked, so what a limiter does is the same on a busy
machine as on an idle one."""

from __future__ import annotations

import asyncio

from study_query_dagster.services.inference import Clock


class ManualClock:
    def __init__(self, start: float = 0.0):
        self.time = start
        self.sleeps: list[float] = []  # every wait a limiter asked for, in order

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time += max(seconds, 0.0)
        await asyncio.sleep(0)  # let other tasks run, as a real wait would

    def advance(self, seconds: float) -> None:
        self.time += seconds

    @property
    def clock(self) -> Clock:
        return Clock(self.now, self.sleep)

    @property
    def waited(self) -> float:
        return sum(self.sleeps)
