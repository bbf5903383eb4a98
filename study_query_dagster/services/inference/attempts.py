"""Sending one request: each attempt under the provider's limits (a concurrency slot, RPM/TPM
buckets, the adaptive quota gate), failed attempts retried by the one `RetryPolicy` and
recorded for the capture."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from ...log import get_logger
from ...providers.base import BaseLLMProvider, ProviderError, ProviderResponse
from ..retry import MALFORMED, RetryPolicy
from .rate_limits import ProviderLimits
from .records import attempt_entry
from .requests import ChatRequest
from .shared_limits import SharedProviderLimits

logger = get_logger(__name__)


@dataclass
class AttemptLog:
    """The attempts of one call so far."""

    failed: list[dict[str, Any]] = field(default_factory=list)  # one entry per failed attempt
    in_flight: bool = False  # an attempt is running (vs. waiting for a slot or to retry)
    malformed: int = 0  # malformed 2xx bodies seen

    def record(self, error: ProviderError, started: float) -> None:
        self.failed.append(attempt_entry(len(self.failed) + 1, error, started))
        if error.error_type == MALFORMED:
            self.malformed += 1

    @property
    def started(self) -> int:
        """Attempts that were sent or in flight (for a cancelled call's row)."""
        return len(self.failed) + int(self.in_flight)


class AttemptRunner:
    """Calls one provider for `InferenceService`: the first attempt runs directly (most calls
    need no retry, and tenacity's per-call bookkeeping costs more than a fast provider call);
    a retryable failure hands the remaining attempts to tenacity after the wait it earned.
    A concurrency slot is held per attempt, not while waiting to retry."""

    def __init__(
        self,
        provider: BaseLLMProvider,
        limits: ProviderLimits | SharedProviderLimits,
        policy: RetryPolicy,
    ):
        self.provider = provider
        self.provider_name = provider.get_provider_name()
        self.limits = limits
        self.policy = policy
        self.provider_calls = 0  # attempts sent to the provider, for reports and tests

    async def send(self, request: ChatRequest, log: AttemptLog) -> ProviderResponse:
        """The response, or the last attempt's `ProviderError`."""
        try:
            return await self._attempt(request, log)
        except ProviderError as error:
            if not self.policy.should_retry(error, 1, log.malformed):
                raise
            wait = self.policy.wait(error, 1)
        self._before_retry(request, log, wait)
        await asyncio.sleep(wait)
        retrying = self.policy.asynchronous(
            lambda state: self._before_retry(request, log, state.next_action.sleep),
            first_attempt=2,
            malformed=log.malformed,
        )
        return await retrying(self._attempt, request, log)

    def _before_retry(self, request: ChatRequest, log: AttemptLog, wait: float) -> None:
        log.failed[-1]["waited_s"] = round(wait, 3)
        logger.info(
            "retrying %s/%s (attempt %d failed: %s); waiting %.2f s",
            self.provider_name,
            request.model,
            len(log.failed),
            log.failed[-1]["type"],
            wait,
        )

    async def _attempt(self, request: ChatRequest, log: AttemptLog) -> ProviderResponse:
        try:
            response = await self._attempt_once(request, log)
        except asyncio.CancelledError:
            raise  # still in flight: the cancelled row counts this attempt
        except BaseException:
            log.in_flight = False
            raise
        log.in_flight = False
        return response

    async def _attempt_once(self, request: ChatRequest, log: AttemptLog) -> ProviderResponse:
        permit = await self.limits.acquire(request.model, request.estimated_tokens())
        log.in_flight = True  # from here on the attempt counts, sent or not
        started = time.perf_counter()
        self.provider_calls += 1
        try:
            response = await self.provider.complete(
                messages=request.messages,
                sample_index=request.sample_index,
                model=request.model,
                **request.params,
            )
        except asyncio.CancelledError:
            permit.release()
            raise
        except Exception as exc:
            error = exc if isinstance(exc, ProviderError) else _internal_error(exc, self)
            permit.release(
                rate_limit=error.rate_limit,
                rate_limited=error.status_code == 429,
                retry_after=error.retry_after,
            )
            log.record(error, started)
            if error is exc:
                raise
            raise error from exc
        permit.release(response.tokens, response.rate_limit)
        return response


def _internal_error(exc: Exception, runner: AttemptRunner) -> ProviderError:
    """A provider raised something other than `ProviderError`: a bug, never retried."""
    return ProviderError(
        f"{runner.provider_name}: {type(exc).__name__}: {exc}",
        runner.provider_name,
        error_type="internal_error",
    )
