"""`ProviderFactory`: build a chat provider by name, from explicit arguments or from `Settings`,
naming the variable to set when one is missing, before any call is made.

What each provider is, and which variable supplies which argument, is its row in registry.py;
`PROVIDER_ENV_VARS` and `REQUIRED_SETTINGS` are views of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import BaseLLMProvider
from .registry import CHAT_PROVIDERS, PROVIDERS, ProviderSpec, settings_args

if TYPE_CHECKING:
    from ..config import Settings

# provider -> {constructor argument: environment variable}, e.g.
# PROVIDER_ENV_VARS["azure"]["api_key"] == "AZURE_OPENAI_API_KEY".
PROVIDER_ENV_VARS: dict[str, dict[str, str]] = {
    name: row.env_vars for name, row in PROVIDERS.items()
}
# provider -> arguments without which its chat client cannot make a call.
REQUIRED_SETTINGS: dict[str, tuple[str, ...]] = {
    name: PROVIDERS[name].required for name in CHAT_PROVIDERS
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


def _row(name: str) -> ProviderSpec:
    key = (name or "").strip().lower()
    if key not in CHAT_PROVIDERS:
        raise ProviderConfigError(
            f"unknown provider {name!r}; available: {', '.join(sorted(CHAT_PROVIDERS))}", str(name)
        )
    return PROVIDERS[key]


def _missing_message(name: str, missing: list[tuple[str, str]]) -> str:
    parts = ", ".join(f"{arg} (set {env})" for arg, env in missing)
    return f"provider {name!r} is not configured: missing {parts}"


class ProviderFactory:
    @staticmethod
    def get_available_providers() -> list[str]:
        return sorted(CHAT_PROVIDERS)

    @staticmethod
    def required_env_vars(name: str) -> list[str]:
        """Environment variables that must be set for `from_env(name)`."""
        row = _row(name)
        return [row.env_vars[arg] for arg in row.required]

    @staticmethod
    def missing_env_vars(name: str, settings: Settings | None = None) -> list[str]:
        """Required variables that are not set (empty when `from_env(name)` can build it)."""
        row = _row(name)
        values = ProviderFactory.config_from_settings(row.name, settings)
        return [row.env_vars[arg] for arg in row.required if not values.get(arg)]

    @staticmethod
    def config_from_settings(name: str, settings: Settings | None = None) -> dict[str, Any]:
        """The constructor arguments the environment supplies for `name` (secrets unwrapped:
        never log this dict)."""
        from ..config import Settings  # config builds its fields from the registry

        row = _row(name)
        return settings_args(row, settings or Settings(), row.chat)

    @staticmethod
    def create(name: str, **config: Any) -> BaseLLMProvider:
        """A provider from explicit arguments (see each provider's constructor)."""
        row = _row(name)
        missing = [(arg, row.env_vars[arg]) for arg in row.required if not config.get(arg)]
        if missing:
            raise ProviderConfigError(_missing_message(row.name, missing), row.name, missing)
        try:
            return row.chat(**config)
        except TypeError as exc:
            raise ProviderConfigError(
                f"provider {row.name!r}: bad configuration: {exc}", row.name
            ) from exc

    @staticmethod
    def from_env(name: str, settings: Settings | None = None, **overrides: Any) -> BaseLLMProvider:
        """A provider configured from the environment / `.env` (explicit `overrides` win).
        A missing required setting raises `ProviderConfigError` naming the variable."""
        row = _row(name)
        config = {**ProviderFactory.config_from_settings(row.name, settings), **overrides}
        return ProviderFactory.create(row.name, **config)
