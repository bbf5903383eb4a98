"""`OpenAIProvider`: OpenAI, or any OpenAI-compatible server (vLLM, Ollama, OpenRouter) through
`base_url`."""

from __future__ import annotations

from .base import clean_api_key
from .openai_compatible import DEFAULT_TIMEOUT_S, OpenAICompatibleProvider

DEFAULT_MODEL = "gpt-4o-mini"


class OpenAIProvider(OpenAICompatibleProvider):
    provider_name = "openai"

    def __init__(
        self,
        api_key: str,
        model: str = DEFAULT_MODEL,
        *,
        base_url: str | None = None,
        organization: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ):
        import openai

        api_key = clean_api_key(api_key, "openai", "OPENAI_API_KEY")
        client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url or None,
            organization=organization or None,
            timeout=timeout,
            max_retries=0,  # the service owns retries
        )
        super().__init__(client=client, model=model, secrets=(api_key,))
        self.base_url = str(client.base_url)
