"""Settings read from the environment and an optional `.env` file, for the services and the
CLI. definitions.py maps the same variables onto the Dagster resources (as `dg.EnvVar`, so
the UI shows names, not values). Every variable is documented in `.env.example`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DATA_DIR = Path("data")
DEFAULT_DATABASE_URL = f"sqlite:///{DATA_DIR / 'study.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    database_url: str = Field(DEFAULT_DATABASE_URL, alias="DATABASE_URL")
    legacy_database_url: str | None = Field(None, alias="LEGACY_DATABASE_URL")
    prompt_sets_dir: Path = Field(Path("prompt_sets"), alias="PROMPT_SETS_DIR")
    exports_dir: Path = Field(DATA_DIR / "exports", alias="EXPORTS_DIR")
    pricing_file: Path | None = Field(None, alias="PRICING_FILE")
    log_level: str = Field("INFO", alias="LOG_LEVEL")
    # The inference_run failure_rate check warns above this share of failed calls.
    failure_rate_threshold: float = Field(0.05, alias="FAILURE_RATE_THRESHOLD", ge=0, le=1)
    # How often (seconds) the prompt set sensor looks at PROMPT_SETS_DIR.
    prompt_set_sensor_interval_s: int = Field(15, alias="PROMPT_SET_SENSOR_INTERVAL_S", ge=1)

    azure_openai_api_key: SecretStr | None = Field(None, alias="AZURE_OPENAI_API_KEY")
    azure_openai_endpoint: str | None = Field(None, alias="AZURE_OPENAI_ENDPOINT")
    azure_openai_deployment: str | None = Field(None, alias="AZURE_OPENAI_DEPLOYMENT")
    azure_openai_api_version: str = Field("2024-10-21", alias="AZURE_OPENAI_API_VERSION")
    # Limits per provider, shared by all targets of a run that call it.
    azure_openai_max_concurrency: int = Field(16, alias="AZURE_OPENAI_MAX_CONCURRENCY", ge=1)
    azure_openai_requests_per_minute: int | None = Field(
        None, alias="AZURE_OPENAI_REQUESTS_PER_MINUTE", ge=1
    )
    azure_openai_tokens_per_minute: int | None = Field(
        None, alias="AZURE_OPENAI_TOKENS_PER_MINUTE", ge=1
    )

    openai_api_key: SecretStr | None = Field(None, alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(None, alias="OPENAI_BASE_URL")
    openai_model: str = Field("gpt-4o-mini", alias="OPENAI_MODEL")
    openai_organization: str | None = Field(None, alias="OPENAI_ORGANIZATION")
    openai_max_concurrency: int = Field(16, alias="OPENAI_MAX_CONCURRENCY", ge=1)
    openai_requests_per_minute: int | None = Field(None, alias="OPENAI_REQUESTS_PER_MINUTE", ge=1)
    openai_tokens_per_minute: int | None = Field(None, alias="OPENAI_TOKENS_PER_MINUTE", ge=1)

    hyperbolic_api_key: SecretStr | None = Field(None, alias="HYPERBOLIC_API_KEY")
    hyperbolic_base_url: str = Field("https://api.hyperbolic.xyz", alias="HYPERBOLIC_BASE_URL")
    hyperbolic_model: str = Field("meta-llama/Meta-Llama-3.1-8B-Instruct", alias="HYPERBOLIC_MODEL")
    hyperbolic_max_concurrency: int = Field(16, alias="HYPERBOLIC_MAX_CONCURRENCY", ge=1)
    hyperbolic_requests_per_minute: int | None = Field(
        None, alias="HYPERBOLIC_REQUESTS_PER_MINUTE", ge=1
    )
    hyperbolic_tokens_per_minute: int | None = Field(
        None, alias="HYPERBOLIC_TOKENS_PER_MINUTE", ge=1
    )

    # Embeddings (providers/embeddings.py): which embedder, and its model (Azure: deployment).
    embedding_provider: str = Field("offline", alias="EMBEDDING_PROVIDER")
    embedding_model: str | None = Field(None, alias="EMBEDDING_MODEL")

    # Inference service (providers + retry): client timeout per attempt, and the longest
    # Retry-After a server may impose before the next attempt.
    llm_timeout_s: float = Field(60.0, alias="LLM_TIMEOUT_S", gt=0)
    llm_max_retry_after_s: float = Field(60.0, alias="LLM_MAX_RETRY_AFTER_S", ge=0)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
