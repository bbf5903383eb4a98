"""`EmbeddingResource`: which embedder and model, and the `EmbeddingService` built from it.

Credentials come from the provider's section of the shared `LLMProvidersResource`; which
arguments an embedder takes and needs is its registry row.
"""

import dagster as dg
from pydantic import Field

from ..db import DatabaseConnection
from ..providers.embeddings import create_embedding_provider
from ..providers.registry import EMBEDDING_PROVIDERS, PROVIDERS, accepted
from ..services.embeddings import EmbeddingService
from .providers import LLMProvidersResource


class EmbeddingResource(dg.ConfigurableResource):
    llm: LLMProvidersResource
    provider: str = Field(
        "offline", description=f"{' | '.join(EMBEDDING_PROVIDERS)} (EMBEDDING_PROVIDER)"
    )
    model: str | None = Field(None, description="Model, or Azure deployment (EMBEDDING_MODEL).")
    dimensions: int | None = Field(None, ge=1, description="Requested vector size, if any.")
    batch_size: int = Field(256, ge=1, le=2048, description="Inputs per API call.")

    def _provider_args(self, provider: str) -> dict:
        section = self.llm.connection(provider)
        args = {}
        if section is not None:
            args = {k: v for k, v in section.model_dump().items() if v not in (None, "")}
        args["timeout"] = self.llm.timeout_s
        return accepted(PROVIDERS[provider].embedding, args)

    def missing_env_vars(self, provider: str | None = None, model: str | None = None) -> list[str]:
        """What must be set before `provider` can embed with `model` (default: this
        resource's). An embedder without a default model (Azure) needs one named."""
        provider = provider or self.provider
        if provider not in EMBEDDING_PROVIDERS:
            raise dg.Failure(
                f"unknown embedding provider {provider!r}; available: "
                f"{', '.join(sorted(EMBEDDING_PROVIDERS))}"
            )
        row = PROVIDERS[provider]
        args = self._provider_args(provider)
        missing = [row.env_vars[arg] for arg in row.required_settings if not args.get(arg)]
        if row.embedding.default_model is None and not (model or self.model):
            missing.append(f"EMBEDDING_MODEL ({provider} has no default model)")
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
