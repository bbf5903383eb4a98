"""Shared code for clients that speak OpenAI's chat-completions API through the openai SDK.

The SDK's own retries are off (`max_retries=0`): `InferenceService` owns every attempt so that
each one is counted and captured. The response is read as the JSON the server sent (through
`with_raw_response`, which also gives the rate-limit headers), so the assistant message is kept
exactly as returned. Failures become `ProviderError` via `error_from_openai`.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from .base import BaseLLMProvider, Message, ProviderResponse
from .errors import error_from_openai, malformed, scrub_secrets
from .headers import parse_rate_limit

DEFAULT_TIMEOUT_S = 60.0


@lru_cache(maxsize=1)
def sdk_chat_params() -> frozenset[str]:
    """Parameters the SDK's `chat.completions.create` accepts by name; others go in extra_body
    (so vLLM's `top_k` or OpenRouter's `provider` work through the same call)."""
    from openai.resources.chat.completions import AsyncCompletions

    names = set(inspect.signature(AsyncCompletions.create).parameters)
    return frozenset(names - {"self", "messages", "model", "stream", "timeout"})


def message_text(content: Any) -> str:
    """The text of a message's content: the string, or its text parts joined (content parts
    such as [{"type": "text", "text": ...}]); "" when there is none (e.g. only tool calls)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text") or "")
            for part in content
            if isinstance(part, Mapping) and part.get("type") in ("text", "output_text")
        )
    return ""


def parse_chat_completion(completion: Any, provider: str, model: str | None, started: float):
    """A chat completion (the JSON body as a dict, or an SDK object) as a `ProviderResponse`;
    `malformed_response` when it is not one."""
    data = completion if isinstance(completion, dict) else completion.model_dump(mode="json")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise malformed(provider, "the response has no choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, Mapping):
        raise malformed(provider, "the first choice has no message")
    usage = data.get("usage") if isinstance(data.get("usage"), Mapping) else {}
    prompt_tokens = usage.get("prompt_tokens")
    completion_tokens = usage.get("completion_tokens")
    total = usage.get("total_tokens")
    if total is None and prompt_tokens is not None:
        total = prompt_tokens + (completion_tokens or 0)
    return ProviderResponse(
        text=message_text(message.get("content")),
        provider=provider,
        model=model,
        tokens=total,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        latency_ms=(time.perf_counter() - started) * 1000.0,
        finish_reason=choice.get("finish_reason"),
        metadata={"response_id": data.get("id"), "response_model": data.get("model")},
        raw_response=data,
        message=dict(message),
        logprobs=choice.get("logprobs"),
    )


class OpenAICompatibleProvider(BaseLLMProvider):
    """Base for providers built on an `openai` SDK async client (`self._client`)."""

    provider_name = "openai"

    def __init__(self, *, client: Any, model: str | None, secrets: tuple[str | None, ...] = ()):
        self._client = client
        self._model = model
        # Values scrubbed from error messages (a 401 body may echo part of the key).
        self._secrets = tuple(s for s in secrets if s)

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
            raw = await self._client.chat.completions.with_raw_response.create(
                model=model, messages=chat, **kwargs
            )
            response = parse_chat_completion(
                raw.http_response.json(), self.provider_name, model, started
            )
        except Exception as exc:  # every failure leaves as a ProviderError
            # `from None`: the SDK's exception may hold an echoed key; the mapped error says it all.
            error = error_from_openai(exc, self.provider_name)
            raise scrub_secrets(error, self._secrets) from None
        response.metadata["request_id"] = raw.headers.get("x-request-id")
        response.rate_limit = parse_rate_limit(raw.headers)
        return response

    async def aclose(self) -> None:
        await self._client.close()

    def __repr__(self) -> str:  # never shows the key
        return f"{type(self).__name__}(model={self._model!r})"
