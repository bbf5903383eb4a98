"""`SharedProviderLimits`: a provider's concurrency, RPM/TPM and adaptive quota held for the sum
of every process that calls it, through the database those processes already share.

One provider account is a *scope* (`quota_scope`). Its state lives in three tables
(`db/quota_store.py`): the RPM/TPM buckets, the quota each model's server last reported (the
rules of `quota.py`, so what one process learns from a header or a 429 steers all of them),
and per live holder the requests it has in flight and waiting. A holder is one
`SharedProviderLimits` (the limiter of one run step); its leases carry an expiry that it renews
while it holds anything, so a crashed process's slots come back after `lease_ttl_s`.

Per process, one broker task talks to the database in *rounds*: one short transaction under
the scope's lock records the attempts that ended since the last round (slots freed, real token
usage charged, rate-limit headers and 429s folded into the model's window) and admits as many
waiting requests as the shared state allows, first come first served. A round serves every
request waiting in the process, so the cost per call falls as the load rises.

Waiting: for a bucket to refill or a window to reset the broker sleeps until then; for slots
or quota that other processes hold it polls every `poll_s` (their releases are in the database,
not in this process); an attempt of this process ending wakes it at once. When other holders
are waiting, a holder takes no more than its fair share of the concurrency slots, so one large
run cannot keep every slot while others starve.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections import deque
from dataclasses import dataclass, field

from ...db import DatabaseConnection
from ...db.quota_store import Bucket, LeaseRow, QuotaStore, ScopeState, WindowRow
from ...log import get_logger
from ...providers.headers import RateLimit
from .clock import WALL_CLOCK, Clock
from .quota import QuotaWindow, observe, pause_wait

logger = get_logger(__name__)

EPSILON = 1e-9  # float rounding in bucket arithmetic


@dataclass(frozen=True)
class LimitConfig:
    max_concurrency: int
    requests_per_minute: float | None
    tokens_per_minute: float | None
    lease_ttl_s: float
    poll_s: float


@dataclass
class Release:
    """An attempt that ended, as the next round records it."""

    model: str
    reserved: float  # TPM units taken at admission
    counted: float  # tokens counted in flight against the model's quota
    tokens_used: int | None = None
    rate_limit: RateLimit | None = None
    rate_limited: bool = False
    retry_after: float | None = None


@dataclass
class Grant:
    reserved: float
    counted: float


@dataclass
class RoundResult:
    grants: list[Grant | None]  # per waiting request, in order
    retry_in: float | None  # when another round could admit more (None: only news can)
    holding: bool  # this holder still has leases to renew


# --- one round: pure rules over the scope's state ----------------------------------------------


class _Bucket:
    """A shared bucket's arithmetic (the same as `TokenBucket`: a second's worth banked)."""

    def __init__(self, state: Bucket, per_minute: float, now: float):
        self.state = state
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        level = self.capacity if state.level is None else state.level
        elapsed = max(now - state.at, 0.0) if state.at is not None else 0.0
        state.level, state.at = min(self.capacity, level + elapsed * self.rate), now

    def wait_for(self, amount: float) -> float:
        """0 when `amount` is there now, else how long until it is."""
        missing = amount - self.state.level
        return 0.0 if missing <= EPSILON else missing / self.rate

    def take(self, amount: float) -> None:
        self.state.level -= amount

    def charge(self, delta: float) -> None:
        self.state.level = min(self.capacity, self.state.level - delta)


class _Model:
    """A model's quota window pair in the round, with what every holder has in flight."""

    def __init__(self, row: WindowRow, in_flight: tuple[int, float]):
        self.row = row
        self.requests = QuotaWindow(
            row.requests_limit, row.requests_remaining, row.requests_ends_at, in_flight[0]
        )
        self.tokens = QuotaWindow(
            row.tokens_limit, row.tokens_remaining, row.tokens_ends_at, in_flight[1]
        )

    def blocked_until(self, now: float, tokens: float) -> tuple[bool, float | None]:
        """(blocked, until when if known) for one more request of `tokens`."""
        row = self.row
        if row.paused_until is not None and now < row.paused_until:
            return True, row.paused_until
        self.requests.refresh(now)
        self.tokens.refresh(now)
        blocking = [
            w for w, amount in ((self.requests, 1.0), (self.tokens, tokens)) if w.blocks(amount)
        ]
        ends = [w.ends_at for w in blocking if w.ends_at is not None]
        return bool(blocking), (min(ends) if ends else None)

    def settle(self, now: float, release: Release) -> None:
        if release.rate_limit is not None:
            observe(self.requests, self.tokens, now, release.rate_limit)
        if release.rate_limited:
            wait = pause_wait(release.rate_limit, release.retry_after)
            if wait is not None:
                until = now + wait
                row = self.row
                row.pauses += 1
                row.paused_until = (
                    until if row.paused_until is None else max(row.paused_until, until)
                )
                self.requests.exhaust(until)
                logger.info("shared quota exhausted (429): every holder waits %.2f s", wait)

    def save(self) -> None:
        row, r, t = self.row, self.requests, self.tokens
        row.requests_limit, row.requests_remaining, row.requests_ends_at = (
            r.limit,
            r.remaining,
            r.ends_at,
        )
        row.tokens_limit, row.tokens_remaining, row.tokens_ends_at = t.limit, t.remaining, t.ends_at


def run_round(
    state: ScopeState,
    config: LimitConfig,
    holder: str,
    now: float,
    waiting: list[tuple[str, float]],
    releases: list[Release],
) -> RoundResult:
    """Record `releases`, then admit what `waiting` ((model, estimated tokens), oldest first)
    the scope allows now. Changes `state` in place; the store writes it back."""
    own: dict[str, LeaseRow] = state.own(holder)

    def lease(model: str) -> LeaseRow:
        if model not in own:
            own[model] = LeaseRow(holder, model)
            state.leases.append(own[model])
        return own[model]

    rpm = (
        _Bucket(state.rpm, config.requests_per_minute, now) if config.requests_per_minute else None
    )
    tpm = _Bucket(state.tpm, config.tokens_per_minute, now) if config.tokens_per_minute else None

    in_flight: dict[str, list[float]] = {}
    for row in state.leases:
        counts = in_flight.setdefault(row.model, [0, 0.0])
        counts[0] += row.requests
        counts[1] += row.tokens
    models: dict[str, _Model] = {}

    def model_of(name: str) -> _Model:
        if name not in models:
            counts = in_flight.get(name, [0, 0.0])
            models[name] = _Model(state.window(name), (counts[0], counts[1]))
        return models[name]

    for release in releases:
        row = lease(release.model)
        row.requests = max(row.requests - 1, 0)
        row.tokens = max(row.tokens - release.counted, 0.0)
        m = model_of(release.model)
        m.requests.in_flight = max(m.requests.in_flight - 1, 0.0)
        m.tokens.in_flight = max(m.tokens.in_flight - release.counted, 0.0)
        if tpm is not None and release.tokens_used is not None:
            tpm.charge(release.tokens_used - release.reserved)
        m.settle(now, release)

    used = sum(row.requests for row in state.leases)
    mine = sum(row.requests for row in own.values())
    others = {
        row.holder
        for row in state.leases
        if row.holder != holder and (row.requests > 0 or row.waiting > 0)
    }
    others_waiting = any(row.waiting > 0 for row in state.leases if row.holder != holder)
    share = math.ceil(config.max_concurrency / (len(others) + 1))

    grants: list[Grant | None] = [None] * len(waiting)
    deadlines: list[float] = []
    poll = False  # something only another holder's news can change
    stuck = False  # a provider-wide limit binds: later requests wait too (first come first served)
    for i, (name, tokens) in enumerate(waiting):
        m = model_of(name)
        blocked, until = m.blocked_until(now, tokens)
        if blocked:
            if until is not None:
                deadlines.append(until)
            else:
                poll = True
            continue
        if stuck:
            continue
        if used >= config.max_concurrency or (others_waiting and mine >= share):
            stuck = poll = True
            continue
        reserved = min(tokens, tpm.capacity) if tpm is not None else 0.0
        wait = max(rpm.wait_for(1.0) if rpm else 0.0, tpm.wait_for(reserved) if tpm else 0.0)
        if wait > 0:
            stuck = True
            deadlines.append(now + wait)
            continue
        if rpm is not None:
            rpm.take(1.0)
        if tpm is not None:
            tpm.take(reserved)
        counted = m.tokens.cost(tokens)
        m.requests.in_flight += 1
        m.tokens.in_flight += counted
        row = lease(name)
        row.requests += 1
        row.tokens += counted
        used += 1
        mine += 1
        grants[i] = Grant(reserved, counted)

    for row in own.values():
        row.waiting = 0
    for (name, _), grant in zip(waiting, grants, strict=True):
        if grant is None:
            lease(name).waiting += 1
    for row in own.values():
        row.expires_at = now + config.lease_ttl_s
    for m in models.values():
        m.save()

    retry_in = None
    if any(g is None for g in grants):
        candidates = [max(d - now, 0.0) for d in deadlines]
        if poll:
            candidates.append(config.poll_s)
        retry_in = min(candidates) if candidates else config.poll_s
    holding = any(row.requests > 0 or row.waiting > 0 for row in own.values())
    return RoundResult(grants, retry_in, holding)


# --- the process side: a broker task per event loop --------------------------------------------


@dataclass
class _Waiter:
    model: str
    tokens: float
    future: asyncio.Future


@dataclass
class SharedPermit:
    limits: SharedProviderLimits
    model: str
    reserved: float
    counted: float
    released: bool = field(default=False)

    def release(self, tokens_used=None, rate_limit=None, *, rate_limited=False, retry_after=None):
        if self.released:
            return
        self.released = True
        self.limits._release(
            Release(
                self.model,
                self.reserved,
                self.counted,
                tokens_used,
                rate_limit,
                rate_limited,
                retry_after,
            )
        )


class SharedProviderLimits:
    """The limits of provider account `scope`, held for every process using `db`.

    `max_concurrency`, `requests_per_minute`, `tokens_per_minute`: as for `ProviderLimits`, but
    for the sum of every holder (processes should be configured alike; each round applies the
    values of the process running it). `clock` must be one every process shares: wall-clock
    time by default (keep the machines' clocks synchronised, e.g. NTP). `lease_ttl_s`: how long
    a holder's slots outlive it if it stops renewing them. `poll_s`: how often a waiting
    process looks for slots and quota freed by others."""

    def __init__(
        self,
        db: DatabaseConnection,
        scope: str,
        max_concurrency: int,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        clock: Clock = WALL_CLOCK,
        lease_ttl_s: float = 30.0,
        poll_s: float = 0.05,
        holder: str | None = None,
    ):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1 (got {max_concurrency})")
        limits = {
            "requests_per_minute": requests_per_minute,
            "tokens_per_minute": tokens_per_minute,
        }
        for name, value in limits.items():
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive (got {value!r})")
        if lease_ttl_s <= 0 or poll_s <= 0:
            raise ValueError("lease_ttl_s and poll_s must be positive")
        self.store = QuotaStore(db)
        self.scope = scope
        self.max_concurrency = max_concurrency
        self.config = LimitConfig(
            max_concurrency, requests_per_minute, tokens_per_minute, lease_ttl_s, poll_s
        )
        self.clock = clock
        self.holder = holder or uuid.uuid4().hex
        self.rounds = 0  # transactions run, for reports
        self.waited_s = 0.0  # total time attempts waited for admission
        self._waiters: deque[_Waiter] = deque()
        self._releases: list[Release] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._holding = False
        self._submitted = self._recorded = 0  # releases handed to the broker / committed
        self._round_done: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"SharedProviderLimits({self.scope!r}, holder={self.holder[:8]})"

    # --- what attempts call --------------------------------------------------------------------

    async def acquire(self, model: str | None, tokens: float) -> SharedPermit:
        """Wait until the scope admits one request of `tokens` (estimated) to `model`."""
        self._ensure_broker()
        future = asyncio.get_running_loop().create_future()
        waiter = _Waiter(model or "", max(float(tokens), 0.0), future)
        self._waiters.append(waiter)
        self._wake.set()
        started = self.clock.now()
        try:
            grant: Grant = await future
        except asyncio.CancelledError:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif future.done() and not future.cancelled() and future.exception() is None:
                self._release(
                    Release(waiter.model, future.result().reserved, future.result().counted)
                )
            raise
        self.waited_s += max(self.clock.now() - started, 0.0)
        return SharedPermit(self, waiter.model, grant.reserved, grant.counted)

    async def drain(self) -> None:
        """Until every ended attempt is recorded in the database (call before the event loop
        ends: a release still pending then would hold its slot until the lease expires)."""
        while self._recorded < self._submitted and self._task is not None and not self._task.done():
            self._wake.set()
            round_done = asyncio.ensure_future(self._round_done.wait())
            try:
                await asyncio.wait([self._task, round_done], return_when=asyncio.FIRST_COMPLETED)
            finally:
                round_done.cancel()

    def _release(self, release: Release) -> None:
        self._submitted += 1
        self._releases.append(release)
        if self._wake is not None:
            self._wake.set()
        self._ensure_broker()

    # --- the broker ----------------------------------------------------------------------------

    def _ensure_broker(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (Dagster runs one per step)
            self._loop, self._wake, self._task = loop, asyncio.Event(), None
            self._round_done = asyncio.Event()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._broker())

    async def _broker(self) -> None:
        while self._waiters or self._releases or self._holding:
            # One turn of the event loop first: answers that arrived together share the round.
            await asyncio.sleep(0)
            self._wake.clear()
            waiters = list(self._waiters)
            releases, self._releases = self._releases, []
            try:
                result = await asyncio.to_thread(
                    self._round, [(w.model, w.tokens) for w in waiters], releases, self.clock.now()
                )
            except Exception as exc:  # the database failed: the waiting attempts fail with it
                logger.warning("shared quota %s: round failed: %s", self.scope, exc)
                for w in waiters:
                    if w in self._waiters:
                        self._waiters.remove(w)
                    if not w.future.done():
                        w.future.set_exception(exc)
                self._holding = False
                return
            self.rounds += 1
            self._recorded += len(releases)
            self._round_done.set()
            self._round_done = asyncio.Event()
            self._holding = result.holding
            for w, grant in zip(waiters, result.grants, strict=True):
                if grant is None:
                    continue
                if w in self._waiters:
                    self._waiters.remove(w)
                if w.future.done():  # cancelled meanwhile: give the admission back
                    self._submitted += 1
                    self._releases.append(Release(w.model, grant.reserved, grant.counted))
                else:
                    w.future.set_result(grant)
            if self._releases or self._wake.is_set():
                continue
            timeout = result.retry_in if self._waiters else None
            if self._holding:
                renew = self.config.lease_ttl_s / 3
                timeout = renew if timeout is None else min(timeout, renew)
            if not (self._waiters or self._holding):
                break
            await self._sleep(timeout)

    async def _sleep(self, timeout: float | None) -> None:
        waits = [asyncio.ensure_future(self._wake.wait())]
        if timeout is not None:
            waits.append(asyncio.ensure_future(self.clock.sleep(timeout)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    def _round(
        self, waiting: list[tuple[str, float]], releases: list[Release], now: float
    ) -> RoundResult:
        with self.store.locked(self.scope, self.holder, now) as state:
            return run_round(state, self.config, self.holder, now, waiting, releases)
