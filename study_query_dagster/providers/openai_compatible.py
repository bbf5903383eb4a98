"""Shared code for clients that speak OpenAI's chat-completions API through the openai SDK.

The SDK's own retries are off (`max_retries=0`): `InferenceService` owns every attempt so that
each one is counted and captured. Failures become `ProviderError` via `error_from_openai`.
"""

from __future__ import annotations

import inspect
import time
from functools import lru_cache
from typing import Any

from .base import (
    BaseLLMProvider,
    Message,
    ProviderError,
    ProviderResponse,
    error_from_openai,
    scrub_secrets,
)

DEFAULT_TIMEOUT_S = 60.0


@lru_cache(maxsize=1)
def sdk_chat_params() -> frozenset[str]:
    """Parameters the SDK's `chat.completions.create` accepts by name; others go in extra_body
    (so vLLM's `top_k` or OpenRouter's `provider` work through the same call)."""
    from openai.resources.chat.completions import AsyncCompletions

    names = set(inspect.signature(AsyncCompletions.create).parameters)
    return frozenset(names - {"self", "messages", "model", "stream", "timeout"})


def parse_chat_completion(completion: Any, provider: str, model: str | None, started: float):
    """A `ChatCompletion` (SDK object or plain dict) as a `ProviderResponse`."""
    data = completion if isinstance(completion, dict) else completion.model_dump(mode="json")
    choices = data.get("choices") or []
    if not choices:
        raise ProviderError(
            f"{provider}: response has no choices",
            provider,
            retryable=True,
            error_type="malformed_response",
        )
    choice = choices[0]
    message = choice.get("message") or {}
    usage = data.get("usage") or {}
    prompt_tokens = usage.get("prompt_tokens")
    completion_tokens = usage.get("completion_tokens")
    total = usage.get("total_tokens")
    if total is None and prompt_tokens is not None:
        total = prompt_tokens + (completion_tokens or 0)
    return ProviderResponse(
        text=message.get("content") or "",
        provider=provider,
        model=model,
        tokens=total,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        latency_ms=(time.perf_counter() - started) * 1000.0,
        finish_reason=choice.get("finish_reason"),
        metadata={"response_id": data.get("id"), "response_model": data.get("model")},
        raw_response=data,
    )


class OpenAICompatibleProvider(BaseLLMProvider):
    """Base for providers built on an `openai` SDK async client (`self._client`)."""

    provider_name = "openai"

    def __init__(self, *, client: Any, model: str | None, secrets: tuple[str | None, ...] = ()):
        self._client = client
        self._model = model
        # Values scrubbed from error messages (a 401 body may echo part of the key).
        self._secrets = tuple(s for s in secrets if s)

    def _scrub(self, error: ProviderError) -> ProviderError:
        return scrub_secrets(error, self._secrets)

    async def _complete(
        self, chat: list[Message], model: str, params: dict[str, Any], sample_index: int | None
    ) -> ProviderResponse:
        known = sdk_chat_params()
        kwargs = {k: v for k, v in params.items() if k in known}
        extra = {k: v for k, v in params.items() if k not in known}
        if extra:
            kwargs["extra_body"] = {**kwargs.get("extra_body", {}), **extra}
        started = time.perf_counter()
        try:
            completion = await self._client.chat.completions.create(
                model=model, messages=chat, **kwargs
            )
            response = parse_chat_completion(completion, self.provider_name, model, started)
        except Exception as exc:  # every failure leaves as a ProviderError
            # `from None`: the SDK's exception may hold an echoed key; the mapped error says it all.
            raise self._scrub(error_from_openai(exc, self.provider_name)) from None
        response.metadata["request_id"] = getattr(completion, "_request_id", None)
        return response

    async def aclose(self) -> None:
        await self._client.close()

    def __repr__(self) -> str:  # never shows the key
        return f"{type(self).__name__}(model={self._model!r})"
