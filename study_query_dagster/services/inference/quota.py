"""Adaptive quotas: what the server says about its quota steers every worker calling it.

OpenAI and Azure report the quota left in each response (`x-ratelimit-remaining-requests`,
`-tokens`, and when it resets); a 429 says the quota ran out (with `Retry-After`). A
`QuotaGate` (one per provider and model: that is how those servers count) turns this into a
gate every attempt passes before it is sent:

- Requests are admitted while the quota left, minus what is already in flight, covers them.
  Calls in flight may or may not have been counted by the server yet, so they are taken as
  not counted: the gate errs on the side of waiting, and each answer brings a fresher figure.
- When the quota is used up, every worker waits until the reset the server announced, or
  until an answer in flight brings news; after the reset the quota is the full limit again.
- A 429 pauses every worker until its `Retry-After` (or the announced reset), not only the
  call that got it.

Without any of these headers the gate never waits: a server that says nothing is limited only
by the configured RPM/TPM buckets and the concurrency limit.

`QuotaWindow` and `pause_wait` are the rules themselves; `SharedProviderLimits`
(`shared_limits.py`) applies the same rules to windows kept in the database, so that every
process calling a provider learns from every answer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ...log import get_logger
from ...providers.headers import RateLimit
from .clock import SYSTEM_CLOCK, Clock

logger = get_logger(__name__)


@dataclass
class QuotaWindow:
    """One dimension of the quota (requests or tokens) in the gate's clock."""

    limit: float | None = None
    remaining: float | None = None  # as last reported within the current window
    ends_at: float | None = None  # when the server restores the quota (clock time)
    in_flight: float = 0.0  # admitted and not yet answered

    def refresh(self, now: float) -> None:
        if self.ends_at is not None and now >= self.ends_at:
            self.remaining, self.ends_at = self.limit, None

    def cost(self, amount: float) -> float:
        # A request larger than the whole quota could never be admitted: let it ask.
        return min(amount, self.limit) if self.limit else amount

    def blocks(self, amount: float) -> bool:
        if self.remaining is None:
            return False
        if self.ends_at is None and self.in_flight <= 0:
            return False  # no reset announced and nothing to wait for: let the server decide
        return self.remaining - self.in_flight < self.cost(amount)

    def observe(self, now: float, limit, remaining, reset_s) -> None:
        if limit is not None:
            self.limit = limit
        if remaining is None:
            return
        ends_at = now + reset_s if reset_s is not None else None
        if self.ends_at is None or now >= self.ends_at:  # a new window
            self.remaining, self.ends_at = remaining, ends_at
            return
        # The same window: the quota only shrinks within it, and answers may arrive out of
        # order. Every reset estimate falls after the true reset (the answer was sent before
        # it was read), so the earliest is the closest.
        self.remaining = remaining if self.remaining is None else min(self.remaining, remaining)
        if ends_at is not None:
            self.ends_at = min(self.ends_at, ends_at)

    def exhaust(self, until: float) -> None:
        self.remaining = 0.0
        self.ends_at = until if self.ends_at is None else max(self.ends_at, until)


def pause_wait(rate_limit: RateLimit | None, retry_after: float | None) -> float | None:
    """How long a 429 pauses every worker: its Retry-After, else the announced reset of the
    exhausted dimension; None when nothing says."""
    if retry_after is not None or rate_limit is None:
        return retry_after
    resets = [
        s
        for s, left in (
            (rate_limit.reset_requests_s, rate_limit.remaining_requests),
            (rate_limit.reset_tokens_s, rate_limit.remaining_tokens),
        )
        if s is not None and left is not None and left <= 0
    ]
    return max(resets) if resets else None


def observe(requests: QuotaWindow, tokens: QuotaWindow, now: float, rate_limit: RateLimit) -> None:
    """Fold the quota an answer reported into the two windows."""
    requests.observe(
        now, rate_limit.limit_requests, rate_limit.remaining_requests, rate_limit.reset_requests_s
    )
    tokens.observe(
        now, rate_limit.limit_tokens, rate_limit.remaining_tokens, rate_limit.reset_tokens_s
    )


@dataclass
class QuotaGate:
    clock: Clock = SYSTEM_CLOCK
    requests: QuotaWindow = field(default_factory=QuotaWindow)
    tokens: QuotaWindow = field(default_factory=QuotaWindow)
    paused_until: float | None = None
    waited_s: float = 0.0  # total time attempts spent at the gate, for reports
    pauses: int = 0  # 429s that paused every worker
    _event: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def admit(self, tokens: float) -> float:
        """Wait until the quota has room for one request of `tokens` (estimated), then count
        it as in flight. Returns the tokens counted (pass them to `settle`)."""
        tokens = max(float(tokens), 0.0)
        started = None
        while True:
            now = self.clock.now()
            if self.paused_until is not None and now < self.paused_until:
                deadline: float | None = self.paused_until
            else:
                self.requests.refresh(now)
                self.tokens.refresh(now)
                blocking = [
                    w
                    for w, amount in ((self.requests, 1.0), (self.tokens, tokens))
                    if w.blocks(amount)
                ]
                if not blocking:
                    break
                ends = [w.ends_at for w in blocking if w.ends_at is not None]
                deadline = min(ends) if ends else None
            started = now if started is None else started
            await self._wait(deadline, now)
        if started is not None:
            self.waited_s += self.clock.now() - started
        tokens = self.tokens.cost(tokens)
        self.requests.in_flight += 1
        self.tokens.in_flight += tokens
        return tokens

    def settle(
        self,
        tokens: float,
        rate_limit: RateLimit | None = None,
        *,
        rate_limited: bool = False,
        retry_after: float | None = None,
    ) -> None:
        """An admitted request is over: answered (with the quota it reported), refused with a
        429 (`rate_limited`, with the server's Retry-After), or abandoned."""
        now = self.clock.now()
        self.requests.in_flight = max(self.requests.in_flight - 1, 0.0)
        self.tokens.in_flight = max(self.tokens.in_flight - tokens, 0.0)
        if rate_limit is not None:
            observe(self.requests, self.tokens, now, rate_limit)
        if rate_limited:
            self._pause(now, rate_limit, retry_after)
        self._notify()

    def _pause(self, now: float, rate_limit: RateLimit | None, retry_after: float | None) -> None:
        wait = pause_wait(rate_limit, retry_after)
        if wait is None:
            return  # nothing says how long: the call's own backoff applies
        until = now + wait
        self.pauses += 1
        self.paused_until = until if self.paused_until is None else max(self.paused_until, until)
        self.requests.exhaust(until)
        logger.info("quota exhausted (429): every worker waits %.2f s", wait)

    # --- waking waiters ------------------------------------------------------------------

    def _changed(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if self._event is None or self._loop is not loop:  # an Event belongs to one loop
            self._event, self._loop = asyncio.Event(), loop
        return self._event

    def _notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def _wait(self, deadline: float | None, now: float) -> None:
        """Until `deadline` (clock time) or until an answer changes what the gate knows."""
        waits = [asyncio.ensure_future(self._changed().wait())]
        if deadline is not None:
            waits.append(asyncio.ensure_future(self.clock.sleep(max(deadline - now, 0.0))))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
