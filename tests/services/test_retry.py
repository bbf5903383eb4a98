"""The one retry policy: what is retried, how long it waits, and the malformed-body bound."""

import pytest
from sqlalchemy.exc import OperationalError

from study_query_dagster.providers.base import ProviderError
from study_query_dagster.services.retry import RetryPolicy, is_transient


def error(kind="server_error", retryable=True, retry_after=None, status=500):
    return ProviderError(kind, "openai", status, retryable, retry_after, kind)


def test_retry_after_replaces_the_backoff_and_is_capped():
    policy = RetryPolicy(initial_wait=5, max_wait=30, max_retry_after=20)
    assert policy.wait(error(retry_after=1.0), attempt_number=4) == 1.0
    assert policy.wait(error(retry_after=0.0), attempt_number=1) == 0.0
    assert policy.wait(error(retry_after=3600), attempt_number=1) == 20


def test_backoff_doubles_with_bounded_jitter_and_stops_at_max_wait():
    policy = RetryPolicy(initial_wait=1, max_wait=6)
    for attempt, base in ((1, 1), (2, 2), (3, 4)):
        waits = [policy.wait(error(), attempt) for _ in range(200)]
        assert all(base <= w <= base + 1 for w in waits), attempt
        assert len(set(waits)) > 1  # jittered
    assert all(policy.wait(error(), 4) == 6 for _ in range(50))  # 8 + jitter, capped


def test_what_is_retried():
    assert is_transient(error())
    assert is_transient(OperationalError("SELECT 1", {}, Exception("database is locked")))
    assert not is_transient(error("bad_request", retryable=False, status=400))
    assert not is_transient(ValueError("bug"))
    policy = RetryPolicy(max_retries=2)
    assert policy.should_retry(error(), 1, 0) and policy.should_retry(error(), 2, 0)
    assert not policy.should_retry(error(), 3, 0)  # three attempts in all
    malformed = error("malformed_response")
    assert policy.should_retry(malformed, 1, malformed=1)
    assert not policy.should_retry(malformed, 2, malformed=2)


@pytest.mark.parametrize(
    ("failures", "attempts", "outcome"),
    [
        (["malformed_response"] * 5, 2, "malformed_response"),  # one retry only
        (["server_error", "malformed_response", "malformed_response"], 3, "malformed_response"),
        (["server_error"] * 2, 3, "ok"),
        (["server_error"] * 9, 4, "server_error"),  # max_retries=3
    ],
)
async def test_tenacity_controller_counts_attempts(failures, attempts, outcome):
    policy = RetryPolicy(max_retries=3, initial_wait=0, max_wait=0)
    calls = []

    async def attempt():
        calls.append(1)
        if len(calls) <= len(failures):
            raise error(failures[len(calls) - 1])
        return "ok"

    try:
        result = await policy.asynchronous()(attempt)
    except ProviderError as exc:
        result = exc.error_type
    assert (len(calls), result) == (attempts, outcome)


async def test_a_controller_can_continue_after_a_first_attempt_made_outside_it():
    policy = RetryPolicy(max_retries=2, initial_wait=0, max_wait=0)
    calls = []

    async def attempt():
        calls.append(1)
        raise error("malformed_response")

    # The first attempt already failed malformed: no malformed retry is left.
    with pytest.raises(ProviderError):
        await policy.asynchronous(first_attempt=2, malformed=1)(attempt)
    assert len(calls) == 1


def test_invalid_policies_are_refused():
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError, match="initial_wait <= max_wait"):
        RetryPolicy(initial_wait=5, max_wait=1)
