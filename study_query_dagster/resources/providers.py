"""`LLMProvidersResource`: credentials and limits for every provider, and the factory of
provider clients and `InferenceService`s built from them.

Secrets reach this resource through `dg.EnvVar` (see definitions.py), so the UI shows the
variable's name, never its value. `missing_env_vars` lets assets refuse a target whose provider
is not configured before any call is made.
"""

import dagster as dg
from pydantic import Field

from ..db import DatabaseConnection
from ..providers import BaseLLMProvider, ProviderFactory
from ..providers.factory import PROVIDER_ENV_VARS, REQUIRED_SETTINGS
from ..services import InferenceService
from ..services.inference import ProviderLimits

# Supplied by a prompt set's target, not by the environment.
TARGET_SUPPLIED = {"model", "deployment_name"}


class ProviderSettings(dg.Config):
    """One provider's connection and limits. Unused fields are ignored for that provider."""

    api_key: str | None = Field(None, description="API key (set through an environment variable).")
    endpoint: str | None = Field(None, description="Azure: https://<resource>.openai.azure.com")
    api_version: str | None = Field(None, description="Azure API version.")
    base_url: str | None = Field(None, description="OpenAI-compatible / Hyperbolic base URL.")
    organization: str | None = Field(None, description="OpenAI organization id.")
    max_concurrency: int = Field(
        16, ge=1, description="Calls in flight at once to this provider, shared by a run's targets."
    )
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)


class OfflineSettings(dg.Config):
    """The offline provider: no network; simulated latency and failures for drills."""

    latency_s: float = Field(0.0, ge=0)
    failure_rate: float = Field(0.0, ge=0, le=1)
    max_concurrency: int = Field(64, ge=1)


class LLMProvidersResource(dg.ConfigurableResource):
    azure: ProviderSettings = Field(default_factory=ProviderSettings)
    openai: ProviderSettings = Field(default_factory=ProviderSettings)
    hyperbolic: ProviderSettings = Field(default_factory=ProviderSettings)
    offline: OfflineSettings = Field(default_factory=OfflineSettings)
    timeout_s: float = Field(60.0, gt=0, description="Per-attempt client timeout.")
    max_retries: int = Field(3, ge=0, description="Retries after the first attempt.")
    initial_wait_s: float = Field(1.0, ge=0)
    max_wait_s: float = Field(10.0, ge=0)

    def _settings(self, provider: str) -> ProviderSettings | OfflineSettings:
        if provider not in PROVIDER_ENV_VARS:
            raise dg.Failure(
                f"unknown provider {provider!r}; available: {', '.join(sorted(PROVIDER_ENV_VARS))}"
            )
        return getattr(self, provider)

    def _constructor_args(self, provider: str, model: str) -> dict:
        settings = self._settings(provider)
        if provider == "offline":
            return {"model": model, "latency_s": settings.latency_s,
                    "failure_rate": settings.failure_rate}  # fmt: skip
        args = {"timeout": self.timeout_s}
        if provider == "azure":
            args.update(api_key=settings.api_key, endpoint=settings.endpoint,
                        deployment_name=model)  # fmt: skip
            if settings.api_version:
                args["api_version"] = settings.api_version
        else:
            args.update(api_key=settings.api_key, model=model)
            if settings.base_url:
                args["base_url"] = settings.base_url
            if provider == "openai" and settings.organization:
                args["organization"] = settings.organization
        return args

    def missing_env_vars(self, provider: str) -> list[str]:
        """Variables to set before `provider` can be called (empty when it is configured)."""
        args = self._constructor_args(provider, model="-")
        return [
            PROVIDER_ENV_VARS[provider][arg]
            for arg in REQUIRED_SETTINGS[provider]
            if arg not in TARGET_SUPPLIED and not args.get(arg)
        ]

    def create_provider(self, provider: str, model: str) -> BaseLLMProvider:
        return ProviderFactory.create(provider, **self._constructor_args(provider, model))

    def provider_limits(self, provider: str) -> ProviderLimits:
        """Fresh concurrency and RPM/TPM limits for `provider`, to share between services."""
        settings = self._settings(provider)
        return ProviderLimits(
            settings.max_concurrency,
            getattr(settings, "requests_per_minute", None),
            getattr(settings, "tokens_per_minute", None),
        )

    def create_service(
        self,
        provider: str,
        model: str,
        db: DatabaseConnection | None,
        limits: ProviderLimits | None = None,
    ) -> InferenceService:
        """A service with its own provider client, closed when the service is (use it as
        `async with`). Services given the same `limits` share them (one per provider in a
        run); without, the service gets the provider's limits to itself."""
        settings = self._settings(provider)
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
