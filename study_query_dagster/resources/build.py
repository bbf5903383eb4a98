"""`build_resources(settings)`: every Dagster resource of the code location, from one `Settings`.

A text value the environment supplies (keys, endpoints, database URLs) is passed as
`dg.EnvVar(name)`, so the UI shows the variable's name, not its value, and Dagster reads the
value when a run starts. A value only the `Settings` object holds (tests build their own) is
passed as it is. Limits and paths are plain values, already validated by `Settings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from ..config import Settings
from ..providers.registry import LIMITS, PROVIDERS
from .database import DatabaseResource, LegacyDatabaseResource
from .embeddings import EmbeddingResource
from .exports import ExportsResource
from .prompt_sets import PromptSetsResource
from .providers import LLMProvidersResource, ProviderSettings, configured


def from_settings(settings: Settings, field: str) -> Any:
    """`dg.EnvVar(name)` when the environment holds the field's value, else the value."""
    name = settings.environment_name(field)
    if name:
        return dg.EnvVar(name)
    value = getattr(settings, field)
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def provider_settings(settings: Settings, provider: str) -> ProviderSettings:
    """`provider`'s section of `LLMProvidersResource`: its connection variables and limits."""
    row = PROVIDERS[provider]
    values = {
        arg: from_settings(settings, variable.field)
        for arg, variable in row.variables.items()
        if arg in ProviderSettings.model_fields
    }
    if row.limits:
        values.update({limit: getattr(settings, row.limit_field(limit)) for limit in LIMITS})
    return ProviderSettings(**values)


def build_resources(
    settings: Settings,
    *,
    llm: Mapping[str, Any] | None = None,
    embedding: Mapping[str, Any] | None = None,
) -> dict[str, dg.ConfigurableResource]:
    """The resources `definitions.py` gives `Definitions`. `llm` and `embedding` override
    fields of `LLMProvidersResource` and `EmbeddingResource` (tests use quick retries)."""
    sections = {
        row.name: provider_settings(settings, row.name)
        for row in PROVIDERS.values()
        if configured(row)
    }
    llm_resource = LLMProvidersResource(
        **{
            **sections,
            "timeout_s": settings.llm_timeout_s,
            "shared_quotas": settings.shared_quotas,
            "quota_lease_ttl_s": settings.quota_lease_ttl_s,
            **(llm or {}),
        }
    )
    return {
        "database": DatabaseResource(url=from_settings(settings, "database_url")),
        "legacy_database": LegacyDatabaseResource(
            url=from_settings(settings, "legacy_database_url")
        ),
        "prompt_sets": PromptSetsResource(directory=str(settings.prompt_sets_dir)),
        "llm": llm_resource,
        "embedding": EmbeddingResource(
            llm=llm_resource,
            **{
                "provider": settings.embedding_provider,
                "model": settings.embedding_model,
                **(embedding or {}),
            },
        ),
        "exports": ExportsResource(
            directory=str(settings.exports_dir), reports_directory=str(settings.reports_dir)
        ),
    }
