"""The provider registry: one table, one row per provider, that every other place reads.

A row names the provider's chat client and/or embedding client, the environment variables that
supply its constructor arguments, which of those a call cannot do without, and the prefix of
its limit variables. `config.Settings` reads the variables, `ProviderFactory` and
`create_embedding_provider` build clients from them, the Dagster resources get one config
section per row, and the prompt-set schema accepts `CHAT_PROVIDERS` / `EMBEDDING_PROVIDERS`.
Adding a provider is one row here plus its client class (docs/ARCHITECTURE.md shows one).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .azure import DEFAULT_API_VERSION, AzureOpenAIProvider
from .base import BaseLLMProvider
from .embeddings import (
    AzureEmbeddingProvider,
    BaseEmbeddingProvider,
    OfflineEmbeddingProvider,
    OpenAIEmbeddingProvider,
)
from .hyperbolic import DEFAULT_BASE_URL as HYPERBOLIC_BASE_URL
from .hyperbolic import DEFAULT_MODEL as HYPERBOLIC_MODEL
from .hyperbolic import HyperbolicProvider
from .offline import OfflineProvider
from .openai import DEFAULT_MODEL as OPENAI_MODEL
from .openai import OpenAIProvider
from .wordllama_embeddings import WordLlamaEmbeddingProvider

# Limit variables of a row with a `limits` prefix, e.g. OPENAI_MAX_CONCURRENCY (default 16).
LIMITS = ("max_concurrency", "requests_per_minute", "tokens_per_minute")
DEFAULT_MAX_CONCURRENCY = 16


@dataclass(frozen=True)
class Variable:
    """An environment variable that supplies one constructor argument. Its `config.Settings`
    field is the lower-cased name; a secret is a `SecretStr` there and a `dg.EnvVar` in the
    Dagster resources."""

    name: str
    default: str | None = None
    secret: bool = False

    @property
    def field(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class ProviderSpec:
    """One provider: its clients (either may be None) and how the environment configures them."""

    name: str
    chat: type[BaseLLMProvider] | None = None
    embedding: type[BaseEmbeddingProvider] | None = None
    # Constructor argument -> the variable that supplies it. Each client takes the arguments
    # its constructor accepts (Azure's chat client takes deployment_name, its embedder does not).
    variables: Mapping[str, Variable] = field(default_factory=dict)
    # Arguments without which no call can be made (the model argument included); each one
    # has a variable, so an error can say what to set.
    required: tuple[str, ...] = ()
    # Prefix of <PREFIX>_MAX_CONCURRENCY, _REQUESTS_PER_MINUTE and _TOKENS_PER_MINUTE.
    limits: str | None = None
    # The chat argument a prompt-set target's model fills (Azure: its deployment).
    model_arg: str = "model"

    @property
    def env_vars(self) -> dict[str, str]:
        """{constructor argument: environment variable}."""
        return {arg: var.name for arg, var in self.variables.items()}

    @property
    def required_settings(self) -> tuple[str, ...]:
        """Required arguments the environment supplies (the model comes with each call)."""
        return tuple(arg for arg in self.required if arg != self.model_arg)

    def limit_field(self, limit: str) -> str | None:
        """The Settings field of one of LIMITS, or None without a prefix."""
        return f"{self.limits.lower()}_{limit}" if self.limits else None


def accepted(client: type, args: Mapping[str, Any]) -> dict[str, Any]:
    """The items of `args` that `client`'s constructor takes by name."""
    params = inspect.signature(client.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(args)
    return {k: v for k, v in args.items() if k in params and k != "self"}


def settings_args(row: ProviderSpec, settings: Any, client: type) -> dict[str, Any]:
    """The constructor arguments of `client` that `settings` (a `config.Settings`) supplies for
    `row`, with the per-attempt timeout. Holds secrets: never log it."""
    args: dict[str, Any] = {}
    for arg, variable in row.variables.items():
        value = getattr(settings, variable.field)
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if value not in (None, ""):
            args[arg] = value
    args["timeout"] = settings.llm_timeout_s
    return accepted(client, args)


def table(*rows: ProviderSpec) -> dict[str, ProviderSpec]:
    """The rows by name; a malformed row fails here, at import, naming what is wrong."""
    names = [row.name for row in rows]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(f"provider registry: {duplicated} appear more than once")
    for row in rows:
        clients = [client for client in (row.chat, row.embedding) if client]
        if not clients:
            raise ValueError(
                f"provider registry: {row.name} has neither a chat nor an embedding client"
            )
        unknown = set(row.required) - set(row.variables)
        unused = [a for a in row.variables if not any(accepted(c, {a: None}) for c in clients)]
        if unknown or unused:
            raise ValueError(
                f"provider registry: {row.name}: required arguments without a variable "
                f"{sorted(unknown)}, variables no constructor takes {unused}"
            )
    return {row.name: row for row in rows}


PROVIDERS: dict[str, ProviderSpec] = table(
    ProviderSpec(
        name="azure",
        chat=AzureOpenAIProvider,
        embedding=AzureEmbeddingProvider,
        variables={
            "api_key": Variable("AZURE_OPENAI_API_KEY", secret=True),
            "endpoint": Variable("AZURE_OPENAI_ENDPOINT"),
            "deployment_name": Variable("AZURE_OPENAI_DEPLOYMENT"),
            "api_version": Variable("AZURE_OPENAI_API_VERSION", DEFAULT_API_VERSION),
        },
        required=("api_key", "endpoint", "deployment_name"),
        limits="AZURE_OPENAI",
        model_arg="deployment_name",
    ),
    ProviderSpec(
        name="openai",
        chat=OpenAIProvider,
        embedding=OpenAIEmbeddingProvider,
        variables={
            "api_key": Variable("OPENAI_API_KEY", secret=True),
            "model": Variable("OPENAI_MODEL", OPENAI_MODEL),
            "base_url": Variable("OPENAI_BASE_URL"),
            "organization": Variable("OPENAI_ORGANIZATION"),
        },
        required=("api_key",),
        limits="OPENAI",
    ),
    ProviderSpec(
        name="hyperbolic",
        chat=HyperbolicProvider,
        variables={
            "api_key": Variable("HYPERBOLIC_API_KEY", secret=True),
            "model": Variable("HYPERBOLIC_MODEL", HYPERBOLIC_MODEL),
            "base_url": Variable("HYPERBOLIC_BASE_URL", HYPERBOLIC_BASE_URL),
        },
        required=("api_key",),
        limits="HYPERBOLIC",
    ),
    ProviderSpec(name="offline", chat=OfflineProvider, embedding=OfflineEmbeddingProvider),
    ProviderSpec(name="wordllama", embedding=WordLlamaEmbeddingProvider),
)

# What a prompt set's target (`provider`) and `embed.provider` may name.
CHAT_PROVIDERS: tuple[str, ...] = tuple(n for n, row in PROVIDERS.items() if row.chat)
EMBEDDING_PROVIDERS: tuple[str, ...] = tuple(n for n, row in PROVIDERS.items() if row.embedding)
