"""`LLMProvidersResource`: credentials and limits for every provider, and the factory of
provider clients and `InferenceService`s built from them.

It has one `ProviderSettings` section per provider of the registry that has variables or
limits (azure, openai, hyperbolic, ...), plus `offline`'s drill settings. Secrets reach it
through `dg.EnvVar` (see build.py), so the UI shows the variable's name, never its value.
`missing_env_vars` lets assets refuse a target whose provider is not configured before any
call is made.
"""

from typing import Any

import dagster as dg
from pydantic import Field, create_model

from ..db import DatabaseConnection
from ..providers import BaseLLMProvider, ProviderFactory
from ..providers.registry import (
    CHAT_PROVIDERS,
    DEFAULT_MAX_CONCURRENCY,
    PROVIDERS,
    ProviderSpec,
    accepted,
)
from ..services import InferenceService
from ..services.inference import ProviderLimits, SharedProviderLimits


class ProviderLimitsConfig(dg.Config):
    max_concurrency: int = Field(
        DEFAULT_MAX_CONCURRENCY,
        ge=1,
        description="Calls in flight at once to this provider, shared by a run's targets.",
    )
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)


def _connection_fields() -> dict[str, Any]:
    """One optional text field per constructor argument the registry's variables supply (the
    model comes from each prompt-set target, so it is not one)."""
    variables: dict[str, list[str]] = {}
    for row in PROVIDERS.values():
        for arg, variable in row.variables.items():
            if arg != row.model_arg and arg != "model":
                variables.setdefault(arg, []).append(variable.name)
    return {
        arg: (str | None, Field(None, description=f"From {' / '.join(names)}."))
        for arg, names in variables.items()
    }


ProviderSettings = create_model(
    "ProviderSettings",
    __base__=ProviderLimitsConfig,
    __module__=__name__,
    __doc__="One provider's connection and limits. Fields a provider does not take are ignored.",
    **_connection_fields(),
)


class OfflineSettings(dg.Config):
    """The offline provider: no network; simulated latency and failures for drills."""

    latency_s: float = Field(0.0, ge=0)
    failure_rate: float = Field(0.0, ge=0, le=1)
    max_concurrency: int = Field(64, ge=1)


def configured(row: ProviderSpec) -> bool:
    """Whether `row` gets a `ProviderSettings` section: it has something to configure."""
    return bool(row.variables or row.limits)


class LLMProvidersBase(dg.ConfigurableResource):
    """The fields and methods of `LLMProvidersResource`, which adds a section per provider."""

    offline: OfflineSettings = Field(default_factory=OfflineSettings)
    timeout_s: float = Field(60.0, gt=0, description="Per-attempt client timeout.")
    max_retries: int = Field(3, ge=0, description="Retries after the first attempt.")
    initial_wait_s: float = Field(1.0, ge=0)
    max_wait_s: float = Field(10.0, ge=0)
    shared_quotas: bool = Field(
        True,
        description="Hold each provider's concurrency, RPM/TPM and learned quota for every run "
        "and process using the app database (SHARED_QUOTAS), not per run.",
    )
    quota_lease_ttl_s: float = Field(
        30.0, gt=0, description="How long a crashed process's quota reservations outlive it."
    )

    def connection(self, provider: str) -> dg.Config | None:
        """`provider`'s section of this resource (None when it has none)."""
        section = getattr(self, provider, None) if provider in PROVIDERS else None
        return section if isinstance(section, dg.Config) else None

    def _settings(self, provider: str) -> dg.Config:
        if provider not in CHAT_PROVIDERS:
            raise dg.Failure(
                f"unknown provider {provider!r}; available: {', '.join(sorted(CHAT_PROVIDERS))}"
            )
        return self.connection(provider) or ProviderSettings()

    def _constructor_args(self, provider: str, model: str) -> dict:
        row = PROVIDERS[provider]
        settings = self._settings(provider)
        args = {k: v for k, v in settings.model_dump().items() if v not in (None, "")}
        args.update({row.model_arg: model, "timeout": self.timeout_s})
        return accepted(row.chat, args)

    def missing_env_vars(self, provider: str) -> list[str]:
        """Variables to set before `provider` can be called (empty when it is configured)."""
        args = self._constructor_args(provider, model="-")
        row = PROVIDERS[provider]
        return [row.env_vars[arg] for arg in row.required_settings if not args.get(arg)]

    def create_provider(self, provider: str, model: str) -> BaseLLMProvider:
        return ProviderFactory.create(provider, **self._constructor_args(provider, model))

    def provider_limits(
        self, provider: str, db: DatabaseConnection | None = None
    ) -> ProviderLimits | SharedProviderLimits:
        """Concurrency and RPM/TPM limits for `provider`, to share between services: held for
        every process that uses `db` when it is given and quotas are shared (providers with an
        account: those with limits in the registry), else fresh ones for this process."""
        settings = self._settings(provider)
        rpm = getattr(settings, "requests_per_minute", None)
        tpm = getattr(settings, "tokens_per_minute", None)
        if db is not None and self.shared_quotas and PROVIDERS[provider].limits:
            return SharedProviderLimits(
                db,
                self.quota_scope(provider),
                settings.max_concurrency,
                rpm,
                tpm,
                lease_ttl_s=self.quota_lease_ttl_s,
            )
        return ProviderLimits(settings.max_concurrency, rpm, tpm)

    def quota_scope(self, provider: str) -> str:
        """The account a quota belongs to: the provider, and its endpoint or base URL when set
        (never a key)."""
        settings = self._settings(provider)
        where = getattr(settings, "endpoint", None) or getattr(settings, "base_url", None)
        return f"{provider}@{where}" if where else provider

    def create_service(
        self,
        provider: str,
        model: str,
        db: DatabaseConnection | None,
        limits: ProviderLimits | SharedProviderLimits | None = None,
    ) -> InferenceService:
        """A service with its own provider client, closed when the service is (use it as
        `async with`). Services given the same `limits` share them (one per provider in a
        run); without, the service gets the provider's limits (`provider_limits`)."""
        settings = self._settings(provider)
        if limits is None:
            limits = self.provider_limits(provider, db)
        return InferenceService(
            self.create_provider(provider, model),
            db,
            max_retries=self.max_retries,
            initial_wait=self.initial_wait_s,
            max_wait=self.max_wait_s,
            max_concurrency=settings.max_concurrency,
            requests_per_minute=getattr(settings, "requests_per_minute", None),
            tokens_per_minute=getattr(settings, "tokens_per_minute", None),
            close_provider=True,  # the provider is this service's own: closed with it
            limits=limits,
        )


def _sections() -> dict[str, Any]:
    names = [row.name for row in PROVIDERS.values() if configured(row)]
    clash = set(names) & set(LLMProvidersBase.model_fields)
    if clash:
        raise ValueError(f"provider names clash with LLMProvidersResource fields: {clash}")
    return {name: (ProviderSettings, Field(default_factory=ProviderSettings)) for name in names}


LLMProvidersResource = create_model(
    "LLMProvidersResource",
    __base__=LLMProvidersBase,
    __module__=__name__,
    __doc__="Credentials and limits per provider; builds provider clients and services.",
    **_sections(),
)
