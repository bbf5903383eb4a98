"""Token buckets for requests-per-minute and tokens-per-minute limits, and `ProviderLimits`:
the buckets and the concurrency limit that several services calling one provider in one process
share. (`SharedProviderLimits`, in shared_limits.py, holds the same limits for every process
through the database.) Both hand out a `Permit` per attempt (`acquire`), given back with what
the answer said (`release`).

Hand-written rather than a library because tokens-per-minute needs debt: a request reserves
an estimate before it is sent and is charged the real usage afterwards, which may push the
bucket below zero so that later requests wait for the overdraft to refill.

Limiters read time from a `Clock`, so tests can drive them with a clock of their own instead of
depending on how fast the machine is.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from ...providers.headers import RateLimit
from .clock import SYSTEM_CLOCK, Clock
from .quota import QuotaGate


class Permit(Protocol):
    """One attempt's admission: a concurrency slot, its RPM/TPM units and its place in the
    model's quota, held until `release`."""

    def release(
        self,
        tokens_used: int | None = None,
        rate_limit: RateLimit | None = None,
        *,
        rate_limited: bool = False,
        retry_after: float | None = None,
    ) -> None:
        """The attempt is over: answered (`tokens_used` it really cost, the quota the answer
        reported), refused with a 429 (`rate_limited`, with the server's Retry-After), or
        abandoned (nothing known)."""


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
    models on one account do not get twice the account's limits; and the adaptive quota
    gates (`quota(model)`) that the server's rate-limit headers and 429s steer."""

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
        self._quotas: dict[str | None, QuotaGate] = {}

    def quota(self, model: str | None) -> QuotaGate:
        """The adaptive quota of `model` at this provider (OpenAI and Azure count quotas per
        model or deployment)."""
        gate = self._quotas.get(model)
        if gate is None:
            gate = self._quotas[model] = QuotaGate(self.clock)
        return gate

    @property
    def quotas(self) -> dict[str | None, QuotaGate]:
        return dict(self._quotas)

    async def acquire(self, model: str | None, tokens: float) -> Permit:
        """Wait for a concurrency slot, then the RPM/TPM units of one request of `tokens`
        (estimated), then room in `model`'s quota. The slot is held while waiting for the
        rest, as the calls in flight decide when the quota has room again."""
        semaphore = self.semaphore()
        await semaphore.acquire()
        try:
            if self.rpm is not None:
                await self.rpm.acquire(1)
            reserved = await self.tpm.acquire(tokens) if self.tpm else 0.0
            gate = self.quota(model)
            counted = await gate.admit(tokens)
        except BaseException:
            semaphore.release()
            raise
        return _LocalPermit(self, semaphore, gate, reserved, counted)

    async def drain(self) -> None:
        """Nothing to write: the limits live in this process."""

    def semaphore(self) -> asyncio.Semaphore:
        """The concurrency limit for the running event loop."""
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._loop is not loop:
            self._semaphore, self._loop = asyncio.Semaphore(self.max_concurrency), loop
        return self._semaphore


@dataclass
class _LocalPermit:
    limits: ProviderLimits
    semaphore: asyncio.Semaphore
    gate: QuotaGate
    reserved: float
    counted: float

    def release(self, tokens_used=None, rate_limit=None, *, rate_limited=False, retry_after=None):
        self.gate.settle(
            self.counted, rate_limit, rate_limited=rate_limited, retry_after=retry_after
        )
        if self.limits.tpm is not None and tokens_used is not None:
            self.limits.tpm.adjust(tokens_used - self.reserved)
        self.semaphore.release()
