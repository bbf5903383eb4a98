"""`RetryPolicy`: the one rule for retrying provider calls and transient database steps.

- Only a retryable `ProviderError` (rate limit, 5xx, timeout, dropped connection) or a transient
  database error (`OperationalError`: locked, connection lost) is retried.
- The wait is the server's `Retry-After` when it sent one (capped at `max_retry_after`): the
  server knows when it will serve again, so adding backoff on top only wastes the quota window.
  Without one, exponential backoff with jitter: `initial_wait * 2^(n-1)` plus up to
  `initial_wait` of jitter, at most `max_wait`.
- A malformed 2xx body is usually deterministic (the same request gets the same bad answer),
  so it is retried at most `malformed_retries` times, whatever `max_retries` allows.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import OperationalError
from tenacity import AsyncRetrying, RetryCallState, Retrying, stop_after_attempt

from ..providers.base import ProviderError

MALFORMED = "malformed_response"


def is_transient(exc: BaseException | None) -> bool:
    """Worth another attempt: a retryable provider error or a transient database error."""
    if isinstance(exc, ProviderError):
        return exc.retryable
    return isinstance(exc, OperationalError)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3  # retries after the first attempt
    initial_wait: float = 1.0
    max_wait: float = 10.0
    max_retry_after: float = 60.0
    malformed_retries: int = 1

    def __post_init__(self):
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0 (got {self.max_retries})")
        if self.initial_wait < 0 or self.max_wait < self.initial_wait:
            raise ValueError(
                f"need 0 <= initial_wait <= max_wait (got {self.initial_wait}, {self.max_wait})"
            )
        if self.max_retry_after < 0 or self.malformed_retries < 0:
            raise ValueError("max_retry_after and malformed_retries must not be negative")

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def wait(self, error: BaseException | None, attempt_number: int) -> float:
        """Seconds to wait after failed attempt `attempt_number` (1-based)."""
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), self.max_retry_after)
        backoff = self.initial_wait * 2 ** (attempt_number - 1)
        return min(self.max_wait, backoff + random.uniform(0, self.initial_wait))

    def should_retry(
        self, error: BaseException | None, attempt_number: int, malformed: int
    ) -> bool:
        """Whether failed attempt `attempt_number` earns another, `malformed` being how many
        malformed bodies this call has seen so far (this one included)."""
        if attempt_number >= self.max_attempts or not is_transient(error):
            return False
        if getattr(error, "error_type", None) == MALFORMED:
            return malformed <= self.malformed_retries
        return True

    def _kwargs(self, on_retry, first_attempt: int, malformed: int) -> dict[str, Any]:
        seen = [malformed]

        def retry(state: RetryCallState) -> bool:
            error = state.outcome.exception() if state.outcome else None
            if getattr(error, "error_type", None) == MALFORMED:
                seen[0] += 1
            return self.should_retry(error, state.attempt_number + first_attempt - 1, seen[0])

        return {
            # should_retry enforces the bound; the stop is a backstop counted in the same way.
            "stop": stop_after_attempt(self.max_attempts - first_attempt + 1),
            "wait": lambda s: self.wait(
                s.outcome.exception(), s.attempt_number + first_attempt - 1
            ),
            "retry": retry,
            "reraise": True,
            "before_sleep": on_retry,
        }

    def asynchronous(
        self,
        on_retry: Callable[[RetryCallState], None] | None = None,
        *,
        first_attempt: int = 1,
        malformed: int = 0,
    ) -> AsyncRetrying:
        """A tenacity controller for one call. `first_attempt` > 1 continues a call whose
        earlier attempts ran outside tenacity (`malformed` of them malformed)."""
        return AsyncRetrying(**self._kwargs(on_retry, first_attempt, malformed))

    def synchronous(self, on_retry: Callable[[RetryCallState], None] | None = None) -> Retrying:
        return Retrying(**self._kwargs(on_retry, 1, 0))
