"""`InferenceService`: the front door for chat calls to one provider. It validates requests,
shares identical in-flight ones, sends them with retries under the provider's limits, and
captures every call (success, failed, timeout, cancelled) as one raw_calls row."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ...db import DatabaseConnection
from ...log import get_logger
from ...providers.base import BaseLLMProvider, Message, ProviderError
from ..preprocessing import PromptPreprocessor
from ..pricing import get_price_table
from ..retry import RetryPolicy
from .attempts import AttemptLog, AttemptRunner
from .batching import BatchResults, run_pool, stream_pool
from .capture import Membership
from .dedup import InflightCalls
from .rate_limits import ProviderLimits
from .records import (
    Outcome,
    cached_result,
    cancelled_row,
    error_for_caller,
    failure_row,
    move_large_payloads,
    result_from_row,
    success_row,
)
from .requests import ChatRequest, RequestBuilder, jsonable_params
from .shared_limits import SharedProviderLimits
from .store import CallStore, NoStore

logger = get_logger(__name__)


class InferenceService:
    """Calls one provider with retries and captures every call.

    max_retries, initial_wait, max_wait, max_retry_after: the `RetryPolicy` (only retryable
    `ProviderError`s are retried; the server's Retry-After, capped at `max_retry_after`,
    default the LLM_MAX_RETRY_AFTER_S setting, replaces the backoff).

    max_concurrency, requests_per_minute, tokens_per_minute: this service's own limits;
    `limits` (a `ProviderLimits`) instead shares them with other services of one provider, or
    (a `SharedProviderLimits`) with every process calling the provider's account.
    """

    def __init__(
        self,
        provider: BaseLLMProvider,
        db: DatabaseConnection | None = None,
        *,
        max_retries: int = 3,
        initial_wait: float = 1.0,
        max_wait: float = 10.0,
        max_retry_after: float | None = None,
        max_concurrency: int = 16,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        preprocess: bool = False,
        preprocessor: PromptPreprocessor | None = None,
        close_provider: bool = False,
        limits: ProviderLimits | SharedProviderLimits | None = None,
    ):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1 (got {max_concurrency})")
        if max_retry_after is None:
            from ...config import get_settings

            max_retry_after = get_settings().llm_max_retry_after_s
        self.retry_policy = RetryPolicy(max_retries, initial_wait, max_wait, max_retry_after)
        get_price_table()  # a bad PRICING_FILE fails here, not after the first paid answer
        self.provider = provider
        self.provider_name = provider.get_provider_name()
        self.db = db
        self.preprocess = preprocess
        self.preprocessor = preprocessor or PromptPreprocessor()
        # Whether aclose() also closes the provider (its HTTP client): when the service was
        # built around a provider nobody else holds (LLMProvidersResource.create_service).
        self.close_provider = close_provider
        # Shared limits (one provider, several services) replace the service's own.
        self.limits = limits or ProviderLimits(
            max_concurrency, requests_per_minute, tokens_per_minute
        )
        self.max_concurrency = self.limits.max_concurrency
        self._builder = RequestBuilder(
            self.provider_name, provider.model, self.preprocessor if preprocess else None
        )
        self._runner = AttemptRunner(provider, self.limits, self.retry_policy)
        self._store: CallStore | NoStore = CallStore(db) if db is not None else NoStore()
        self._inflight = InflightCalls()

    @property
    def rpm(self):
        return self.limits.rpm

    @property
    def tpm(self):
        return self.limits.tpm

    @property
    def provider_calls(self) -> int:
        """Attempts sent to the provider so far."""
        return self._runner.provider_calls

    # --- public API --------------------------------------------------------------------------

    async def run_inference(
        self,
        prompt: str | None = None,
        *,
        messages: list[Message] | None = None,
        sample_index: int | None = None,
        extra_metadata: Mapping[str, Any] | None = None,
        cache: bool = False,
        group_id: int | None = None,
        group_role: str | None = None,
        group_position: int | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """One call. Returns {"id", "status", "response", "error", "metadata"}; after the
        last failed attempt raises `ProviderError` (with `.call_id`), the failure persisted
        first. `cache=True` returns an earlier successful row with the same request hash
        instead of calling the provider; `group_id` adds the call to an existing group (at
        `group_position`, default after its last member, with `group_role`)."""
        request = self._builder.build(prompt, messages, sample_index, extra_metadata, cache, params)
        if group_id is not None:
            await self._store.check_group(group_id)
        memberships = []
        if group_id is not None:
            memberships = [Membership(group_id, group_position, group_role)]
        try:
            outcome = await self._inflight.run(
                request, memberships, self._execute, self._store.join
            )
        except asyncio.CancelledError:
            self._store.flush_sync()
            raise
        if outcome.error is not None:
            raise error_for_caller(outcome)
        outcome.result["metadata"]["group_id"] = group_id
        return outcome.result

    async def run_batch(
        self,
        prompts: Sequence[str | list[Message] | Mapping[str, Any]],
        *,
        group_id: int | None = None,
        group_type: str = "batch",
        group_name: str | None = None,
        extra_metadata: Mapping[str, Any] | None = None,
        cache: bool = False,
        **params: Any,
    ) -> BatchResults:
        """Many calls with bounded concurrency; results in input order. A failed item is a
        result with status and error (the batch goes on). Items are prompts, message lists,
        or dicts with "prompt" or "messages" and optional "sample_index", "extra_metadata",
        "params" (merged over the batch's) and "position" (in the group; default: input order
        after the group's last member). All calls join one group: `group_id` (existing), or
        (`group_type`, `group_name`) got-or-created, or a new `batch` group."""
        if isinstance(prompts, str | bytes) or not isinstance(prompts, Sequence):
            raise ValueError("run_batch needs a list of prompts")
        requests = [
            self._builder.build_item(i, item, extra_metadata, cache, params)
            for i, item in enumerate(prompts)
        ]
        group_meta = {"kind": "batch", "size": len(requests), "params": jsonable_params(params)}
        return await self._run_many(requests, group_id, group_type, group_name, group_meta)

    async def run_stream(
        self,
        items: Iterable[Mapping[str, Any]],
        *,
        group_id: int | None = None,
        extra_metadata: Mapping[str, Any] | None = None,
        cache: bool = False,
        **params: Any,
    ) -> Counter:
        """`run_batch` for a stream of any length (items as `run_batch` takes them, each with
        its "position" when `group_id` is given): a request is built when a worker reaches
        its item and its result is not kept, so memory stays flat. Returns how many calls
        ended with each status. Check the items before (a bad one stops the stream where it
        is, as a failed capture does)."""
        if group_id is not None:
            await self._store.check_group(group_id)
        counts: Counter = Counter()

        async def call(i: int, item: Mapping[str, Any]) -> None:
            request = self._builder.build_item(i, item, extra_metadata, cache, params)
            memberships = [Membership(group_id, request.position, None)] if group_id else []
            outcome = await self._inflight.run(
                request, memberships, self._execute, self._store.join
            )
            counts[outcome.result["status"]] += 1

        try:
            await stream_pool(items, 2 * self.max_concurrency, call)
        except BaseException:
            self._store.flush_sync()
            raise
        return counts

    def check_item(self, item: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> None:
        """Raise ValueError when `item` (as `run_batch` takes it) is not a valid request."""
        self._builder.build_item(0, item, None, False, dict(params or {}))

    async def run_sampling(
        self,
        prompt: str | None = None,
        n: int | None = None,
        *,
        messages: list[Message] | None = None,
        group_id: int | None = None,
        group_type: str = "sampling",
        group_name: str | None = None,
        extra_metadata: Mapping[str, Any] | None = None,
        cache: bool = False,
        **params: Any,
    ) -> BatchResults:
        """n independent calls of one prompt, with sample_index 0..n-1, grouped."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"run_sampling needs n >= 1 (got {n!r})")
        requests = [
            self._builder.build(prompt, messages, i, extra_metadata, cache, dict(params))
            for i in range(n)
        ]
        group_meta = {"kind": "sampling", "size": n, "params": jsonable_params(params)}
        return await self._run_many(requests, group_id, group_type, group_name, group_meta)

    async def named_group(self, group_type: str, group_name: str) -> int:
        """The id of group (`group_type`, `group_name`), created if missing (needs a db)."""
        group_id, _ = await self._store.resolve_group(None, group_type, group_name, {})
        if group_id is None:
            raise ValueError("a named group needs a database (InferenceService(provider, db=...))")
        return group_id

    async def aclose(self) -> None:
        """Write anything still pending (calls normally return only once captured) and stop
        the capture thread; close the provider too if the service owns it (`close_provider`).
        Shared limits get the attempts that ended recorded first."""
        await self.limits.drain()
        self._store.close()
        if self.close_provider:
            await self.provider.aclose()

    async def __aenter__(self) -> InferenceService:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    # --- running -----------------------------------------------------------------------------

    async def _run_many(
        self,
        requests: list[ChatRequest],
        group_id: int | None,
        group_type: str,
        group_name: str | None,
        group_meta: dict[str, Any],
    ) -> BatchResults:
        if not requests and group_id is None and not group_name:
            return BatchResults()  # nothing to run: no empty group either
        started = time.perf_counter()
        model = requests[0].model if requests else self.provider.model
        group_meta = {"provider": self.provider_name, "model": model, **group_meta}
        gid, base = await self._store.resolve_group(group_id, group_type, group_name, group_meta)

        async def call(i: int, request: ChatRequest) -> Outcome:
            position = request.position if request.position is not None else base + i + 1
            memberships = [Membership(gid, position, None)] if gid is not None else []
            return await self._inflight.run(request, memberships, self._execute, self._store.join)

        # Twice the concurrency keeps every slot busy while some workers wait for their row
        # to be committed.
        try:
            outcomes = await run_pool(requests, 2 * self.max_concurrency, call)
        except BaseException as exc:
            self._store.flush_sync()
            logger.warning(
                "batch group=%s stopped after %.1f s: %s",
                gid,
                time.perf_counter() - started,
                type(exc).__name__,
            )
            raise
        results = BatchResults(o.result for o in outcomes)
        results.group_id = gid
        for result in results:
            result["metadata"]["group_id"] = gid
        logger.info(
            "batch group=%s provider=%s: %d calls %s in %.2f s",
            gid,
            self.provider_name,
            len(results),
            dict(Counter(r["status"] for r in results)),
            time.perf_counter() - started,
        )
        return results

    async def _execute(self, request: ChatRequest, memberships: list[Membership]) -> Outcome:
        """Make one call (or serve it from the cache) and capture it."""
        if request.cache:
            cached = await self._store.cached(request.request_hash)
            if cached is not None:
                await self._store.join(cached.id, memberships)
                logger.debug(
                    "cache hit: request %s -> raw_call %s", request.request_hash[:12], cached.id
                )
                return Outcome(cached_result(cached))
        log = AttemptLog()
        started = time.perf_counter()
        response, error = None, None
        try:
            response = await self._runner.send(request, log)
        except ProviderError as exc:
            error = exc
        except asyncio.CancelledError:
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            row = cancelled_row(self.provider_name, request, log.failed, log.started, elapsed_ms)
            self._store.save_cancelled(row, memberships)
            raise
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        if error is None:
            row = success_row(self.provider_name, request, response, log.failed, elapsed_ms)
        else:
            row = failure_row(self.provider_name, request, error, log.failed, elapsed_ms)
        result = result_from_row(row, call_id=None)
        artifacts = move_large_payloads(row)
        result["id"] = call_id = await self._store.save(row, memberships, artifacts)
        self._log_call(call_id, request, row, log, error)
        return Outcome(result, error)

    def _log_call(self, call_id, request: ChatRequest, row, log: AttemptLog, error) -> None:
        if error is None:
            logger.debug(
                "call %s ok: %s/%s %.0f ms, %d attempt(s)",
                call_id,
                self.provider_name,
                request.model,
                row["latency_ms"] or 0,
                len(log.failed) + 1,
            )
        else:
            logger.warning(
                "call %s %s: %s/%s after %d attempt(s): %s",
                call_id,
                row["status"],
                self.provider_name,
                request.model,
                len(log.failed),
                error.message,
            )
