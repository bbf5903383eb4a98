"""Token buckets for requests-per-minute and tokens-per-minute limits, and `ProviderLimits`:
the buckets and the concurrency limit that several services calling one provider share.

Hand-written rather than a library because tokens-per-minute needs debt: a request reserves
an estimate before it is sent and is charged the real usage afterwards, which may push the
bucket below zero so that later requests wait for the overdraft to refill.

A bucket reads time from its `Clock` (monotonic time and an async sleep), so tests can drive it
with a clock of their own instead of depending on how fast the machine is.
"""

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


class TokenBucket:
    """`rate_per_minute` units refill continuously; at most `capacity` are banked (default:
    one second's worth, so a burst never exceeds the per-minute limit by more than 1/60)."""

    def __init__(
        self, rate_per_minute: float, capacity: float | None = None, *, clock: Clock = SYSTEM_CLOCK
    ):
        if rate_per_minute is None or rate_per_minute <= 0:
            raise ValueError(f"a rate limit must be positive (got {rate_per_minute!r})")
        self.rate_per_minute = float(rate_per_minute)
        self.rate = self.rate_per_minute / 60.0
        self.capacity = float(capacity) if capacity else max(1.0, self.rate)
        self.clock = clock
        self._level = self.capacity
        self._updated = clock.now()
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self.waited_s = 0.0  # total time callers spent waiting, for reports

    def _refill(self) -> None:
        now = self.clock.now()
        self._level = min(self.capacity, self._level + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self, amount: float = 1.0) -> float:
        """Take `amount` units (capped at capacity), waiting first-come first-served.
        Returns the amount taken."""
        amount = min(max(float(amount), 0.0), self.capacity)
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:  # a lock belongs to one loop
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            while True:
                self._refill()
                # The epsilon absorbs float rounding, which could otherwise ask for a wait
                # shorter than the clock can represent.
                if self._level >= amount - 1e-9:
                    self._level -= amount
                    return amount
                delay = (amount - self._level) / self.rate
                self.waited_s += delay
                await self.clock.sleep(delay)

    def adjust(self, delta: float) -> None:
        """Charge `delta` more units (negative refunds) after the real usage is known."""
        self._refill()
        self._level = min(self.capacity, self._level - delta)


class ProviderLimits:
    """Concurrency and RPM/TPM limits for one provider, shared by every `InferenceService`
    given the same instance (e.g. all targets of a run that call that provider), so two
    models on one account do not get twice the account's limits."""

    def __init__(
        self,
        max_concurrency: int,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1 (got {max_concurrency})")
        self.max_concurrency = max_concurrency
        self.clock = clock
        self.rpm = TokenBucket(requests_per_minute, clock=clock) if requests_per_minute else None
        self.tpm = TokenBucket(tokens_per_minute, clock=clock) if tokens_per_minute else None
        self._semaphore: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def semaphore(self) -> asyncio.Semaphore:
        """The concurrency limit for the running event loop."""
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._loop is not loop:
            self._semaphore, self._loop = asyncio.Semaphore(self.max_concurrency), loop
        return self._semaphore
