"""Adaptive quotas: the server's rate-limit headers and 429s steer every worker. The gate's
rules are checked on a clock the test moves; the whole loop against the loopback server
enforcing a quota, with no client-side limit configured."""

import asyncio
import math

import pytest

from study_query_dagster.providers import OpenAIProvider
from study_query_dagster.providers.headers import RateLimit, parse_duration, parse_rate_limit
from study_query_dagster.services import InferenceService, ProviderLimits
from study_query_dagster.services.inference import QuotaGate
from tests.support.clock import ManualClock
from tests.support.fake_llm_server import Quota

KEY = "sk-quota-test-0123456789"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0.5", 0.5),
        ("soon", None),
        ("1x", None),
        (None, None),
    ],
)
def test_reset_durations_in_openai_format(text, seconds):
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_rate_limit_headers_are_read():
    headers = {
        "X-RateLimit-Limit-Requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-remaining-tokens": "149984",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    assert parse_rate_limit(headers) == RateLimit(60, 59, 1.0, None, 149984, 360.0)
    assert parse_rate_limit({"content-type": "application/json"}) is None


async def admission_times(gate: QuotaGate, clock: ManualClock, *tokens: float) -> list[float]:
    """Admit requests of these sizes at once; the clock time at which each got through (the
    manual clock moves only when the gate sleeps)."""

    async def one(amount: float) -> float:
        await gate.admit(amount)
        return clock.time

    return list(await asyncio.gather(*(one(t) for t in tokens)))


async def test_the_gate_admits_what_the_quota_leaves_and_waits_for_the_reset():
    manual = ManualClock()
    gate = QuotaGate(manual.clock)
    # Before the server said anything, nothing waits.
    first = await gate.admit(10)
    # The answer: 3 requests left in this window, which resets in 2 s.
    gate.settle(first, RateLimit(limit_requests=5, remaining_requests=3, reset_requests_s=2))
    # three pass at once; the fourth waits for the reset, when the full limit is back
    assert await admission_times(gate, manual, 1, 1, 1, 1) == [0, 0, 0, 2.0]
    assert manual.sleeps == [2.0] and gate.waited_s == pytest.approx(2.0)


async def test_calls_in_flight_count_against_the_quota_until_they_are_answered():
    manual = ManualClock(auto=False)  # no time passes unless the test says so
    gate = QuotaGate(manual.clock)
    a, b = await gate.admit(1), await gate.admit(1)
    # `a` comes back saying one request is left; `b` is still in flight and may not have been
    # counted yet, so the gate does not let another through until `b` is answered.
    gate.settle(a, RateLimit(remaining_requests=1, reset_requests_s=10))
    waiting = asyncio.ensure_future(gate.admit(1))
    while not manual.sleeps:  # it waits: for the reset, or for news of `b`
        await asyncio.sleep(0)
    assert not waiting.done()
    gate.settle(b, RateLimit(remaining_requests=1, reset_requests_s=10))  # b had been counted
    await waiting
    assert manual.time == 0  # admitted on the news, without waiting for the reset


async def test_a_429_pauses_every_worker_until_retry_after():
    manual = ManualClock()
    gate = QuotaGate(manual.clock)
    counted = await gate.admit(1)
    gate.settle(counted, None, rate_limited=True, retry_after=1.5)
    # nobody passes during the pause, everyone right after it
    assert await admission_times(gate, manual, 1, 1, 1) == [1.5, 1.5, 1.5]
    assert gate.pauses == 1


async def test_a_token_quota_holds_back_a_request_it_cannot_cover():
    manual = ManualClock()
    gate = QuotaGate(manual.clock)
    first = await gate.admit(100)
    gate.settle(first, RateLimit(remaining_tokens=150, reset_tokens_s=4, limit_tokens=1000))
    assert await admission_times(gate, manual, 100, 200) == [0, 4.0]


async def test_a_server_that_says_nothing_is_never_waited_for():
    gate = QuotaGate(ManualClock().clock)
    for _ in range(100):
        gate.settle(await gate.admit(1_000), None)
    assert gate.waited_s == 0


async def test_an_enforced_quota_loses_no_call_and_costs_few_429s(db, llm_server):
    # 8 requests per 0.4 s window; 48 calls, 8 at a time, no RPM/TPM configured. The server's
    # windows and the client's gate share one clock that moves only when the gate waits, so
    # what happens does not depend on how fast the machine is.
    manual = ManualClock()
    llm_server.quota = quota = Quota(requests=8, window_s=0.4, clock=manual.now)
    base_url = llm_server.openai_base_url
    async with OpenAIProvider(KEY, "gpt-4o-mini", base_url=base_url, timeout=60) as provider:
        limits = ProviderLimits(8, clock=manual.clock)
        service = InferenceService(provider, db, limits=limits, initial_wait=0.01)
        results = await service.run_batch([f"question {i}" for i in range(48)])
    assert [r["status"] for r in results] == ["success"] * 48  # nothing lost
    windows = quota.window + 1
    assert windows >= math.ceil(48 / 8)  # the quota did bind
    assert quota.refused <= 3 * windows
    retried = sum(r["metadata"]["attempts"] - 1 for r in results)
    assert retried == quota.refused  # every 429 was one retried attempt, nothing else failed
    gate = service.limits.quota("gpt-4o-mini")
    assert gate.requests.limit == 8


async def test_services_of_one_provider_share_its_quota(db, llm_server):
    # Two services (two targets) of one provider and model share the gate through limits.
    manual = ManualClock()  # the server's windows and the gate's, as above
    llm_server.quota = quota = Quota(requests=6, window_s=0.4, clock=manual.now)
    limits = ProviderLimits(6, clock=manual.clock)
    base_url = llm_server.openai_base_url
    async with (
        OpenAIProvider(KEY, "gpt-4o-mini", base_url=base_url, timeout=60) as one,
        OpenAIProvider(KEY, "gpt-4o-mini", base_url=base_url, timeout=60) as two,
    ):
        a = InferenceService(one, db, limits=limits, initial_wait=0.01)
        b = InferenceService(two, db, limits=limits, initial_wait=0.01)
        first, second = await asyncio.gather(
            a.run_batch([f"a{i}" for i in range(18)], temperature=0),
            b.run_batch([f"b{i}" for i in range(18)], temperature=1),
        )
    assert all(r["status"] == "success" for r in [*first, *second])
    assert quota.refused <= 3 * (quota.window + 1)
