"""The embedding service's settings of the one `RetryPolicy`, and database steps run under it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import RetryCallState

from ...log import get_logger
from ..retry import RetryPolicy

logger = get_logger(__name__)

T = TypeVar("T")

# An embedding batch is cheap to retry and often large, so it gets more attempts and a longer
# backoff ceiling than a chat call: 6 attempts, waits 1, 2, 4, 8, 16 s (+ jitter, at most 30 s).
# Retry-After replaces the backoff and a malformed body is retried once, as everywhere.
DEFAULT_RETRY = RetryPolicy(max_retries=5, initial_wait=1.0, max_wait=30.0)


def with_db_retry(policy: RetryPolicy, fn: Callable[..., T], *args: Any) -> T:
    """Run a database step, retrying transient errors (locks, dropped connections)."""
    for attempt in policy.synchronous(_log_db_retry):
        with attempt:
            return fn(*args)
    raise AssertionError("unreachable")  # pragma: no cover


def _log_db_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    logger.warning(
        "database step failed (attempt %d), retrying: %s",
        state.attempt_number,
        type(error).__name__,
    )
