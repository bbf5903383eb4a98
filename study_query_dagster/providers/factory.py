"""`ProviderFactory`: build a provider by name, from explicit config or from the environment.

`PROVIDER_ENV_VARS` maps each provider's settings to the environment variable that supplies it
(read through `config.Settings`, the one place that names variables), so callers can tell a
user exactly what to set before any call is made.
"""

from __future__ import annotations

from typing import Any

from ..config import Settings
from .azure import AzureOpenAIProvider
from .base import BaseLLMProvider
from .hyperbolic import HyperbolicProvider
from .offline import OfflineProvider
from .openai import OpenAIProvider

PROVIDERS: dict[str, type[BaseLLMProvider]] = {
    "azure": AzureOpenAIProvider,
    "openai": OpenAIProvider,
    "hyperbolic": HyperbolicProvider,
    "offline": OfflineProvider,
}

# provider -> {constructor argument: Settings field}
PROVIDER_SETTINGS: dict[str, dict[str, str]] = {
    "azure": {
        "api_key": "azure_openai_api_key",
        "endpoint": "azure_openai_endpoint",
        "deployment_name": "azure_openai_deployment",
        "api_version": "azure_openai_api_version",
    },
    "openai": {
        "api_key": "openai_api_key",
        "model": "openai_model",
        "base_url": "openai_base_url",
        "organization": "openai_organization",
    },
    "hyperbolic": {
        "api_key": "hyperbolic_api_key",
        "model": "hyperbolic_model",
        "base_url": "hyperbolic_base_url",
    },
    "offline": {},
}

# Arguments without which a provider cannot make a call.
REQUIRED_SETTINGS: dict[str, tuple[str, ...]] = {
    "azure": ("api_key", "endpoint", "deployment_name"),
    "openai": ("api_key",),
    "hyperbolic": ("api_key",),
    "offline": (),
}

# provider -> {constructor argument: environment variable}, e.g.
# PROVIDER_ENV_VARS["azure"]["api_key"] == "AZURE_OPENAI_API_KEY".
PROVIDER_ENV_VARS: dict[str, dict[str, str]] = {
    name: {arg: Settings.model_fields[field].alias for arg, field in fields.items()}
    for name, fields in PROVIDER_SETTINGS.items()
}


class ProviderConfigError(ValueError):
    """A provider cannot be built: unknown name or missing settings (`missing` lists the
    (argument, environment variable) pairs)."""

    def __init__(self, message: str, provider: str, missing: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.provider = provider
        self.missing = missing or []

    @property
    def env_vars(self) -> list[str]:
        return [env for _, env in self.missing]


def _canonical(name: str) -> str:
    key = (name or "").strip().lower()
    if key not in PROVIDERS:
        raise ProviderConfigError(
            f"unknown provider {name!r}; available: {', '.join(sorted(PROVIDERS))}", str(name)
        )
    return key


def _secret(value: Any) -> Any:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def _missing_message(name: str, missing: list[tuple[str, str]]) -> str:
    parts = ", ".join(f"{arg} (set {env})" for arg, env in missing)
    return f"provider {name!r} is not configured: missing {parts}"


class ProviderFactory:
    @staticmethod
    def get_available_providers() -> list[str]:
        return sorted(PROVIDERS)

    @staticmethod
    def required_env_vars(name: str) -> list[str]:
        """Environment variables that must be set for `from_env(name)`."""
        key = _canonical(name)
        return [PROVIDER_ENV_VARS[key][arg] for arg in REQUIRED_SETTINGS[key]]

    @staticmethod
    def missing_env_vars(name: str, settings: Settings | None = None) -> list[str]:
        """Required variables that are not set (empty when `from_env(name)` can build it)."""
        key = _canonical(name)
        values = ProviderFactory.config_from_settings(key, settings)
        return [
            PROVIDER_ENV_VARS[key][arg] for arg in REQUIRED_SETTINGS[key] if not values.get(arg)
        ]

    @staticmethod
    def config_from_settings(name: str, settings: Settings | None = None) -> dict[str, Any]:
        """The constructor arguments the environment supplies for `name` (secrets unwrapped:
        never log this dict)."""
        key = _canonical(name)
        settings = settings or Settings()
        config = {
            arg: _secret(getattr(settings, field))
            for arg, field in PROVIDER_SETTINGS[key].items()
            if getattr(settings, field) not in (None, "")
        }
        if key != "offline":
            config["timeout"] = settings.llm_timeout_s
        return config

    @staticmethod
    def create(name: str, **config: Any) -> BaseLLMProvider:
        """A provider from explicit arguments (see each provider's constructor)."""
        key = _canonical(name)
        env = PROVIDER_ENV_VARS[key]
        missing = [(arg, env[arg]) for arg in REQUIRED_SETTINGS[key] if not config.get(arg)]
        if missing:
            raise ProviderConfigError(_missing_message(key, missing), key, missing)
        try:
            return PROVIDERS[key](**config)
        except TypeError as exc:
            raise ProviderConfigError(f"provider {key!r}: bad configuration: {exc}", key) from exc

    @staticmethod
    def from_env(name: str, settings: Settings | None = None, **overrides: Any) -> BaseLLMProvider:
        """A provider configured from the environment / `.env` (explicit `overrides` win).
        A missing required setting raises `ProviderConfigError` naming the variable."""
        key = _canonical(name)
        config = {**ProviderFactory.config_from_settings(key, settings), **overrides}
        return ProviderFactory.create(key, **config)
