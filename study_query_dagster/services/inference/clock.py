"""`Clock`: where a limiter reads the time and how it waits (monotonic time and an async sleep),
so tests can drive limiters with a clock of their own instead of the machine's speed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Clock:
    """Where a limiter reads the time and how it waits."""

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


SYSTEM_CLOCK = Clock()

# Time that processes on several machines agree on (their clocks kept in sync, e.g. by NTP):
# what quotas shared through the database are measured in.
WALL_CLOCK = Clock(time.time, asyncio.sleep)
