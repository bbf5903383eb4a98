"""`Settings`: the one reader of the environment and `.env`. Services, the CLI and the Dagster
resources (`resources.build_resources(settings)`) all take their configuration from it, so every
variable has one default and one validation. Every variable is documented in `.env.example`.

The provider variables (keys, endpoints, models, limits) are declared by each provider's row in
`providers/registry.py` and become fields here, so a new provider needs no edit in this file.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from dotenv import load_dotenv
from pydantic import Field, SecretStr, create_model, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .providers.registry import DEFAULT_MAX_CONCURRENCY, LIMITS, PROVIDERS

DATA_DIR = Path("data")
DEFAULT_DATABASE_URL = f"sqlite:///{DATA_DIR / 'study.db'}"


class CoreSettings(BaseSettings):
    """The variables that belong to no single provider."""

    # An empty variable (`NAME=` in .env) counts as unset, so it gets the default.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    database_url: str = Field(DEFAULT_DATABASE_URL, alias="DATABASE_URL")
    legacy_database_url: str | None = Field(None, alias="LEGACY_DATABASE_URL")
    prompt_sets_dir: Path = Field(Path("prompt_sets"), alias="PROMPT_SETS_DIR")
    exports_dir: Path = Field(DATA_DIR / "exports", alias="EXPORTS_DIR")
    reports_dir: Path = Field(DATA_DIR / "reports", alias="REPORTS_DIR")
    pricing_file: Path | None = Field(None, alias="PRICING_FILE")
    log_level: str = Field("INFO", alias="LOG_LEVEL")
    # Dagster's instance directory; the CLI creates it (Dagster itself reads the variable).
    dagster_home: Path | None = Field(None, alias="DAGSTER_HOME")
    # The inference_run failure_rate check warns above this share of failed calls.
    failure_rate_threshold: float = Field(0.05, alias="FAILURE_RATE_THRESHOLD", ge=0, le=1)
    # How often (seconds) the prompt set sensor looks at PROMPT_SETS_DIR.
    prompt_set_sensor_interval_s: int = Field(15, alias="PROMPT_SET_SENSOR_INTERVAL_S", ge=1)

    # Embeddings (providers/embeddings.py): which embedder, and its model (Azure: deployment).
    embedding_provider: str = Field("wordllama", alias="EMBEDDING_PROVIDER")
    embedding_model: str | None = Field(None, alias="EMBEDDING_MODEL")

    # Inference service (providers + retry): client timeout per attempt, and the longest
    # Retry-After a server may impose before the next attempt.
    llm_timeout_s: float = Field(60.0, alias="LLM_TIMEOUT_S", gt=0)
    llm_max_retry_after_s: float = Field(60.0, alias="LLM_MAX_RETRY_AFTER_S", ge=0)
    # Where study_job runs its steps: in_process (one process per run, one step after the
    # other; the calls are concurrent inside each step), multiprocess (a process per step) or
    # celery (each step a task on the Celery workers listening on CELERY_BROKER_URL, on any
    # machine). docs/DEPLOYMENT.md, step 3.
    study_job_executor: Literal["in_process", "multiprocess", "celery"] = Field(
        "in_process", alias="STUDY_JOB_EXECUTOR"
    )
    celery_broker_url: str | None = Field(None, alias="CELERY_BROKER_URL")
    celery_backend_url: str | None = Field(None, alias="CELERY_BACKEND_URL")
    # Provider quotas (concurrency, RPM/TPM, what rate-limit headers say) held for every run
    # and process through the app database, and how long a crashed process's share outlives it.
    shared_quotas: bool = Field(True, alias="SHARED_QUOTAS")
    quota_lease_ttl_s: float = Field(30.0, alias="QUOTA_LEASE_TTL_S", gt=0)

    @model_validator(mode="after")
    def _celery_needs_a_broker(self):
        if self.study_job_executor == "celery" and not self.celery_broker_url:
            raise ValueError(
                "STUDY_JOB_EXECUTOR=celery needs CELERY_BROKER_URL (e.g. redis://redis:6379/0)"
            )
        return self

    def environment_name(self, field: str) -> str | None:
        """The variable behind `field` when the process environment holds exactly this value,
        so that `dg.EnvVar(name)` resolves to it when a run starts; else None (unset, or a value
        that came from `.env` or from the caller)."""
        value = getattr(self, field)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        name = type(self).model_fields[field].alias
        if value in (None, "") or not name:
            return None
        return name if os.environ.get(name) == str(value) else None


def provider_fields() -> dict[str, Any]:
    """Settings fields for every variable the provider registry declares."""
    fields: dict[str, Any] = {}
    for row in PROVIDERS.values():
        for variable in row.variables.values():
            if variable.secret:
                kind: Any = SecretStr | None
            else:
                kind = str if variable.default is not None else str | None
            fields[variable.field] = (kind, Field(variable.default, alias=variable.name))
        if row.limits:
            # Limits per provider, held for every run and process sharing the app database.
            for limit in LIMITS:
                default = DEFAULT_MAX_CONCURRENCY if limit == "max_concurrency" else None
                fields[row.limit_field(limit)] = (
                    int if default else int | None,
                    Field(default, alias=f"{row.limits}_{limit.upper()}", ge=1),
                )
    clash = set(fields) & set(CoreSettings.model_fields)
    if clash:
        raise ValueError(f"provider registry variables clash with core settings: {sorted(clash)}")
    return fields


Settings = create_model(
    "Settings",
    __base__=CoreSettings,
    __module__=__name__,
    __doc__="Every setting: the core ones and each registered provider's.",
    **provider_fields(),
)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once. `.env` is loaded into the environment first
    (variables already set win), as `dagster dev` does: resources name their secrets as
    `dg.EnvVar`, which Dagster resolves from the environment when a run starts."""
    load_dotenv(Path.cwd() / ".env", override=False)
    return Settings()
