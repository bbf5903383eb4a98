"""The provider contract: `BaseLLMProvider`, `ProviderResponse`, and the one error type.

`ProviderError` is the whole error taxonomy. Retry policy lives in the services and looks only
at `retryable` and `retry_after`, so every client (openai SDK, httpx, offline) maps its own
failures here.
"""

from __future__ import annotations

import email.utils
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]

# HTTP statuses worth retrying: rate limit, request timeout, conflict, and server errors.
RETRYABLE_STATUSES = {408, 409, 429}
STATUS_ERROR_TYPES = {
    400: "bad_request",
    401: "authentication",
    403: "permission_denied",
    404: "not_found",
    408: "request_timeout",
    409: "conflict",
    422: "unprocessable_entity",
    429: "rate_limit",
}
CONTENT_FILTER_CODES = {
    "content_filter",
    "content_policy_violation",
    "responsibleaipolicyviolation",
}


class ProviderError(Exception):
    """A failed provider call, classified for retry decisions and capture."""

    def __init__(
        self,
        message: str,
        provider: str,
        status_code: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        error_type: str = "unknown",
        request_id: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status_code = status_code
        self.retryable = retryable
        self.retry_after = retry_after
        self.error_type = error_type
        self.request_id = request_id

    @property
    def is_timeout(self) -> bool:
        return self.error_type == "timeout"

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.error_type,
            "message": self.message,
            "status_code": self.status_code,
            "retryable": self.retryable,
            "retry_after": self.retry_after,
            "provider": self.provider,
            "request_id": self.request_id,
        }

    def __repr__(self) -> str:
        return (
            f"ProviderError({self.error_type}, provider={self.provider!r}, "
            f"status={self.status_code}, retryable={self.retryable}, message={self.message!r})"
        )


@dataclass
class ProviderResponse:
    text: str
    provider: str
    model: str | None = None
    tokens: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    finish_reason: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    raw_response: Any = None  # JSON-serialisable

    def tokens_json(self) -> dict[str, int | None]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.tokens,
        }


def to_messages(prompt: str | None = None, messages: list[Message] | None = None) -> list[Message]:
    """A plain prompt becomes one user message; exactly one of the two must be given."""
    if (prompt is None) == (messages is None):
        raise ValueError("give exactly one of `prompt` or `messages`")
    if messages is not None:
        if not isinstance(messages, list) or not messages:
            raise ValueError("`messages` must be a non-empty list of {'role', 'content'} dicts")
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping) or "role" not in message:
                raise ValueError(f"messages[{i}] must be a dict with a 'role' (got {message!r})")
        return [dict(m) for m in messages]
    if not isinstance(prompt, str):
        raise ValueError(f"`prompt` must be a string (got {type(prompt).__name__})")
    return [{"role": "user", "content": prompt}]


# Call params that are refused before any call, and why.
_SECRET = "credentials and transport belong in the provider's configuration"
FORBIDDEN_PARAMS = {
    **dict.fromkeys(
        [
            "api_key",
            "api-key",
            "authorization",
            "headers",
            "extra_headers",
            "extra_query",
            "http_client",
        ],
        _SECRET,
    ),
    "stream": "streaming is not supported",
    # n > 1 returns several choices in one call; only one would be captured and tokens
    # would be misattributed. Samples are separate calls.
    "n": "one call captures one answer: use samples (run_sampling) for several",
}


def check_params(params: Mapping[str, Any]) -> None:
    """Refuse call params that would leak a secret, change the transport or return several
    answers at once (before any call)."""
    bad = sorted(k for k in params if k.lower() in FORBIDDEN_PARAMS)
    if bad:
        reasons = "; ".join(f"{k}: {FORBIDDEN_PARAMS[k.lower()]}" for k in bad)
        raise ValueError(f"call parameter(s) {bad} are not allowed ({reasons})")


class BaseLLMProvider(ABC):
    """An async chat-completion client. Use as `async with provider: ...` or call `aclose()`.

    `complete(prompt=None, *, messages=None, sample_index=None, **params)`: `params` are the
    API's sampling parameters (temperature, max_tokens, seed, ...) plus an optional `model`
    override; `sample_index` identifies one of n independent samples (only the offline provider
    uses it, real APIs are sampled by temperature).
    """

    provider_name: str = "base"

    async def complete(
        self,
        prompt: str | None = None,
        *,
        messages: list[Message] | None = None,
        sample_index: int | None = None,
        **params: Any,
    ) -> ProviderResponse:
        """One chat completion. Bad arguments raise ValueError before anything is sent; any
        failure of the call itself raises `ProviderError`."""
        chat = to_messages(prompt, messages)
        check_params(params)
        model = params.pop("model", None) or self.model
        if not model:
            raise ValueError(f"{self.provider_name}: no model given (set one on the provider)")
        return await self._complete(chat, model, params, sample_index)

    @abstractmethod
    async def _complete(
        self, messages: list[Message], model: str, params: dict[str, Any], sample_index: int | None
    ) -> ProviderResponse:
        """The call itself, with validated messages, the model and the remaining params."""

    def get_provider_name(self) -> str:
        return self.provider_name

    @property
    def model(self) -> str | None:
        """The model (or deployment) this provider calls, when fixed at construction."""
        return getattr(self, "_model", None)

    async def aclose(self) -> None:  # noqa: B027 (optional hook)
        """Release network resources."""

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


def clean_api_key(value: str | None, where: str, env_var: str) -> str:
    """The key without surrounding whitespace (a pasted key often ends in a newline, which an
    HTTP library then quotes back, escaped and so unmasked, in its error). Inner whitespace
    cannot be part of a key: refused, without repeating the value."""
    key = (value or "").strip()
    if not key:
        raise ValueError(f"{where}: an API key is required (set {env_var})")
    if any(c.isspace() for c in key):
        raise ValueError(f"{where}: the API key contains whitespace (check {env_var})")
    return key


def scrub_secrets(error: ProviderError, secrets: tuple[str, ...]) -> ProviderError:
    """Mask credentials a server echoed into an error body (a 401 may repeat the key)."""
    for secret in secrets:
        error.message = error.message.replace(secret, "***")
    error.args = (error.message,)
    return error


# --- mapping transport failures into ProviderError ----------------------------------------


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` (seconds or an HTTP date).
    Anything else (garbage, NaN, infinity) is ignored: the normal backoff applies then."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    if (seconds := _finite(lowered.get("retry-after-ms"))) is not None:
        return max(seconds / 1000.0, 0.0)
    value = lowered.get("retry-after")
    if (seconds := _finite(value)) is not None:
        return max(seconds, 0.0)
    if value:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(when.timestamp() - time.time(), 0.0)
    return None


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _error_code(body: Any) -> str | None:
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping):
            code = error.get("code") or error.get("type")
            inner = error.get("innererror")
            if isinstance(inner, Mapping) and inner.get("code"):
                code = code or inner.get("code")
                if str(inner.get("code")).lower() in CONTENT_FILTER_CODES:
                    return "content_filter"
            return str(code) if code is not None else None
    return None


def _error_message(body: Any, fallback: str) -> str:
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return fallback


def error_from_http(
    provider: str,
    status: int,
    headers: Mapping[str, str] | None = None,
    body: Any = None,
    request_id: str | None = None,
) -> ProviderError:
    """Classify an HTTP error response (body may be parsed JSON, text, or None)."""
    code = _error_code(body)
    message = _error_message(body, f"HTTP {status}")
    if code and code.lower() in CONTENT_FILTER_CODES:
        error_type, retryable = "content_filter", False
    elif status >= 500:
        error_type, retryable = "server_error", True
    else:
        error_type = STATUS_ERROR_TYPES.get(status, "http_error")
        retryable = status in RETRYABLE_STATUSES
    return ProviderError(
        f"{provider}: HTTP {status}: {message}",
        provider=provider,
        status_code=status,
        retryable=retryable,
        retry_after=parse_retry_after(headers) if retryable else None,
        error_type=error_type,
        request_id=request_id,
    )


def error_from_openai(exc: Exception, provider: str) -> ProviderError:
    """Map an exception raised by the openai SDK."""
    import openai

    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(
            f"{provider}: request timed out", provider, retryable=True, error_type="timeout"
        )
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(
            f"{provider}: connection error: {exc}",
            provider,
            retryable=True,
            error_type="connection",
        )
    if isinstance(exc, openai.APIStatusError):
        headers = dict(exc.response.headers) if exc.response is not None else None
        return error_from_http(
            provider,
            exc.status_code,
            headers,
            exc.body or exc.message,
            request_id=getattr(exc, "request_id", None),
        )
    if isinstance(exc, openai.APIResponseValidationError | ValueError):
        # A 2xx whose body is not what the API promises (truncated, not JSON): transient
        # corruption is the usual cause, so it is worth another attempt.
        return ProviderError(
            f"{provider}: malformed response: {exc}",
            provider,
            retryable=True,
            error_type="malformed_response",
        )
    return ProviderError(f"{provider}: {type(exc).__name__}: {exc}", provider, error_type="unknown")


def error_from_httpx(exc: Exception, provider: str) -> ProviderError:
    """Map an exception raised by httpx (transport failures)."""
    import httpx

    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, httpx.TimeoutException):
        return ProviderError(
            f"{provider}: request timed out", provider, retryable=True, error_type="timeout"
        )
    if isinstance(exc, httpx.TransportError):
        return ProviderError(
            f"{provider}: connection error: {type(exc).__name__}: {exc}",
            provider,
            retryable=True,
            error_type="connection",
        )
    return ProviderError(f"{provider}: {type(exc).__name__}: {exc}", provider, error_type="unknown")
