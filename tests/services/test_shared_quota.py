"""Quotas shared across processes through the app database (`SharedProviderLimits`).

The rules of a round are checked on state built by hand; two limiters (two "processes") on one
database, on SQLite and PostgreSQL, are driven by a clock the test moves, so that what one
holds, learns or leaves behind is seen by the other without any real waiting; and three real
processes share the loopback server's quota (counts only: calls lost, 429s, calls in flight).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from study_query_dagster.db import QuotaStore
from study_query_dagster.db.quota_store import Bucket, LeaseRow, ScopeState, WindowRow
from study_query_dagster.providers.headers import RateLimit
from study_query_dagster.services import SharedProviderLimits
from study_query_dagster.services.inference.shared_limits import LimitConfig, Release, run_round
from tests.support.clock import ManualClock
from tests.support.fake_llm_server import Quota
from tests.support.processes import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[2]


def config(concurrency=4, rpm=None, tpm=None) -> LimitConfig:
    return LimitConfig(concurrency, rpm, tpm, lease_ttl_s=30.0, poll_s=0.5)


def state(*leases: LeaseRow, windows=None) -> ScopeState:
    return ScopeState("acct", Bucket(), Bucket(), dict(windows or {}), list(leases))


# --- the rules of one round --------------------------------------------------------------------


def test_concurrency_counts_every_holder_and_is_shared_fairly():
    # Another holder has 3 of 4 slots and wants more: we get the one left, no more.
    st = state(LeaseRow("other", "m", requests=3, waiting=2, expires_at=99))
    result = run_round(st, config(4), "me", 0.0, [("m", 1), ("m", 1), ("m", 1)], [])
    assert [g is not None for g in result.grants] == [True, False, False]
    assert result.retry_in == 0.5  # only the other holder's releases can free a slot
    mine = st.own("me")["m"]
    assert (mine.requests, mine.waiting, mine.expires_at) == (1, 2, 30.0)


def test_a_holder_over_its_share_leaves_freed_slots_to_one_that_waits():
    # We hold 3 of 4; the other holder waits with nothing: a free slot goes to them, not us.
    st = state(
        LeaseRow("me", "m", requests=3, expires_at=99),
        LeaseRow("other", "m", waiting=1, expires_at=99),
    )
    result = run_round(st, config(4), "me", 0.0, [("m", 1)], [])
    assert result.grants == [None]
    # Alone, we would have had it.
    alone = state(LeaseRow("me", "m", requests=3, expires_at=99))
    assert run_round(alone, config(4), "me", 0.0, [("m", 1)], []).grants[0] is not None


def test_a_paused_model_does_not_hold_back_another_model_of_the_provider():
    st = state(windows={"m1": WindowRow(paused_until=10.0)})
    result = run_round(st, config(4), "me", 0.0, [("m1", 1), ("m2", 1)], [])
    assert [g is not None for g in result.grants] == [False, True]
    assert result.retry_in == 10.0  # wake up when the pause ends


def test_rpm_and_tpm_buckets_admit_what_they_hold_and_say_when_more_comes():
    st = state()
    result = run_round(st, config(8, rpm=120, tpm=600), "me", 0.0, [("m", 5), ("m", 5)], [])
    # 120 RPM banks 2 requests; 600 TPM banks 10 tokens: both requests fit.
    assert all(result.grants)
    assert st.rpm.level == pytest.approx(0) and st.tpm.level == pytest.approx(0)
    again = run_round(st, config(8, rpm=120, tpm=600), "me", 0.0, [("m", 5)], [])
    assert again.grants == [None] and again.retry_in == pytest.approx(0.5)  # 1 request / 2 per s


def test_a_release_frees_its_slot_charges_real_tokens_and_folds_in_the_answers_quota():
    st = state(LeaseRow("me", "m", requests=1, tokens=10, expires_at=99))
    st.tpm = Bucket(level=0.0, at=0.0)
    answered = RateLimit(limit_requests=5, remaining_requests=0, reset_requests_s=3)
    release = Release("m", reserved=10, counted=10, tokens_used=40, rate_limit=answered)
    result = run_round(st, config(4, tpm=6000), "me", 0.0, [("m", 1)], [release])
    assert st.tpm.level == pytest.approx(-30)  # 30 tokens more than reserved: debt
    window = st.windows["m"]
    assert (window.requests_limit, window.requests_remaining, window.requests_ends_at) == (5, 0, 3)
    assert result.grants == [None]  # the quota is used up until the reset
    assert result.retry_in == 3
    assert not result.holding or st.own("me")["m"].requests == 0


def test_a_429_pauses_the_model_for_every_holder():
    st = state(LeaseRow("me", "m", requests=1, expires_at=99))
    release = Release("m", 0, 0, rate_limited=True, retry_after=2.0)
    run_round(st, config(4), "me", 5.0, [], [release])
    assert st.windows["m"].paused_until == 7.0 and st.windows["m"].pauses == 1
    other = run_round(st, config(4), "other", 6.0, [("m", 1)], [])
    assert other.grants == [None] and other.retry_in == pytest.approx(1.0)


# --- two limiters on one database ----------------------------------------------------------------


async def until(condition) -> None:
    """Yield to the event loop (and the limiters' database threads) until `condition()`."""
    while not condition():
        await asyncio.sleep(0.001)


def pair(db, clock: ManualClock, concurrency: int = 2, **options):
    return [
        SharedProviderLimits(db, "acct", concurrency, clock=clock.clock, poll_s=0.5, **options)
        for _ in range(2)
    ]


async def test_the_concurrency_limit_holds_for_the_sum_of_two_processes(db):
    clock = ManualClock(1000.0, auto=False)  # time moves only when the test says
    a, b = pair(db, clock, 2, lease_ttl_s=60)
    held = [await a.acquire("m", 1), await a.acquire("m", 1)]
    waiting = asyncio.ensure_future(b.acquire("m", 1))
    await until(lambda: b.rounds >= 1)
    assert not waiting.done()  # both slots are a's
    held[0].release()
    await a.drain()
    assert not waiting.done()  # b learns it at its next look
    await clock.advance(0.5)
    permit = await waiting
    windows, leases = QuotaStore(db).snapshot("acct")
    assert sorted((lease.holder == a.holder, lease.requests) for lease in leases) == [
        (False, 1),
        (True, 1),
    ]
    permit.release()
    held[1].release()
    await asyncio.gather(a.drain(), b.drain())
    assert QuotaStore(db).snapshot("acct")[1] == []  # nothing left behind


async def test_a_crashed_process_slots_come_back_when_its_lease_expires(db):
    clock = ManualClock(1000.0, auto=False)
    a, b = pair(db, clock, 2, lease_ttl_s=10)
    await a.acquire("m", 1)
    await a.acquire("m", 1)
    a._task.cancel()  # a dies: it never releases nor renews its lease (it ends at 1010)
    waiting = asyncio.ensure_future(b.acquire("m", 1))
    await until(lambda: b.rounds >= 1)
    await clock.advance(5)
    await until(lambda: b.rounds >= 2)
    assert not waiting.done()  # at 1005 the lease still holds
    await clock.advance(6)
    await waiting  # at 1011 it has expired: b gets a slot
    leases = QuotaStore(db).snapshot("acct")[1]
    assert [lease.holder for lease in leases] == [b.holder]


async def admitted_after(limits: SharedProviderLimits, clock: ManualClock, wait: float):
    """Ask `limits` for a permit; check it is not given before `wait` seconds of the clock
    have passed, and is then. Returns the permit."""
    rounds = limits.rounds
    waiting = asyncio.ensure_future(limits.acquire("gpt", 1))
    await until(lambda: limits.rounds > rounds or waiting.done())
    if wait > 0:
        assert not waiting.done()
        await clock.advance(wait * 0.99)
        for _ in range(10):
            await asyncio.sleep(0)
        assert not waiting.done()
        await clock.advance(wait * 0.01)
    return await waiting


async def test_a_429_seen_by_one_process_pauses_the_other(db):
    clock = ManualClock(1000.0, auto=False)
    a, b = pair(db, clock, 4)
    permit = await a.acquire("gpt", 1)
    permit.release(rate_limited=True, retry_after=1.5)
    await a.drain()
    await admitted_after(b, clock, 1.5)  # b waits out a's Retry-After
    windows, _ = QuotaStore(db).snapshot("acct")
    assert windows["gpt"].pauses == 1


async def test_the_quota_one_process_learns_from_headers_steers_the_other(db):
    clock = ManualClock(1000.0, auto=False)
    a, b = pair(db, clock, 4)
    permit = await a.acquire("gpt", 1)
    permit.release(1, RateLimit(limit_requests=3, remaining_requests=0, reset_requests_s=2))
    await a.drain()
    await admitted_after(b, clock, 2.0)  # b waits for the reset a was told of


async def test_requests_per_minute_hold_for_the_sum_of_two_processes(db):
    clock = ManualClock(1000.0, auto=False)
    a, b = pair(db, clock, 4, requests_per_minute=60)  # one a second, one banked
    for limits, wait in ((a, 0.0), (b, 1.0), (a, 1.0), (b, 1.0)):
        permit = await admitted_after(limits, clock, wait)
        permit.release()
        await limits.drain()
    assert clock.time == pytest.approx(1003.0)


# --- three processes against the loopback server's quota ------------------------------------------


@pytest.mark.slow
def test_three_processes_share_the_servers_quota(db_url, llm_server):
    """Each process sends its calls through its own SharedProviderLimits on the shared app
    database: together they lose no call, meet few 429s per quota window and never exceed
    the concurrency limit, whatever the machine's speed."""
    llm_server.quota = quota = Quota(requests=8, window_s=0.5)
    calls, concurrency = 40, 6
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = [sys.executable, "-m", "tests.support.quota_worker", db_url]
    procs = [
        subprocess.Popen(
            [*worker, llm_server.openai_base_url, str(calls), f"p{i}", str(concurrency)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for i in range(3)
    ]
    try:
        for proc in procs:  # a barrier: every process is ready before any sends
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = [
            json.loads(proc.communicate(timeout=HANG_GUARD_S)[0].splitlines()[-1]) for proc in procs
        ]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert sum(r["succeeded"] for r in reports) == 3 * calls  # nothing lost
    assert sum(r["failed"] for r in reports) == 0
    windows = quota.window + 1
    assert windows >= math.ceil(3 * calls / 8)  # the quota did bind
    assert sum(r["rate_limited"] for r in reports) == quota.refused
    assert quota.refused <= 3 * windows
    assert llm_server.max_in_flight <= concurrency  # the concurrency limit held for the sum
