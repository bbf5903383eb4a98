"""`AzureOpenAIProvider`: Azure OpenAI deployments through `AsyncAzureOpenAI`.

The deployment name plays the model's part: it selects the URL
`{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...`, and a per-call
`model=` override picks another deployment on the same resource.
"""

from __future__ import annotations

from .base import clean_api_key
from .openai_compatible import DEFAULT_TIMEOUT_S, OpenAICompatibleProvider

DEFAULT_API_VERSION = "2024-10-21"


class AzureOpenAIProvider(OpenAICompatibleProvider):
    provider_name = "azure"

    def __init__(
        self,
        api_key: str,
        endpoint: str,
        deployment_name: str,
        api_version: str = DEFAULT_API_VERSION,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
    ):
        import openai

        api_key = clean_api_key(api_key, "azure", "AZURE_OPENAI_API_KEY")
        for name, value in (("endpoint", endpoint), ("deployment_name", deployment_name)):
            if not value:
                raise ValueError(f"azure: {name} is required")
        client = openai.AsyncAzureOpenAI(
            api_key=api_key,
            azure_endpoint=endpoint,
            api_version=api_version,
            timeout=timeout,
            max_retries=0,  # the service owns retries
        )
        super().__init__(client=client, model=deployment_name, secrets=(api_key,))
        self.endpoint = endpoint
        self.deployment_name = deployment_name
        self.api_version = api_version
