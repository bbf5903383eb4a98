"""The code location: one `defs`, loaded by workspace.yaml.

Resources are configured from the environment (and `.env`, which `dagster dev` loads). A set
variable is passed as `dg.EnvVar`, so the UI shows its name, not its value; an unset one falls
back to the embedded default (SQLite under data/, the offline provider).
"""

import os

import dagster as dg

from .assets.analytics import (
    prompt_search_job,
    provider_comparison,
    recent_calls,
    study_summary,
    usage_time_series,
)
from .assets.embeddings import (
    embedding_dimensions_consistent,
    every_response_embedded,
    response_embeddings,
)
from .assets.inference import (
    every_request_captured,
    failure_rate,
    inference_run,
    raw_calls_are_immutable,
)
from .assets.migration import MIGRATION_CHECKS, legacy_inference_runs, migrated_raw_calls
from .assets.prompts import prompt_set
from .automation import (
    analytics_automation,
    daily_prompt_sets,
    hourly_prompt_sets,
    legacy_database_sensor,
    prompt_set_sensor,
    record_failed_runs,
)
from .config import DEFAULT_DATABASE_URL, get_settings
from .jobs import adhoc_prompt_job, analytics_job, migration_job, study_job
from .providers.factory import PROVIDER_ENV_VARS
from .resources.database import DatabaseResource, LegacyDatabaseResource
from .resources.embeddings import EmbeddingResource
from .resources.exports import ExportsResource
from .resources.prompt_sets import PromptSetsResource
from .resources.providers import LLMProvidersResource, ProviderSettings


def env(name: str, default=None):
    """`dg.EnvVar(name)` when the variable is set, else `default`."""
    return dg.EnvVar(name) if os.environ.get(name) else default


# Settings field prefix of each provider's limits (AZURE_OPENAI_MAX_CONCURRENCY, ...).
LIMIT_PREFIXES = {"azure": "azure_openai", "openai": "openai", "hyperbolic": "hyperbolic"}


def provider_settings(provider: str) -> ProviderSettings:
    names = PROVIDER_ENV_VARS[provider]
    fields = {"api_key": "api_key", "endpoint": "endpoint", "api_version": "api_version",
              "base_url": "base_url", "organization": "organization"}  # fmt: skip
    settings = {field: env(names[arg]) for arg, field in fields.items() if arg in names}
    # Limits are not secrets: plain values, validated by Settings (a bad one names its variable).
    configured = get_settings()
    for limit in ("max_concurrency", "requests_per_minute", "tokens_per_minute"):
        settings[limit] = getattr(configured, f"{LIMIT_PREFIXES[provider]}_{limit}")
    return ProviderSettings(**settings)


def build_resources() -> dict:
    llm = LLMProvidersResource(
        azure=provider_settings("azure"),
        openai=provider_settings("openai"),
        hyperbolic=provider_settings("hyperbolic"),
        timeout_s=float(os.environ.get("LLM_TIMEOUT_S", 60)),
    )
    return {
        "database": DatabaseResource(url=env("DATABASE_URL", DEFAULT_DATABASE_URL)),
        "legacy_database": LegacyDatabaseResource(url=env("LEGACY_DATABASE_URL")),
        "prompt_sets": PromptSetsResource(
            directory=os.environ.get("PROMPT_SETS_DIR", "prompt_sets")
        ),
        "llm": llm,
        "embedding": EmbeddingResource(
            llm=llm,
            provider=os.environ.get("EMBEDDING_PROVIDER", "offline"),
            model=os.environ.get("EMBEDDING_MODEL") or None,
        ),
        "exports": ExportsResource(directory=os.environ.get("EXPORTS_DIR", "data/exports")),
    }


defs = dg.Definitions(
    assets=[
        prompt_set,
        inference_run,
        response_embeddings,
        provider_comparison,
        usage_time_series,
        study_summary,
        recent_calls,
        legacy_inference_runs,
        migrated_raw_calls,
    ],
    asset_checks=[
        *MIGRATION_CHECKS,
        every_request_captured,
        failure_rate,
        raw_calls_are_immutable,
        every_response_embedded,
        embedding_dimensions_consistent,
    ],
    jobs=[study_job, adhoc_prompt_job, migration_job, analytics_job, prompt_search_job],
    sensors=[prompt_set_sensor, legacy_database_sensor, record_failed_runs, analytics_automation],
    schedules=[daily_prompt_sets, hourly_prompt_sets],
    resources=build_resources(),
)
