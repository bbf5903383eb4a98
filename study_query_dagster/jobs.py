"""Jobs: the study pipeline for one prompt set, and the ad-hoc prompt from the launchpad.

`study_job`'s executor is chosen per deployment (STUDY_JOB_EXECUTOR): in_process by default (a
run's steps one after another in the run's process; the calls are concurrent inside each
step), multiprocess, or celery (each step a task for the Celery workers on CELERY_BROKER_URL,
which may be on other machines; docs/DEPLOYMENT.md)."""

import asyncio

import dagster as dg
from pydantic import Field

from .assets.embeddings import response_embeddings
from .assets.inference import inference_run
from .assets.migration import migrated_raw_calls
from .assets.prompts import prompt_set
from .config import Settings, get_settings
from .providers import ProviderError
from .resources.database import DatabaseResource
from .resources.providers import LLMProvidersResource


def _from_environment(settings: Settings, field: str) -> str | dict | None:
    """Executor config naming the variable when the environment holds the value (so a broker
    password never appears in the job's config), else the value itself."""
    name = settings.environment_name(field)
    return {"env": name} if name else getattr(settings, field)


def study_job_executor(settings: Settings) -> dg.ExecutorDefinition:
    """The executor `settings.study_job_executor` names."""
    if settings.study_job_executor == "celery":
        from dagster_celery import celery_executor

        config = {"broker": _from_environment(settings, "celery_broker_url")}
        if settings.celery_backend_url:
            config["backend"] = _from_environment(settings, "celery_backend_url")
        return celery_executor.configured(config, name="celery")
    if settings.study_job_executor == "multiprocess":
        return dg.multiprocess_executor
    return dg.in_process_executor


study_job = dg.define_asset_job(
    "study_job",
    selection=dg.AssetSelection.assets(prompt_set, inference_run, response_embeddings),
    executor_def=study_job_executor(get_settings()),
    description="prompt_set -> inference_run -> response_embeddings (with their checks) "
    "for one prompt set.",
)


# The variation assets also refresh by themselves after each run (variation_automation); this
# job measures a set's newest run on demand, and `make materialize` runs it after study_job.
variation_job = dg.define_asset_job(
    "variation_job",
    selection=dg.AssetSelection.groups("variation"),
    description="answer_equivalence_classes -> sample_dispersion, cross_target_agreement, "
    "answer_drift (with their checks) on the newest run of one prompt set.",
)


migration_job = dg.define_asset_job(
    "migration_job",
    selection=dg.AssetSelection.assets(migrated_raw_calls),
    description="Migrate new legacy v1 rows into raw_calls, then run the backfill validation.",
)


analytics_job = dg.define_asset_job(
    "analytics_job",
    selection=dg.AssetSelection.groups("analytics"),
    description="Refresh every analytics asset now (they also refresh by themselves).",
)


class ChatMessage(dg.Config):
    role: str = Field(description="system | user | assistant")
    content: str


class AdhocPromptConfig(dg.Config):
    """One call, captured like any other. Give `prompt` or `messages`."""

    provider: str = Field("offline", description="azure | openai | hyperbolic | offline")
    model: str = Field("offline-echo", description="Model, or the Azure deployment.")
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    group_type: str | None = Field(None, description="Add the call to this group (with name).")
    group_name: str | None = None
    role: str | None = None
    position: int | None = None


@dg.op(tags={"kind": "llm"}, pool="llm_api")
def adhoc_prompt(
    context: dg.OpExecutionContext,
    config: AdhocPromptConfig,
    database: DatabaseResource,
    llm: LLMProvidersResource,
) -> dict:
    """Send one prompt, capture it in raw_calls, add it to the chosen group, show the answer."""
    if (config.prompt is None) == (config.messages is None):
        raise dg.Failure("give exactly one of `prompt` or `messages`")
    if (config.group_type is None) != (config.group_name is None):
        raise dg.Failure("a group needs both `group_type` and `group_name`")
    missing = llm.missing_env_vars(config.provider)
    if missing:
        raise dg.Failure(
            f"provider {config.provider!r} is not configured: set {', '.join(missing)}"
        )
    params = {
        k: v
        for k in ("temperature", "max_tokens", "top_p", "seed")
        if (v := getattr(config, k)) is not None
    }
    messages = [m.model_dump() for m in config.messages] if config.messages else None
    db = database.get_connection()

    async def call() -> tuple[dict, int | None]:
        async with llm.create_service(config.provider, config.model, db) as service:
            group_id = None
            if config.group_type:
                group_id = await service.named_group(config.group_type, config.group_name)
            result = await service.run_inference(
                config.prompt,
                messages=messages,
                extra_metadata={"source": "adhoc_prompt_job", "dagster_run_id": context.run.run_id},
                group_id=group_id,
                group_role=config.role,
                group_position=config.position,
                **params,
            )
            return result, group_id

    try:
        result, group_id = asyncio.run(call())
    except ProviderError as error:
        raise dg.Failure(
            f"the call failed ({error.error_type}): {error.message}",
            metadata={"raw_call_id": getattr(error, "call_id", None) or -1},
        ) from error
    meta = result["metadata"]
    context.add_output_metadata(
        {
            "answer": dg.MetadataValue.md(result["response"]),
            "raw_call_id": result["id"],
            "provider": config.provider,
            "model": config.model,
            "latency_ms": meta.get("latency_ms"),
            "total_tokens": meta.get("tokens"),
            "cost_usd": meta.get("cost_usd"),
            "group_id": group_id if group_id is not None else -1,
        }
    )
    context.log.info(f"answer (raw_call {result['id']}): {result['response']}")
    return {"raw_call_id": result["id"], "group_id": group_id}


@dg.job(description="Send one prompt (or chat) from the launchpad; captured like any call.")
def adhoc_prompt_job():
    adhoc_prompt()
