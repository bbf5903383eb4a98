"""`HyperbolicProvider`: Hyperbolic's OpenAI-style chat API over plain `httpx`.

`POST {base_url}/v1/chat/completions` with Bearer auth. Error bodies are not always JSON
(a gateway may answer with HTML), so the body is parsed when it can be and kept as text when
it cannot; either way the status decides the error class.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from .base import (
    BaseLLMProvider,
    Message,
    ProviderError,
    ProviderResponse,
    clean_api_key,
    error_from_http,
    error_from_httpx,
    scrub_secrets,
)
from .openai_compatible import DEFAULT_TIMEOUT_S, parse_chat_completion

DEFAULT_BASE_URL = "https://api.hyperbolic.xyz"
DEFAULT_MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct"
CHAT_PATH = "/v1/chat/completions"


class HyperbolicProvider(BaseLLMProvider):
    provider_name = "hyperbolic"

    def __init__(
        self,
        api_key: str,
        model: str = DEFAULT_MODEL,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_connections: int = 256,
    ):
        api_key = clean_api_key(api_key, "hyperbolic", "HYPERBOLIC_API_KEY")
        self._model = model
        self._api_key = api_key
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    async def _complete(
        self, chat: list[Message], model: str, params: dict[str, Any], sample_index: int | None
    ) -> ProviderResponse:
        body = {"model": model, "messages": chat, **params}
        started = time.perf_counter()
        try:
            reply = await self._client.post(CHAT_PATH, json=body)
        except Exception as exc:
            # `from None`: the SDK's exception may hold an echoed key; the mapped error says it all.
            raise self._scrub(error_from_httpx(exc, self.provider_name)) from None
        request_id = reply.headers.get("x-request-id")
        try:
            data: Any = reply.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if reply.status_code >= 400:
            error = error_from_http(
                self.provider_name,
                reply.status_code,
                reply.headers,
                data if data is not None else reply.text,
                request_id=request_id,
            )
            raise self._scrub(error)
        if not isinstance(data, dict):
            raise ProviderError(
                f"{self.provider_name}: malformed response (HTTP {reply.status_code}, "
                f"{reply.headers.get('content-type', 'no content type')}): {reply.text[:200]!r}",
                self.provider_name,
                retryable=True,
                error_type="malformed_response",
                request_id=request_id,
            )
        response = parse_chat_completion(data, self.provider_name, model, started)
        response.metadata["request_id"] = request_id
        return response

    def _scrub(self, error: ProviderError) -> ProviderError:
        return scrub_secrets(error, (self._api_key,))

    async def aclose(self) -> None:
        await self._client.aclose()

    def __repr__(self) -> str:  # never shows the key
        return f"HyperbolicProvider(model={self._model!r}, base_url={self.base_url!r})"
