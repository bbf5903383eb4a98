"""The raw_calls rows a chat call becomes (success, failed, timeout, cancelled) and the result
dicts callers get back. The row format is a contract other layers read: docs/API.md, "The
capture format"."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...db import RawCall
from ...db.types import utcnow
from ...providers.base import ProviderError, ProviderResponse
from ..pricing import estimate_cost
from .requests import ChatRequest


@dataclass
class Outcome:
    """What one call came to: the caller's result, and the error when it failed."""

    result: dict[str, Any]
    error: ProviderError | None = None


def attempt_entry(number: int, error: ProviderError, started: float) -> dict[str, Any]:
    """One failed attempt, as listed in error_json.attempts / metadata_json.attempt_errors."""
    return {
        "attempt": number,
        "type": error.error_type,
        "status_code": error.status_code,
        "message": error.message,
        "retry_after": error.retry_after,
        "waited_s": None,
        "latency_ms": round((time.perf_counter() - started) * 1000.0, 3),
    }


def _metadata(request: ChatRequest, attempts: int, elapsed_ms: float) -> dict[str, Any]:
    return {
        **request.extra_metadata,
        "request_hash": request.request_hash,
        "attempts": attempts,
        "sample_index": request.sample_index,
        "preprocessing": request.preprocessing,
        "elapsed_ms": round(elapsed_ms, 3),
    }


def _row(provider: str, request: ChatRequest, status: str, **fields: Any) -> dict[str, Any]:
    return {
        "provider": provider,
        "model": request.model,
        "modality": "text",
        "status": status,
        "request_hash": request.request_hash,
        "request_json": request.request_json,
        "created_at": utcnow(),
        **fields,
    }


def success_row(
    provider: str,
    request: ChatRequest,
    response: ProviderResponse,
    failed_attempts: list[dict[str, Any]],
    elapsed_ms: float,
) -> dict[str, Any]:
    response_model = response.metadata.get("response_model") or response.model
    cost = estimate_cost(
        provider, response_model, response.prompt_tokens, response.completion_tokens
    )
    if cost is None and response_model != request.model:
        cost = estimate_cost(
            provider, request.model, response.prompt_tokens, response.completion_tokens
        )
    metadata = _metadata(request, len(failed_attempts) + 1, elapsed_ms)
    metadata.update(
        cost_usd=cost,
        provider_request_id=response.metadata.get("request_id"),
        response_model=response_model,
    )
    if failed_attempts:
        metadata["attempt_errors"] = failed_attempts
    return _row(
        provider,
        request,
        "success",
        response_json={
            "text": response.text,
            "finish_reason": response.finish_reason,
            "id": response.metadata.get("response_id"),
        },
        error_json=None,
        latency_ms=response.latency_ms,
        tokens_json=response.tokens_json(),
        metadata_json=metadata,
    )


def failure_row(
    provider: str,
    request: ChatRequest,
    error: ProviderError,
    attempts: list[dict[str, Any]],
    elapsed_ms: float,
) -> dict[str, Any]:
    metadata = _metadata(request, len(attempts), elapsed_ms)
    metadata.update(cost_usd=None, provider_request_id=error.request_id)
    return _row(
        provider,
        request,
        "timeout" if error.is_timeout else "failed",
        response_json=None,
        error_json={
            "type": error.error_type,
            "message": error.message,
            "status_code": error.status_code,
            "retryable": error.retryable,
            "attempts": attempts,
        },
        latency_ms=attempts[-1]["latency_ms"] if attempts else None,
        tokens_json=None,
        metadata_json=metadata,
    )


def cancelled_row(
    provider: str,
    request: ChatRequest,
    failed_attempts: list[dict[str, Any]],
    started_attempts: int,
    elapsed_ms: float,
) -> dict[str, Any]:
    """A call cancelled while waiting or in flight; `started_attempts` counts the attempt that
    was in flight, if any."""
    metadata = _metadata(request, started_attempts, elapsed_ms)
    metadata.update(cost_usd=None, provider_request_id=None)
    return _row(
        provider,
        request,
        "cancelled",
        response_json=None,
        error_json={
            "type": "cancelled",
            "message": "cancelled while in flight (task cancelled or interrupted)",
            "status_code": None,
            "retryable": False,
            "attempts": failed_attempts,
        },
        latency_ms=elapsed_ms,
        tokens_json=None,
        metadata_json=metadata,
    )


def result_from_row(row: Mapping[str, Any], call_id: int | None) -> dict[str, Any]:
    """The caller's view of a row: {"id", "status", "response", "error", "metadata"}."""
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


def cached_result(call: RawCall) -> dict[str, Any]:
    result = result_from_row(call.to_dict(), call.id)
    result["metadata"].update(cached=True, cached_call_id=call.id)
    return result


def error_for_caller(outcome: Outcome) -> ProviderError:
    """A fresh exception per caller (deduplicated callers share one outcome), with the
    captured call's id, status and attempt list."""
    source = outcome.error
    assert source is not None
    error = ProviderError(
        source.message,
        source.provider,
        source.status_code,
        source.retryable,
        source.retry_after,
        source.error_type,
        source.request_id,
    )
    error.call_id = outcome.result["id"]  # type: ignore[attr-defined]
    error.status = outcome.result["status"]  # type: ignore[attr-defined]
    error.attempts = (outcome.result["error"] or {}).get("attempts", [])  # type: ignore[attr-defined]
    return error
