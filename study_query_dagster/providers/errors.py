"""`ProviderError`, the one error type of the providers, and the mappers that turn what a client
raised (HTTP error responses, openai SDK and httpx exceptions) into it.

The retry policy lives in the services and looks only at `retryable` and `retry_after`. The
message keeps the server's own words (OpenAI's `error.message`, FastAPI's `detail`, a plain
text body), truncated; connection failures say which one (refused, reset, closed, DNS, TLS).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator, Mapping
from typing import Any

from .headers import RateLimit, parse_rate_limit, parse_retry_after

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
MESSAGE_LIMIT = 500  # characters of a server's error text kept in the message


class ProviderError(Exception):
    """A failed provider call, classified for retry decisions and capture. `rate_limit` is
    the quota the error response reported (429s usually carry it)."""

    def __init__(
        self,
        message: str,
        provider: str,
        status_code: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        error_type: str = "unknown",
        request_id: str | None = None,
        rate_limit: RateLimit | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status_code = status_code
        self.retryable = retryable
        self.retry_after = retry_after
        self.error_type = error_type
        self.request_id = request_id
        self.rate_limit = rate_limit

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


def scrub_secrets(error: ProviderError, secrets: tuple[str, ...]) -> ProviderError:
    """Mask credentials a server echoed into an error body (a 401 may repeat the key)."""
    for secret in secrets:
        error.message = error.message.replace(secret, "***")
    error.args = (error.message,)
    return error


# --- HTTP error responses --------------------------------------------------------------------


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


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


def _detail_text(detail: Any) -> str | None:
    """FastAPI's `detail`: a string, or validation errors [{"loc": [...], "msg": ...}]."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, Mapping) and item.get("msg"):
                loc = ".".join(str(p) for p in item.get("loc") or [])
                parts.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
            elif isinstance(item, str):
                parts.append(item)
        return "; ".join(parts) or None
    return None


def error_text(body: Any) -> str | None:
    """The server's own words in an error body: OpenAI's `error.message` (or `error` as a
    string), FastAPI's `detail`, a top-level `message`, or the text of a non-JSON body."""
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            text = error.get("message") or _detail_text(error.get("detail"))
            if text:
                return _clip(str(text))
        elif isinstance(error, str) and error.strip():
            return _clip(error)
        for key in ("detail", "message", "msg"):
            text = _detail_text(body.get(key))
            if text:
                return _clip(text)
        return None
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body.strip():
        return _clip(body)
    return None


def error_from_http(
    provider: str,
    status: int,
    headers: Mapping[str, str] | None = None,
    body: Any = None,
    request_id: str | None = None,
) -> ProviderError:
    """Classify an HTTP error response (body may be parsed JSON, text, or None)."""
    code = _error_code(body)
    message = error_text(body) or "no error message in the response"
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
        rate_limit=parse_rate_limit(headers),
    )


# --- transport failures ----------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def connection_failure(exc: BaseException) -> tuple[str, bool, str]:
    """(error type, retryable, what happened) for a failure to talk to the server, from the
    root cause the client chained: the OS error, the resolver's or the TLS layer's."""
    causes = list(_chain(exc))
    for cause in causes:
        detail = str(cause) or type(cause).__name__
        if isinstance(cause, ssl.SSLError):
            # Certificates and protocol mismatches do not fix themselves.
            return "tls_error", False, f"TLS failed: {detail}"
        if isinstance(cause, socket.gaierror):
            # Only "try again" is worth another attempt; an unknown name stays unknown.
            return "dns_error", cause.errno == socket.EAI_AGAIN, f"DNS lookup failed: {detail}"
        if isinstance(cause, ConnectionRefusedError):
            return "connection_refused", True, f"connection refused: {detail}"
        if isinstance(cause, ConnectionResetError | BrokenPipeError):
            return "connection_reset", True, f"connection reset by the server: {detail}"
    text = " ".join(str(c) for c in causes).lower()
    if "disconnected" in text or "without sending a response" in text:
        return "connection_closed", True, "the server closed the connection without answering"
    root = causes[-1]
    return "connection", True, f"connection failed: {type(root).__name__}: {root}"


def _connection_error(exc: BaseException, provider: str) -> ProviderError:
    error_type, retryable, detail = connection_failure(exc)
    return ProviderError(
        f"{provider}: {detail}", provider, retryable=retryable, error_type=error_type
    )


def _transport_error(
    exc: Exception, provider: str, timeout: type | tuple, connection: type | tuple
) -> ProviderError:
    """A timeout, a failure to talk to the server, or anything else unexpected."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, timeout):
        return ProviderError(
            f"{provider}: request timed out", provider, retryable=True, error_type="timeout"
        )
    if isinstance(exc, connection):
        return _connection_error(exc, provider)
    return ProviderError(f"{provider}: {type(exc).__name__}: {exc}", provider, error_type="unknown")


def error_from_openai(exc: Exception, provider: str) -> ProviderError:
    """Map an exception raised by the openai SDK."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        headers = dict(exc.response.headers) if exc.response is not None else None
        return error_from_http(
            provider,
            exc.status_code,
            headers,
            exc.body if exc.body is not None else _response_text(exc.response),
            request_id=getattr(exc, "request_id", None),
        )
    if isinstance(exc, openai.APIResponseValidationError | ValueError):
        return malformed(provider, str(exc))
    return _transport_error(exc, provider, openai.APITimeoutError, openai.APIConnectionError)


def error_from_httpx(exc: Exception, provider: str) -> ProviderError:
    """Map an exception raised by httpx (transport failures)."""
    import httpx

    return _transport_error(exc, provider, httpx.TimeoutException, httpx.TransportError)


def malformed(provider: str, detail: str, request_id: str | None = None) -> ProviderError:
    """A 2xx whose body is not what the API promises (truncated, not JSON, no choices):
    transient corruption is the usual cause, so it is worth another attempt (the retry
    policy allows one)."""
    return ProviderError(
        f"{provider}: malformed response: {_clip(detail)}",
        provider,
        retryable=True,
        error_type="malformed_response",
        request_id=request_id,
    )


def _response_text(response: Any) -> str | None:
    try:
        return response.text if response is not None else None
    except Exception:  # a streamed or closed response has no text to give
        return None
