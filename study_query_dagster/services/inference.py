"""`InferenceService`: retry, preprocessing, batching, sampling, dedup, rate limits and
immutable capture around one provider.

Every call — success, failed, timeout, cancelled — becomes one raw_calls row (see
`CaptureWriter` for how writes are batched yet durable). The row format is a contract other
layers read; docs/API.md describes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from ..db import DatabaseConnection, GroupRepository, RawCall, RawCallRepository
from ..db.types import utcnow
from ..log import get_logger
from ..providers.base import BaseLLMProvider, Message, ProviderError, check_params, to_messages
from .capture import CaptureWriter, Membership
from .preprocessing import PromptPreprocessor
from .pricing import estimate_cost, get_price_table
from .rate_limits import ProviderLimits

logger = get_logger(__name__)

REQUEST_HASH_KEY_VERSION = 1
# Keys the service writes into metadata_json; caller-supplied extra_metadata may not use them.
RESERVED_METADATA_KEYS = frozenset(
    {"request_hash", "attempts", "attempt_errors", "sample_index", "preprocessing", "cost_usd",
     "provider_request_id", "response_model", "elapsed_ms"}
)  # fmt: skip


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def compute_request_hash(
    provider: str,
    model: str | None,
    messages: list[Message],
    params: Mapping[str, Any],
    sample_index: int | None = None,
) -> str:
    """sha256 hex of the canonical JSON of the whole request (sorted keys, compact separators,
    ensure_ascii=False): the identity used for dedup, the response cache and resuming runs.
    `key_version` changes whenever this recipe does, so old and new hashes never collide."""
    payload = {
        "key_version": REQUEST_HASH_KEY_VERSION,
        "provider": provider,
        "model": model,
        "messages": messages,
        "params": dict(params),
        "sample_index": sample_index,
    }
    try:
        text = _canonical_json(payload)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"request is not JSON-serialisable: {exc}") from exc
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class _Request:
    """One validated call, ready to send."""

    messages: list[Message]
    params: dict[str, Any]
    model: str | None
    sample_index: int | None
    extra_metadata: dict[str, Any]
    prompt: str | None  # the plain prompt as sent, when the caller gave one
    preprocessing: dict[str, Any] | None
    request_hash: str
    cache: bool

    @property
    def request_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"messages": self.messages, "params": self.params}
        if self.prompt is not None:
            out["prompt"] = self.prompt
        return out

    def estimated_tokens(self) -> int:
        chars = sum(len(str(m.get("content") or "")) for m in self.messages)
        limit = self.params.get("max_tokens") or self.params.get("max_completion_tokens") or 0
        return math.ceil(chars / 4) + (limit if isinstance(limit, int) else 0)


@dataclass
class _Outcome:
    result: dict[str, Any]
    error: ProviderError | None = None


class _Shared:
    """An in-flight call that identical concurrent requests wait on together."""

    def __init__(self, task: asyncio.Task, memberships: list[Membership]):
        self.task = task
        self.group_ids = {m.group_id for m in memberships}
        self.waiters = 0


class BatchResults(list):
    """Results in input order; `group_id` is the group the calls were added to (None without
    a database)."""

    group_id: int | None = None


class InferenceService:
    """Calls one provider with retries and captures every call.

    max_retries: retries after the first attempt (attempts = max_retries + 1); only
    retryable `ProviderError`s are retried, with exponential backoff and jitter from
    `initial_wait` to `max_wait` seconds, or the server's Retry-After (capped at
    `max_retry_after`, default the LLM_MAX_RETRY_AFTER_S setting).

    max_concurrency, requests_per_minute, tokens_per_minute: this service's own limits;
    `limits` (a `ProviderLimits`) instead shares them with other services of one provider.
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
        limits: ProviderLimits | None = None,
    ):
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0 (got {max_retries})")
        if initial_wait < 0 or max_wait < initial_wait:
            raise ValueError(f"need 0 <= initial_wait <= max_wait (got {initial_wait}, {max_wait})")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1 (got {max_concurrency})")
        if max_retry_after is None:
            from ..config import get_settings

            max_retry_after = get_settings().llm_max_retry_after_s
        get_price_table()  # a bad PRICING_FILE fails here, not after the first paid answer
        self.provider = provider
        self.provider_name = provider.get_provider_name()
        self.db = db
        self.max_retries = max_retries
        self.initial_wait = initial_wait
        self.max_wait = max_wait
        self.max_retry_after = max_retry_after
        self.max_concurrency = max_concurrency
        self.preprocess = preprocess
        # Whether aclose() also closes the provider (its HTTP client): when the service was
        # built around a provider nobody else holds (LLMProvidersResource.create_service).
        self.close_provider = close_provider
        self.preprocessor = preprocessor or PromptPreprocessor()
        # Shared limits (one provider, several services) replace the service's own.
        self.limits = limits or ProviderLimits(
            max_concurrency, requests_per_minute, tokens_per_minute
        )
        self.rpm, self.tpm = self.limits.rpm, self.limits.tpm
        self.max_concurrency = self.limits.max_concurrency
        # initial_wait * 2^(n-1) plus up to initial_wait of jitter, at most max_wait.
        self._backoff = wait_exponential(multiplier=initial_wait, max=max_wait) + wait_random(
            0, initial_wait
        )
        self._writer = CaptureWriter(db) if db is not None else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._inflight: dict[tuple[str, bool], _Shared] = {}
        self.provider_calls = 0  # attempts sent to the provider, for reports and tests

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
        **params: Any,
    ) -> dict[str, Any]:
        """One call. Returns {"id", "status", "response", "error", "metadata"}; after the
        last failed attempt raises `ProviderError` (with `.call_id`), the failure persisted
        first. `cache=True` returns an earlier successful row with the same request hash
        instead of calling the provider; `group_id` adds the call to an existing group."""
        request = self._prepare(prompt, messages, sample_index, extra_metadata, cache, params)
        self._bind_loop()
        if group_id is not None:
            await self._check_group(group_id)
        memberships = [Membership(group_id, None, group_role)] if group_id is not None else []
        try:
            outcome = await self._run_shared(request, memberships)
        except asyncio.CancelledError:
            self._flush_sync()
            raise
        if outcome.error is not None:
            raise _error_for_caller(outcome)
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
        "params" (merged over the batch's). All calls join one group: `group_id` (existing),
        or (`group_type`, `group_name`) got-or-created, or a new `batch` group."""
        if isinstance(prompts, str | bytes) or not isinstance(prompts, Sequence):
            raise ValueError("run_batch needs a list of prompts")
        requests = [
            self._prepare_item(i, item, extra_metadata, cache, params)
            for i, item in enumerate(prompts)
        ]
        return await self._run_many(
            requests, group_id, group_type, group_name,
            {"kind": "batch", "size": len(requests), "params": _jsonable(params)},
        )  # fmt: skip

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
            self._prepare(prompt, messages, i, extra_metadata, cache, dict(params))
            for i in range(n)
        ]
        return await self._run_many(
            requests, group_id, group_type, group_name,
            {"kind": "sampling", "size": n, "params": _jsonable(params)},
        )  # fmt: skip

    async def aclose(self) -> None:
        """Write anything still pending (calls normally return only once captured) and stop
        the capture thread; close the provider too if the service owns it (`close_provider`)."""
        if self._writer is not None:
            self._writer.close()
        if self.close_provider:
            await self.provider.aclose()

    async def __aenter__(self) -> InferenceService:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    # --- preparing requests ----------------------------------------------------------------

    def _prepare(
        self,
        prompt: str | None,
        messages: list[Message] | None,
        sample_index: int | None,
        extra_metadata: Mapping[str, Any] | None,
        cache: bool,
        params: dict[str, Any],
    ) -> _Request:
        """Validate everything before any call: bad input fails here, nothing sent or written."""
        check_params(params)
        model = params.pop("model", None) or self.provider.model
        original = to_messages(prompt, messages)
        if sample_index is not None and (
            not isinstance(sample_index, int) or isinstance(sample_index, bool) or sample_index < 0
        ):
            raise ValueError(f"sample_index must be an integer >= 0 (got {sample_index!r})")
        extra = dict(extra_metadata or {})
        clash = sorted(RESERVED_METADATA_KEYS.intersection(extra))
        if clash:
            raise ValueError(f"extra_metadata may not set {clash}: the service writes them")
        if extra:
            try:
                _canonical_json(extra)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"extra_metadata must be JSON-serialisable: {exc}") from exc

        sent, sent_prompt, preprocessing = original, prompt, None
        if self.preprocess:
            sent, changed = [], []
            for message in original:
                content = message.get("content")
                if isinstance(content, str):
                    cleaned, steps = self.preprocessor.process(content)
                    changed.extend(s for s in steps if s not in changed)
                    message = {**message, "content": cleaned}
                sent.append(message)
            preprocessing = {"steps": self.preprocessor.steps, "changed": changed}
            if prompt is not None:
                sent_prompt = sent[0]["content"]
                if sent_prompt != prompt:
                    preprocessing["original_prompt"] = prompt
            elif sent != original:
                preprocessing["original_messages"] = original
        try:  # hashing serialises the whole request: that is the params check too
            request_hash = compute_request_hash(
                self.provider_name, model, sent, params, sample_index
            )
        except ValueError as exc:
            raise ValueError(f"messages and params must be JSON-serialisable: {exc}") from exc
        return _Request(
            messages=sent, params=params, model=model, sample_index=sample_index,
            extra_metadata=extra, prompt=sent_prompt, preprocessing=preprocessing,
            request_hash=request_hash, cache=bool(cache),
        )  # fmt: skip

    def _prepare_item(self, index, item, extra_metadata, cache, params) -> _Request:
        where = f"prompts[{index}]"
        try:
            if isinstance(item, str):
                return self._prepare(item, None, None, extra_metadata, cache, dict(params))
            if isinstance(item, list):
                return self._prepare(None, item, None, extra_metadata, cache, dict(params))
            if isinstance(item, Mapping):
                unknown = set(item) - {"prompt", "messages", "sample_index", "extra_metadata",
                                       "params"}  # fmt: skip
                if unknown:
                    raise ValueError(f"unknown key(s) {sorted(unknown)}")
                extra = {**(extra_metadata or {}), **(item.get("extra_metadata") or {})}
                merged = {**params, **(item.get("params") or {})}
                return self._prepare(item.get("prompt"), item.get("messages"),
                                     item.get("sample_index"), extra, cache, merged)  # fmt: skip
            raise ValueError(
                f"expected a prompt, a message list or a dict, got {type(item).__name__}"
            )
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc

    # --- running -----------------------------------------------------------------------------

    def _bind_loop(self) -> None:
        """asyncio primitives belong to one loop; Dagster runs one loop per step."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._semaphore = self.limits.semaphore()
            self._inflight = {}

    async def _run_many(self, requests, group_id, group_type, group_name, group_meta):
        self._bind_loop()
        if not requests and group_id is None and not group_name:
            return BatchResults()  # nothing to run: no empty group either
        started = time.perf_counter()
        model = requests[0].model if requests else self.provider.model
        group_meta = {"provider": self.provider_name, "model": model, **group_meta}
        gid, base = await self._resolve_group(group_id, group_type, group_name, group_meta)

        def members(i: int) -> list[Membership]:
            return [Membership(gid, base + i + 1, None)] if gid is not None else []

        # A pool of workers rather than one task per item: a 100k-prompt batch stays a few
        # hundred live tasks. Twice the concurrency keeps every slot busy while some workers
        # wait for their row to be committed.
        outcomes: list[_Outcome | None] = [None] * len(requests)
        todo = iter(enumerate(requests))

        async def worker() -> None:
            for i, request in todo:
                outcomes[i] = await self._run_shared(request, members(i))

        workers = [
            asyncio.ensure_future(worker())
            for _ in range(min(len(requests), 2 * self.max_concurrency))
        ]
        try:
            await asyncio.gather(*workers)
        except BaseException as exc:
            # Cancelled, or a worker failed (its row could not be captured): stop the other
            # workers too, so that no call is sent after the batch has given up.
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self._flush_sync()
            logger.warning("batch group=%s stopped after %.1f s: %s", gid,
                           time.perf_counter() - started, type(exc).__name__)  # fmt: skip
            raise
        results = BatchResults(o.result for o in outcomes if o is not None)
        results.group_id = gid
        for result in results:
            result["metadata"]["group_id"] = gid
        statuses: dict[str, int] = {}
        for r in results:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        logger.info(
            "batch group=%s provider=%s: %d calls %s in %.2f s",
            gid, self.provider_name, len(results), statuses, time.perf_counter() - started,
        )  # fmt: skip
        return results

    async def _run_shared(self, request: _Request, memberships: list[Membership]) -> _Outcome:
        """Identical concurrent requests share one provider call and one raw_calls row."""
        key = (request.request_hash, request.cache)
        shared = self._inflight.get(key)
        owner = shared is None
        if shared is None:
            task = asyncio.ensure_future(self._execute(request, memberships))
            shared = self._inflight[key] = _Shared(task, memberships)
            task.add_done_callback(lambda _t, k=key, s=shared: self._forget(k, s))
        shared.waiters += 1
        try:
            outcome: _Outcome = await asyncio.shield(shared.task)
        except asyncio.CancelledError:
            shared.waiters -= 1
            if shared.waiters == 0 and not shared.task.done():
                # The last one waiting is gone: stop the call and let it record itself.
                shared.task.cancel()
                await asyncio.wait([shared.task])
            raise
        shared.waiters -= 1
        if owner:
            return outcome
        result = copy.deepcopy(outcome.result)
        result["metadata"]["deduplicated"] = True
        call_id = result["id"]
        extra = [m for m in memberships if m.group_id not in shared.group_ids]
        if extra and call_id is not None and self._writer is not None:
            await self._await_capture(self._writer.add_members(call_id, extra))
        return _Outcome(result, outcome.error)

    def _forget(self, key, shared: _Shared) -> None:
        if self._inflight.get(key) is shared:
            del self._inflight[key]

    async def _execute(self, request: _Request, memberships: list[Membership]) -> _Outcome:
        if request.cache and self.db is not None:
            cached = await asyncio.to_thread(self._find_cached, request.request_hash)
            if cached is not None:
                if memberships and self._writer is not None:
                    await self._await_capture(self._writer.add_members(cached.id, memberships))
                logger.debug("cache hit: request %s -> raw_call %s", request.request_hash[:12],
                             cached.id)  # fmt: skip
                return _Outcome(_cached_result(cached))
        attempts: list[dict[str, Any]] = []  # one entry per failed attempt
        in_flight: list[bool] = [False]  # is an attempt running (vs. waiting to retry)?
        started = time.perf_counter()
        response, error = None, None
        try:
            response = await self._call_with_retry(request, attempts, in_flight)
        except ProviderError as exc:
            error = exc
        except asyncio.CancelledError:
            if self._writer is not None:
                row = self._cancelled_row(request, attempts, started, in_flight)
                self._writer.submit(row, memberships)
                self._writer.flush_soon()
            raise
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        row = (
            self._success_row(request, response, attempts, elapsed_ms)
            if error is None
            else self._failure_row(request, error, attempts, elapsed_ms)
        )
        call_id = None
        if self._writer is not None:
            call_id = await self._await_capture(self._writer.submit(row, memberships))
        result = _result_from_row(row, call_id)
        if error is None:
            logger.debug("call %s ok: %s/%s %.0f ms, %d attempt(s)", call_id, self.provider_name,
                         request.model, row["latency_ms"] or 0, len(attempts) + 1)  # fmt: skip
        else:
            logger.warning("call %s %s: %s/%s after %d attempt(s): %s", call_id, row["status"],
                           self.provider_name, request.model, len(attempts),
                           error.message)  # fmt: skip
        return _Outcome(result, error)

    async def _await_capture(self, future: asyncio.Future) -> int:
        # Not shielded: if we are cancelled the future is cancelled too, and the writer
        # skips settling it; the row itself is written regardless.
        try:
            return await future
        except asyncio.CancelledError:
            self._flush_sync()
            raise

    def _flush_sync(self) -> None:
        if self._writer is not None:
            self._writer.flush_sync()

    # --- retries -----------------------------------------------------------------------------

    async def _call_with_retry(self, request: _Request, attempts: list[dict[str, Any]],
                               in_flight: list[bool]):  # fmt: skip
        """The first attempt runs directly: most calls need no retry, and tenacity's per-call
        bookkeeping costs more than a fast provider call. A retryable failure hands the
        remaining attempts to tenacity, after the wait the first failure earned."""
        try:
            return await self._attempt(request, attempts, in_flight)
        except ProviderError as error:
            if not error.retryable or self.max_retries == 0:
                raise
            wait = self._wait_after(error, attempt_number=1)
        self._before_retry(request, attempts, wait)
        await asyncio.sleep(wait)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries),  # attempts 2 .. max_retries + 1
            retry=retry_if_exception(lambda e: isinstance(e, ProviderError) and e.retryable),
            wait=lambda state: self._wait_after(
                state.outcome.exception(), attempt_number=state.attempt_number + 1
            ),
            before_sleep=lambda state: self._before_retry(
                request, attempts, state.next_action.sleep
            ),
            reraise=True,
        )
        return await retrying(self._attempt, request, attempts, in_flight)

    def _wait_after(self, error: BaseException | None, attempt_number: int) -> float:
        """Seconds to wait after failed attempt `attempt_number`: the server's Retry-After
        (capped), else exponential backoff with jitter."""
        if isinstance(error, ProviderError) and error.retry_after is not None:
            return min(error.retry_after, self.max_retry_after)
        # tenacity's wait strategies only read the attempt number from the call state.
        state = SimpleNamespace(attempt_number=attempt_number)
        return min(self.max_wait, self._backoff(state))

    def _before_retry(self, request: _Request, attempts: list[dict[str, Any]], wait: float):
        attempts[-1]["waited_s"] = round(wait, 3)
        logger.info(
            "retrying %s/%s (attempt %d failed: %s); waiting %.2f s",
            self.provider_name, request.model, len(attempts), attempts[-1]["type"], wait,
        )  # fmt: skip

    async def _attempt(self, request: _Request, attempts: list[dict[str, Any]],
                       in_flight: list[bool]):  # fmt: skip
        assert self._semaphore is not None
        try:
            response = await self._attempt_once(request, attempts, in_flight)
        except asyncio.CancelledError:
            raise  # still in flight: the cancelled row counts this attempt
        except BaseException:
            in_flight[0] = False
            raise
        in_flight[0] = False
        return response

    async def _attempt_once(self, request: _Request, attempts: list[dict[str, Any]], in_flight):
        assert self._semaphore is not None
        async with self._semaphore:
            if self.rpm is not None:
                await self.rpm.acquire(1)
            reserved = await self.tpm.acquire(request.estimated_tokens()) if self.tpm else 0.0
            in_flight[0] = True  # from here on the attempt counts, sent or not
            started = time.perf_counter()
            self.provider_calls += 1
            try:
                response = await self.provider.complete(
                    messages=request.messages, sample_index=request.sample_index,
                    model=request.model, **request.params,
                )  # fmt: skip
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc if isinstance(exc, ProviderError) else ProviderError(
                    f"{self.provider_name}: {type(exc).__name__}: {exc}", self.provider_name,
                    error_type="internal_error",
                )  # fmt: skip
                attempts.append(_attempt_entry(len(attempts) + 1, error, started))
                if error is exc:
                    raise
                raise error from exc
            if self.tpm is not None and response.tokens is not None:
                self.tpm.adjust(response.tokens - reserved)
            return response

    # --- rows and results ----------------------------------------------------------------

    def _metadata(self, request: _Request, attempts: int, elapsed_ms: float) -> dict[str, Any]:
        return {
            **request.extra_metadata,
            "request_hash": request.request_hash,
            "attempts": attempts,
            "sample_index": request.sample_index,
            "preprocessing": request.preprocessing,
            "elapsed_ms": round(elapsed_ms, 3),
        }

    def _row(self, request: _Request, status: str, **fields: Any) -> dict[str, Any]:
        return {
            "provider": self.provider_name,
            "model": request.model,
            "modality": "text",
            "status": status,
            "request_hash": request.request_hash,
            "request_json": request.request_json,
            "created_at": utcnow(),
            **fields,
        }

    def _success_row(self, request, response, failed_attempts, elapsed_ms) -> dict[str, Any]:
        response_model = response.metadata.get("response_model") or response.model
        cost = estimate_cost(self.provider_name, response_model, response.prompt_tokens,
                             response.completion_tokens)  # fmt: skip
        if cost is None and response_model != request.model:
            cost = estimate_cost(self.provider_name, request.model, response.prompt_tokens,
                                 response.completion_tokens)  # fmt: skip
        metadata = self._metadata(request, len(failed_attempts) + 1, elapsed_ms)
        metadata.update(
            cost_usd=cost,
            provider_request_id=response.metadata.get("request_id"),
            response_model=response_model,
        )
        if failed_attempts:
            metadata["attempt_errors"] = failed_attempts
        return self._row(
            request, "success",
            response_json={"text": response.text, "finish_reason": response.finish_reason,
                           "id": response.metadata.get("response_id")},
            error_json=None,
            latency_ms=response.latency_ms,
            tokens_json=response.tokens_json(),
            metadata_json=metadata,
        )  # fmt: skip

    def _failure_row(self, request, error: ProviderError, attempts, elapsed_ms) -> dict[str, Any]:
        metadata = self._metadata(request, len(attempts), elapsed_ms)
        metadata.update(cost_usd=None, provider_request_id=error.request_id)
        return self._row(
            request, "timeout" if error.is_timeout else "failed",
            response_json=None,
            error_json={"type": error.error_type, "message": error.message,
                        "status_code": error.status_code, "retryable": error.retryable,
                        "attempts": attempts},
            latency_ms=attempts[-1]["latency_ms"] if attempts else None,
            tokens_json=None,
            metadata_json=metadata,
        )  # fmt: skip

    def _cancelled_row(self, request, attempts, started: float, in_flight) -> dict[str, Any]:
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        metadata = self._metadata(request, len(attempts) + int(in_flight[0]), elapsed_ms)
        metadata.update(cost_usd=None, provider_request_id=None)
        return self._row(
            request, "cancelled",
            response_json=None,
            error_json={"type": "cancelled",
                        "message": "cancelled while in flight (task cancelled or interrupted)",
                        "status_code": None, "retryable": False, "attempts": attempts},
            latency_ms=elapsed_ms,
            tokens_json=None,
            metadata_json=metadata,
        )  # fmt: skip

    # --- database helpers (run in a worker thread) -----------------------------------------

    def _find_cached(self, request_hash: str) -> RawCall | None:
        assert self.db is not None
        with self.db.session_scope() as session:
            return RawCallRepository(session).latest_success(request_hash)

    async def _check_group(self, group_id: int) -> None:
        if self.db is None:
            raise ValueError("group_id needs a database (InferenceService(provider, db=...))")

        def check():
            with self.db.session_scope() as session:
                if GroupRepository(session).get_group(group_id) is None:
                    raise ValueError(f"group_id {group_id} does not exist")

        await asyncio.to_thread(check)

    async def _resolve_group(self, group_id, group_type, group_name, metadata):
        """(group id, highest position in it) — or (None, 0) without a database."""
        if self.db is None:
            if group_id is not None:
                raise ValueError("group_id needs a database (InferenceService(provider, db=...))")
            return None, 0

        def resolve():
            with self.db.session_scope() as session:
                repo = GroupRepository(session)
                if group_id is not None:
                    if repo.get_group(group_id) is None:
                        raise ValueError(f"group_id {group_id} does not exist")
                    gid = group_id
                elif group_name:
                    gid = repo.get_or_create_group(group_type, group_name, metadata_json=metadata)
                else:
                    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
                    name = f"{group_type}-{stamp}-{uuid.uuid4().hex[:8]}"
                    gid = repo.create_group(group_type, name, metadata_json=metadata)
                return gid, repo.max_position(gid)

        return await asyncio.to_thread(resolve)


# --- helpers ---------------------------------------------------------------------------------


def _attempt_entry(number: int, error: ProviderError, started: float) -> dict[str, Any]:
    return {
        "attempt": number,
        "type": error.error_type,
        "status_code": error.status_code,
        "message": error.message,
        "retry_after": error.retry_after,
        "waited_s": None,
        "latency_ms": round((time.perf_counter() - started) * 1000.0, 3),
    }


def _result_from_row(row: Mapping[str, Any], call_id: int | None) -> dict[str, Any]:
    tokens = row.get("tokens_json") or {}
    response = row.get("response_json") or {}
    metadata = {
        "provider": row["provider"],
        "model": row["model"],
        "tokens": tokens.get("total_tokens"),
        "prompt_tokens": tokens.get("prompt_tokens"),
        "completion_tokens": tokens.get("completion_tokens"),
        "latency_ms": row.get("latency_ms"),
        "finish_reason": response.get("finish_reason"),
        **(row.get("metadata_json") or {}),
        "cached": False,
        "deduplicated": False,
    }
    return {
        "id": call_id,
        "status": row["status"],
        "response": response.get("text") if row["status"] == "success" else None,
        "error": row.get("error_json"),
        "metadata": metadata,
    }


def _cached_result(call: RawCall) -> dict[str, Any]:
    result = _result_from_row(call.to_dict(), call.id)
    result["metadata"].update(cached=True, cached_call_id=call.id)
    return result


def _error_for_caller(outcome: _Outcome) -> ProviderError:
    """A fresh exception per caller (deduplicated callers share one outcome)."""
    source = outcome.error
    assert source is not None
    error = ProviderError(
        source.message, source.provider, source.status_code, source.retryable,
        source.retry_after, source.error_type, source.request_id,
    )  # fmt: skip
    error.call_id = outcome.result["id"]  # type: ignore[attr-defined]
    error.status = outcome.result["status"]  # type: ignore[attr-defined]
    error.attempts = (outcome.result["error"] or {}).get("attempts", [])  # type: ignore[attr-defined]
    return error


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in params.items() if k != "model"}
    with contextlib.suppress(TypeError, ValueError):
        _canonical_json(out)
        return out
    return {k: repr(v) for k, v in out.items()}
