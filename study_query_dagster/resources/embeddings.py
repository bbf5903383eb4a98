"""`EmbeddingResource`: which embedder and model, and the `EmbeddingService` built from it.

Credentials for the azure/openai embedders come from the shared `LLMProvidersResource`.
"""

import dagster as dg
from pydantic import Field

from ..db import DatabaseConnection
from ..providers.embeddings import REQUIRED_SETTINGS as EMBED_REQUIRED
from ..providers.embeddings import create_embedding_provider
from ..services.embeddings import EmbeddingService
from .providers import LLMProvidersResource


class EmbeddingResource(dg.ConfigurableResource):
    llm: LLMProvidersResource
    provider: str = Field("offline", description="offline | openai | azure (EMBEDDING_PROVIDER)")
    model: str | None = Field(None, description="Model, or Azure deployment (EMBEDDING_MODEL).")
    dimensions: int | None = Field(None, ge=1, description="Requested vector size, if any.")
    batch_size: int = Field(256, ge=1, le=2048, description="Inputs per API call.")

    def _provider_args(self, provider: str) -> dict:
        if provider == "offline":
            return {}
        settings = getattr(self.llm, provider)
        args = {"api_key": settings.api_key, "timeout": self.llm.timeout_s}
        if provider == "azure":
            args.update(endpoint=settings.endpoint,
                        api_version=settings.api_version or "2024-10-21")  # fmt: skip
        elif settings.base_url:
            args["base_url"] = settings.base_url
        return args

    def missing_env_vars(self, provider: str | None = None, model: str | None = None) -> list[str]:
        """What must be set before `provider` can embed with `model` (default: this
        resource's). Azure has no default model: its deployment must be named."""
        provider = provider or self.provider
        if provider not in EMBED_REQUIRED:
            raise dg.Failure(
                f"unknown embedding provider {provider!r}; available: "
                f"{', '.join(sorted(EMBED_REQUIRED))}"
            )
        args = self._provider_args(provider)
        missing = [env for arg, env in EMBED_REQUIRED[provider].items() if not args.get(arg)]
        if provider == "azure" and not (model or self.model):
            missing.append("EMBEDDING_MODEL (the Azure deployment)")
        return missing

    def create_service(
        self,
        db: DatabaseConnection,
        *,
        provider: str | None = None,
        model: str | None = None,
        **options,
    ) -> EmbeddingService:
        """An EmbeddingService for `provider`/`model` (default: this resource's)."""
        provider = provider or self.provider
        missing = self.missing_env_vars(provider, model)
        if missing:
            raise dg.Failure(
                f"embedding provider {provider!r} is not configured: set {', '.join(missing)}"
            )
        client = create_embedding_provider(provider, **self._provider_args(provider))
        return EmbeddingService(
            db,
            client,
            model=model or self.model,
            dimensions=self.dimensions,
            max_batch_size=self.batch_size,
            **options,
        )
