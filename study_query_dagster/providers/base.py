"""The provider contract: `BaseLLMProvider` and `ProviderResponse`; the error type and its
mappers live in `errors.py` (re-exported here), header parsing in `headers.py`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import (
    CONTENT_FILTER_CODES,
    RETRYABLE_STATUSES,
    STATUS_ERROR_TYPES,
    ProviderError,
    error_from_http,
    error_from_httpx,
    error_from_openai,
    scrub_secrets,
)
from .headers import RateLimit, parse_rate_limit, parse_retry_after

__all__ = [
    "CONTENT_FILTER_CODES",
    "RETRYABLE_STATUSES",
    "STATUS_ERROR_TYPES",
    "BaseLLMProvider",
    "Message",
    "ProviderError",
    "ProviderResponse",
    "RateLimit",
    "check_params",
    "clean_api_key",
    "error_from_http",
    "error_from_httpx",
    "error_from_openai",
    "parse_rate_limit",
    "parse_retry_after",
    "scrub_secrets",
    "to_messages",
]

Message = dict[str, Any]


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
    # The assistant message as the API returned it (content or content parts, tool_calls,
    # refusal, ...), the choice's log-probabilities when asked for, and the quota the
    # response reported (its x-ratelimit-* headers).
    message: dict[str, Any] | None = None
    logprobs: Any = None
    rate_limit: RateLimit | None = None

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
