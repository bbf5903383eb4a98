"""LLM provider clients: one async interface over Azure OpenAI, OpenAI (any compatible
`base_url`), Hyperbolic and an offline echo, and the registry that names them (registry.py).
No Dagster, no database."""

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
from .registry import CHAT_PROVIDERS, EMBEDDING_PROVIDERS, PROVIDERS, ProviderSpec, Variable

__all__ = [
    "CHAT_PROVIDERS",
    "EMBEDDING_PROVIDERS",
    "PROVIDERS",
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
    "ProviderSpec",
    "error_from_http",
    "error_from_httpx",
    "error_from_openai",
    "parse_retry_after",
    "to_messages",
    "Variable",
]
