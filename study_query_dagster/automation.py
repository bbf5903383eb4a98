"""Sensors and schedules. All start RUNNING, so `make run` reacts to a dropped file at once."""

import json

import dagster as dg

from .assets.migration import legacy_inference_runs, observation_metadata
from .assets.prompts import PROMPT_SETS
from .config import get_settings
from .db import RunFailureRepository
from .jobs import migration_job, study_job
from .resources.database import DatabaseResource, LegacyDatabaseResource
from .resources.prompt_sets import PromptSetsResource
from .services.migration import legacy_stats

RUNNING = dg.DefaultSensorStatus.RUNNING
HASH_TAG = "study/prompt_set_hash"


@dg.sensor(
    job=study_job,
    default_status=RUNNING,
    minimum_interval_seconds=get_settings().prompt_set_sensor_interval_s,
    description="Watches PROMPT_SETS_DIR: a new or changed prompt set file gets its partition "
    "and a run; an unchanged file is never re-run; an invalid one is reported.",
)
def prompt_set_sensor(context: dg.SensorEvaluationContext, prompt_sets: PromptSetsResource):
    valid, errors = prompt_sets.discover()
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions(PROMPT_SETS.name))
    new_partitions = sorted(name for name in valid if name not in known)
    run_requests = [
        dg.RunRequest(
            partition_key=name,
            # Dagster never launches a run_key twice: an unchanged file is never re-run.
            run_key=f"{name}:{loaded.content_hash}",
            tags={HASH_TAG: loaded.content_hash, "study/prompt_set_file": str(loaded.path)},
        )
        for name, loaded in valid.items()
        if seen.get(name) != loaded.content_hash
    ]
    for path, error in errors.items():
        context.log.warning(f"invalid prompt set {path}:\n{error}")
    cursor = json.dumps({name: loaded.content_hash for name, loaded in valid.items()})
    if not run_requests and not new_partitions:
        reason = "no new or changed prompt sets"
        if errors:
            reason = "invalid prompt set(s), not run:\n" + "\n".join(
                str(e) for e in errors.values()
            )
        return dg.SensorResult(skip_reason=reason, cursor=cursor)
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[PROMPT_SETS.build_add_request(new_partitions)]
        if new_partitions
        else [],
        cursor=cursor,
    )


def _scheduled_runs(
    context: dg.ScheduleEvaluationContext, prompt_sets: PromptSetsResource, cadence: str
):
    valid, _ = prompt_sets.discover()
    registered = set(context.instance.get_dynamic_partitions(PROMPT_SETS.name))
    stamp = context.scheduled_execution_time.isoformat()
    requests = [
        dg.RunRequest(
            partition_key=name,
            run_key=f"{name}:{cadence}:{stamp}",  # each tick is a new run group: answers accumulate
            tags={HASH_TAG: loaded.content_hash, "study/schedule": cadence},
        )
        for name, loaded in valid.items()
        if loaded.prompt_set.schedule == cadence and name in registered
    ]
    return requests or dg.SkipReason(f"no registered prompt set has schedule: {cadence}")


@dg.schedule(
    job=study_job,
    cron_schedule="0 6 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Re-runs every prompt set marked `schedule: daily` (06:00 UTC).",
)
def daily_prompt_sets(context: dg.ScheduleEvaluationContext, prompt_sets: PromptSetsResource):
    return _scheduled_runs(context, prompt_sets, "daily")


@dg.schedule(
    job=study_job,
    cron_schedule="0 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Re-runs every prompt set marked `schedule: hourly`.",
)
def hourly_prompt_sets(context: dg.ScheduleEvaluationContext, prompt_sets: PromptSetsResource):
    return _scheduled_runs(context, prompt_sets, "hourly")


@dg.sensor(
    job=migration_job,
    default_status=RUNNING,
    minimum_interval_seconds=60,
    description="Observes the legacy v1 database (LEGACY_DATABASE_URL): when it gains rows, "
    "requests a migration run. Skips while no legacy database is configured.",
)
def legacy_database_sensor(
    context: dg.SensorEvaluationContext, legacy_database: LegacyDatabaseResource
):
    if not legacy_database.configured:
        return dg.SkipReason("LEGACY_DATABASE_URL is not set: no legacy database to migrate")
    stats = legacy_stats(legacy_database.source_url())
    version = f"{stats['row_count']}:{stats['max_id']}"
    observation = dg.AssetObservation(
        asset_key=legacy_inference_runs.key,
        metadata=observation_metadata(stats),
        tags={"dagster/data_version": version},
    )
    if context.cursor == version or stats["row_count"] == 0:
        return dg.SensorResult(
            skip_reason=f"legacy database unchanged ({stats['row_count']} rows)",
            asset_events=[observation] if context.cursor != version else [],
            cursor=version,
        )
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"migrate:{version}")],
        asset_events=[observation],
        cursor=version,
    )


@dg.run_failure_sensor(
    default_status=RUNNING,
    description="Records every failed run (id, job, partition, failed steps, error) in the app "
    "database's run_failures table, where study_summary reports them.",
)
def record_failed_runs(context: dg.RunFailureSensorContext, database: DatabaseResource):
    run = context.dagster_run
    step_failures = context.get_step_failure_events()
    errors = [
        f"{event.step_key}: {event.event_specific_data.error.message.strip()}"
        for event in step_failures
        if event.event_specific_data and event.event_specific_data.error
    ]
    with database.get_connection().session_scope() as session:
        RunFailureRepository(session).record_run_failure(
            run.run_id,
            run.job_name,
            partition_key=run.tags.get("dagster/partition"),
            failed_steps=[event.step_key for event in step_failures],
            error=("\n".join(errors) or context.failure_event.message or "")[:4000],
        )


# Declarative automation (the analytics assets' REFRESH conditions) is evaluated by this sensor.
analytics_automation = dg.AutomationConditionSensorDefinition(
    "analytics_automation",
    target=dg.AssetSelection.groups("analytics"),
    default_status=RUNNING,
    minimum_interval_seconds=30,
)

# The variation assets' condition (eager, per prompt-set partition): measured after each new
# run of a set, in a run of their own so that study_job stays as short as before.
variation_automation = dg.AutomationConditionSensorDefinition(
    "variation_automation",
    target=dg.AssetSelection.groups("variation"),
    default_status=RUNNING,
    minimum_interval_seconds=30,
)
