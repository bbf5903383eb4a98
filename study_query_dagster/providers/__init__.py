"""LLM provider clients: one async interface over Azure OpenAI, OpenAI (any compatible
`base_url`), Hyperbolic and an offline echo. No Dagster, no database."""

from .azure import AzureOpenAIProvider
from .base import (
    BaseLLMProvider,
    Message,
    ProviderError,
    ProviderResponse,
    error_from_http,
    error_from_httpx,
    error_from_openai,
    parse_retry_after,
    to_messages,
)
from .factory import (
    PROVIDER_ENV_VARS,
    REQUIRED_SETTINGS,
    ProviderConfigError,
    ProviderFactory,
)
from .hyperbolic import HyperbolicProvider
from .offline import OfflineProvider
from .openai import OpenAIProvider
from .openai_compatible import OpenAICompatibleProvider

__all__ = [
    "PROVIDER_ENV_VARS",
    "REQUIRED_SETTINGS",
    "AzureOpenAIProvider",
    "BaseLLMProvider",
    "HyperbolicProvider",
    "Message",
    "OfflineProvider",
    "OpenAICompatibleProvider",
    "OpenAIProvider",
    "ProviderConfigError",
    "ProviderError",
    "ProviderFactory",
    "ProviderResponse",
    "error_from_http",
    "error_from_httpx",
    "error_from_openai",
    "parse_retry_after",
    "to_messages",
]
