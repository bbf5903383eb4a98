"""Sensors and schedules. All start RUNNING, so `make run` reacts to a dropped file at once."""

from pathlib import Path

import dagster as dg

from .assets.inference import inference_run
from .assets.migration import legacy_inference_runs, migrated_raw_calls, observation_metadata
from .assets.prompts import PROMPT_SETS, prompt_set
from .assets.results import RESULTS_OF_TAG, study_results
from .config import get_settings
from .db import RunFailureRepository
from .jobs import analytics_job, migration_job, results_job, study_job
from .resources.database import DatabaseResource, LegacyDatabaseResource
from .resources.prompt_sets import PromptSetsResource
from .services.folder_watch import FolderState, broken_file, decide
from .services.migration import legacy_stats
from .services.reports import run_exists

RUNNING = dg.DefaultSensorStatus.RUNNING
HASH_TAG = "study/prompt_set_hash"


@dg.sensor(
    job=study_job,
    default_status=RUNNING,
    minimum_interval_seconds=get_settings().prompt_set_sensor_interval_s,
    description="Watches PROMPT_SETS_DIR: a new or changed prompt set file gets its partition "
    "and a run; an unchanged file is never re-run. A broken file is logged once per change and "
    "gets a run that fails at prompt_set with every problem's file and line (its partition "
    "turns red); once fixed, a set whose latest run failed runs again.",
)
def prompt_set_sensor(context: dg.SensorEvaluationContext, prompt_sets: PromptSetsResource):
    valid, errors = prompt_sets.discover()
    broken = [broken_file(path, [str(p) for p in error.problems]) for path, error in errors.items()]
    instance = context.instance
    decision = decide(
        FolderState.from_cursor(context.cursor),
        {name: loaded.content_hash for name, loaded in valid.items()},
        broken,
        set(instance.get_dynamic_partitions(PROMPT_SETS.name)),
        lambda name: latest_run_failed(instance, name),
    )
    for item in decision.newly_broken:
        where = f"set {item.name!r}" if item.name else "no set name could be read"
        context.log.warning(
            f"invalid prompt set file {item.path} ({where}), not run:\n" + "\n".join(item.problems)
        )
    for name in decision.fixed:
        context.log.info(f"prompt set {name!r} is valid again")
    partitions = []
    if decision.add_partitions:
        partitions.append(PROMPT_SETS.build_add_request(decision.add_partitions))
    if decision.delete_partitions:
        partitions.append(PROMPT_SETS.build_delete_request(decision.delete_partitions))
    cursor = decision.state.to_cursor()
    if not decision.runs:
        reason = "no new or changed prompt sets"
        if decision.broken:
            names = ", ".join(Path(b.path).name for b in decision.broken)
            reason += f"; invalid, not run (see their failed runs): {names}"
        return dg.SensorResult(
            skip_reason=reason, cursor=cursor, dynamic_partitions_requests=partitions
        )
    files = {name: str(loaded.path) for name, loaded in valid.items()}
    files.update({b.name: b.path for b in decision.broken if b.name})
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                partition_key=run.name,
                run_key=run.run_key,
                tags={
                    **({HASH_TAG: run.content_hash} if run.content_hash else {}),
                    "study/prompt_set_file": files[run.name],
                    "study/reason": run.reason,
                },
            )
            for run in decision.runs
        ],
        dynamic_partitions_requests=partitions,
        cursor=cursor,
    )


def latest_run_failed(instance: dg.DagsterInstance, name: str) -> bool:
    """Whether the set's latest prompt_set or inference_run materialization failed, or it
    never completed one."""
    statuses = [
        (instance.get_status_by_partition(key, [name], PROMPT_SETS) or {}).get(name)
        for key in (prompt_set.key, inference_run.key)
    ]
    return any(s in (None, dg.AssetPartitionStatus.FAILED) for s in statuses)


def prompt_set_schedule(cadence: str, cron: str, when: str = "") -> dg.ScheduleDefinition:
    """`{cadence}_prompt_sets`: at `cron`, a run of every registered prompt set marked
    `schedule: {cadence}`."""

    @dg.schedule(
        name=f"{cadence}_prompt_sets",
        job=study_job,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Re-runs every prompt set marked `schedule: {cadence}`{when}.",
    )
    def schedule(context: dg.ScheduleEvaluationContext, prompt_sets: PromptSetsResource):
        valid, _ = prompt_sets.discover()
        registered = set(context.instance.get_dynamic_partitions(PROMPT_SETS.name))
        stamp = context.scheduled_execution_time.isoformat()
        requests = [
            dg.RunRequest(
                partition_key=name,
                run_key=f"{name}:{cadence}:{stamp}",  # each tick a new run group: answers add up
                tags={HASH_TAG: loaded.content_hash, "study/schedule": cadence},
            )
            for name, loaded in valid.items()
            if loaded.prompt_set.schedule == cadence and name in registered
        ]
        return requests or dg.SkipReason(f"no registered prompt set has schedule: {cadence}")

    return schedule


daily_prompt_sets = prompt_set_schedule("daily", "0 6 * * *", " (06:00 UTC)")
hourly_prompt_sets = prompt_set_schedule("hourly", "0 * * * *")


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


# Jobs whose failure must not request another refresh (it would be the same refresh again).
REFRESH_JOBS = ("analytics_job", "results_job")


@dg.run_failure_sensor(
    default_status=RUNNING,
    request_jobs=[analytics_job, results_job],
    description="Records every failed run (id, job, partition, failed steps, error) in the app "
    "database's run_failures table, where study_summary reports them; then refreshes the "
    "analytics and, after a failed inference run, writes that run's results and report.",
)
def record_failed_runs(context: dg.RunFailureSensorContext, database: DatabaseResource):
    run = context.dagster_run
    step_failures = context.get_step_failure_events()
    errors = [
        f"{event.step_key}: {event.event_specific_data.error.message.strip()}"
        for event in step_failures
        if event.event_specific_data and event.event_specific_data.error
    ]
    partition = run.tags.get("dagster/partition")
    db = database.get_connection()
    with db.session_scope() as session:
        RunFailureRepository(session).record_run_failure(
            run.run_id,
            run.job_name,
            partition_key=partition,
            failed_steps=[event.step_key for event in step_failures],
            error=("\n".join(errors) or context.failure_event.message or "")[:4000],
        )
    if run.job_name in REFRESH_JOBS:
        return None
    requests = [dg.RunRequest(job_name=analytics_job.name, run_key=f"after-failed:{run.run_id}")]
    root = run.root_run_id or run.run_id
    if partition and run_exists(db, partition, root):
        # the run captured calls: its report shows what it got and what failed
        requests.append(
            dg.RunRequest(
                job_name=results_job.name,
                partition_key=partition,
                run_key=f"results-after-failed:{run.run_id}",
                tags={RESULTS_OF_TAG: root},
            )
        )
    return requests


@dg.asset_sensor(
    asset_key=migrated_raw_calls.key,
    job=analytics_job,
    default_status=RUNNING,
    description="Refreshes the analytics after each migration of legacy v1 rows.",
)
def analytics_after_migration(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    return dg.RunRequest(run_key=f"after-migration:{asset_event.run_id}:{asset_event.timestamp}")


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
    # study_results too: its report is written again once the variation has measured the run
    target=dg.AssetSelection.groups("variation") | dg.AssetSelection.assets(study_results),
    default_status=RUNNING,
    minimum_interval_seconds=30,
)
