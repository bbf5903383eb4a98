"""Jobs: the study pipeline for one prompt set (and its results alone), migration, analytics,
and the ad-hoc prompt from the launchpad.

`study_job`'s executor is chosen per deployment (STUDY_JOB_EXECUTOR): in_process by default (a
run's steps one after another in the run's process; the calls are concurrent inside each
step), multiprocess, or celery (each step a task for the Celery workers on CELERY_BROKER_URL,
which may be on other machines; docs/DEPLOYMENT.md)."""

import asyncio
from typing import Literal

import dagster as dg
from pydantic import Field

from .assets.embeddings import response_embeddings
from .assets.inference import inference_run
from .assets.metadata import ident, measure
from .assets.migration import migrated_raw_calls
from .assets.prompts import prompt_set
from .assets.results import study_results
from .config import Settings, get_settings
from .providers import ProviderError
from .providers.registry import CHAT_PROVIDERS
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
    selection=dg.AssetSelection.assets(
        prompt_set, inference_run, response_embeddings, study_results
    ),
    executor_def=study_job_executor(get_settings()),
    description="prompt_set -> inference_run -> response_embeddings and study_results (with "
    "their checks) for one prompt set.",
)

results_job = dg.define_asset_job(
    "results_job",
    selection=dg.AssetSelection.assets(study_results),
    executor_def=dg.in_process_executor,
    description="Write the results and study report of a prompt set's latest run (requested "
    "after a run that failed, so its report shows what it got and what failed).",
)


# The variation assets also refresh by themselves after each run (variation_automation); this
# job measures a set's newest run on demand, and `make materialize` runs it after study_job.
variation_job = dg.define_asset_job(
    "variation_job",
    # and the study report again, now with the run's variation
    selection=dg.AssetSelection.groups("variation") | dg.AssetSelection.assets(study_results),
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
    executor_def=dg.in_process_executor,
    description="Refresh every analytics asset now (they also refresh by themselves).",
)


class ChatMessage(dg.Config):
    role: Literal["system", "user", "assistant"]
    content: str


class AdhocGroup(dg.Config):
    type: str = Field(description="Group type, e.g. experiment.")
    name: str = Field(description="Group name; created if missing.")
    role: str | None = Field(None, description="The call's role in the group.")
    position: int | None = Field(None, description="The call's position (default: next).")


class AdhocPromptConfig(dg.Config):
    """One call, captured like any other: `prompt` is the user message the model answers;
    `system` and `history` (earlier turns) make it a conversation."""

    provider: Literal[CHAT_PROVIDERS] = "offline"  # type: ignore[valid-type]
    model: str = Field("offline-echo", description="Model, or the Azure deployment.")
    prompt: str = Field(description="The user message the model answers.")
    system: str | None = Field(None, description="A system prompt sent first.")
    history: list[ChatMessage] = Field(
        default_factory=list, description="Earlier turns of the conversation, before `prompt`."
    )
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    group: AdhocGroup | None = Field(None, description="Add the call to this group.")

    def messages(self) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        earlier = [m.model_dump() for m in self.history]
        return [*system, *earlier, {"role": "user", "content": self.prompt}]


# What the launchpad opens with: a call that works with no configuration at all.
ADHOC_EXAMPLE = {
    "ops": {
        "adhoc_prompt": {
            "config": {
                "provider": "offline",
                "model": "offline-echo",
                "prompt": "What is the capital of Peru?",
                "temperature": 0.2,
                "max_tokens": 64,
            }
        }
    }
}


@dg.op(tags={"kind": "llm"}, pool="llm_api")
def adhoc_prompt(
    context: dg.OpExecutionContext,
    config: AdhocPromptConfig,
    database: DatabaseResource,
    llm: LLMProvidersResource,
) -> dict:
    """Send one prompt, capture it in raw_calls, add it to the chosen group, show the answer."""
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
    plain = not config.system and not config.history
    group = config.group
    db = database.get_connection()

    async def call() -> tuple[dict, int | None]:
        async with llm.create_service(config.provider, config.model, db) as service:
            group_id = None
            if group is not None:
                group_id = await service.named_group(group.type, group.name)
            result = await service.run_inference(
                config.prompt if plain else None,
                messages=None if plain else config.messages(),
                extra_metadata={"source": "adhoc_prompt_job", "dagster_run_id": context.run.run_id},
                group_id=group_id,
                group_role=group.role if group else None,
                group_position=group.position if group else None,
                **params,
            )
            return result, group_id

    try:
        result, group_id = asyncio.run(call())
    except ProviderError as error:
        raise dg.Failure(
            f"the call failed ({error.error_type}): {error.message}",
            metadata={"raw_call_id": ident(getattr(error, "call_id", None))},
        ) from error
    meta = result["metadata"]
    context.add_output_metadata(
        {
            "answer": dg.MetadataValue.md(result["response"]),
            "raw_call_id": ident(result["id"]),
            "provider": config.provider,
            "model": config.model,
            "latency_ms": measure(meta.get("latency_ms")),
            "total_tokens": meta.get("tokens"),
            "cost_usd": meta.get("cost_usd"),
            "group_id": ident(group_id),
        }
    )
    context.log.info(f"answer (raw_call {result['id']}): {result['response']}")
    return {"raw_call_id": result["id"], "group_id": group_id}


@dg.job(
    description="Send one prompt (or chat) from the launchpad; captured like any call.",
    config=ADHOC_EXAMPLE,
)
def adhoc_prompt_job():
    adhoc_prompt()
