"""Analytics assets, the prompt search job, the migration asset with its backfill checks, the
legacy database sensor and the run-failure sensor, on real databases."""

import base64
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pandas as pd
from sqlalchemy import delete, select

from study_query_dagster.assets.analytics import prompt_search_job
from study_query_dagster.automation import (
    analytics_after_migration,
    legacy_database_sensor,
    record_failed_runs,
)
from study_query_dagster.db import (
    DatabaseConnection,
    Group,
    GroupMember,
    GroupRepository,
    RunFailureRepository,
)
from study_query_dagster.definitions import defs
from study_query_dagster.jobs import results_job
from study_query_dagster.resources.database import DatabaseResource, LegacyDatabaseResource
from tests.support.fake_llm_server import Fault
from tests.support.legacy import add_v1_sqlite_rows, create_v1_sqlite
from tests.support.pipeline import STUDY_ASSETS, make_resources, write_prompt_set

ANALYTICS = dg.AssetSelection.groups("analytics")
MIGRATION = dg.AssetSelection.assets("migrated_raw_calls")
SET = """
    name: duo
    prompts:
      - {id: one, text: "first question here"}
      - {id: two, text: "second question here"}
    targets:
      - {provider: openai, model: gpt-4o-mini, params: {max_tokens: 20}}
      - {provider: offline, model: offline-echo, label: echo-cold, params: {temperature: 0}}
      - {provider: offline, model: offline-echo, label: echo-warm, params: {temperature: 1}}
    samples: 3
"""
T0 = datetime(2024, 3, 1, 9, 0, tzinfo=timezone.utc)


def run(resources, selection, instance, partition_key=None):
    return dg.materialize(
        [*defs.assets, *defs.asset_checks], selection=selection, resources=resources,
        instance=instance, partition_key=partition_key, raise_on_error=False,
    )  # fmt: skip


def metadata(result, asset):
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path == [asset]]
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def png_from_markdown(markdown: str) -> bytes:
    match = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert match, markdown[:200]
    return base64.b64decode(match.group(1))


def rows(table_value) -> list[dict]:
    """The records of a `MetadataValue.table`."""
    return [record.data for record in table_value.records]


def test_analytics_report_what_was_captured(db_url, tmp_path, llm_server):
    prompt_dir = tmp_path / "sets"
    write_prompt_set(prompt_dir, "duo", SET)
    resources = make_resources(db_url, prompt_dir, llm_server.url, exports_dir=tmp_path / "out")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("prompt_sets", ["duo"])
        assert run(resources, STUDY_ASSETS, instance, "duo").success
        result = run(resources, ANALYTICS, instance)
    assert result.success

    comparison = metadata(result, "provider_comparison")
    assert (comparison["models"], comparison["targets"]) == (2, 3)
    assert (comparison["calls"], comparison["success_rate"]) == (18, 1.0)
    # targets are the set's labels, never merged by model: two temperatures, two rows
    targets = {r["target"]: r for r in rows(comparison["per_target"])}
    assert set(targets) == {"openai-gpt-4o-mini", "echo-cold", "echo-warm"}
    assert (targets["echo-cold"]["params"], targets["echo-warm"]["params"]) == (
        "temperature=0",
        "temperature=1",
    )
    assert {r["prompt_set"] for r in targets.values()} == {"duo"}
    assert all(r["calls"] == 6 and r["model"] for r in targets.values())
    models = {(r["provider"], r["model"]): r for r in rows(comparison["per_model"])}
    assert models["offline", "offline-echo"]["calls"] == 12  # the cross-set view: per model
    schema = {c.name: c.type for c in comparison["per_target"].schema.columns}
    assert (schema["calls"], schema["success_rate"], schema["target"]) == ("int", "float", "string")
    # offline is free and the fake openai model is priced: a latency and a cost chart
    assert len(re.findall(r"data:image/png", comparison["charts"])) == 2
    exported = pd.read_csv(comparison["csv"])
    assert sorted(exported["provider"]) == ["offline", "openai"]
    assert exported["calls"].sum() == 18
    assert sorted(pd.read_csv(comparison["targets_csv"])["target"]) == sorted(targets)

    summary = metadata(result, "study_summary")
    assert (summary["total_calls"], summary["failures"]) == (18, 0)
    assert isinstance(summary["total_calls"], int)  # a count stays an integer
    assert summary["failed_runs"] == "_no failed runs recorded_"  # calls, but no failed run
    assert png_from_markdown(summary["chart"])[:8] == b"\x89PNG\r\n\x1a\n"
    series = metadata(result, "usage_time_series")
    assert series["latest_bucket_calls"] == 18 and series["buckets"] == 1
    # one day of calls: no line on an axis of empty years, but the reason
    assert "data:image/png" not in series["charts"]
    assert series["charts"].count("all calls so far fall in one day") == 3
    recent = metadata(result, "recent_calls")
    assert recent["dagster/row_count"] == 18
    assert "first question here" in {r["prompt"] for r in rows(recent["table"])}
    assert recent["newest_call_id"] == str(max(r["id"] for r in rows(recent["table"])))
    assert png_from_markdown(recent["chart"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_file()) == [
        "provider_comparison.csv", "recent_calls.csv", "study_summary.csv",
        "target_comparison.csv", "usage_time_series_day.csv",
    ]  # fmt: skip


def test_prompt_search_job_shows_matches(db_url, tmp_path, llm_server):
    prompt_dir = tmp_path / "sets"
    write_prompt_set(prompt_dir, "duo", SET)
    resources = make_resources(db_url, prompt_dir, llm_server.url)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("prompt_sets", ["duo"])
        assert run(resources, STUDY_ASSETS, instance, "duo").success
    job = dg.Definitions(jobs=[prompt_search_job], resources=resources).resolve_job_def(
        "prompt_search_job"
    )
    for limit, shown in ((50, 9), (4, 4)):
        result = job.execute_in_process(
            run_config={"ops": {"search_prompts": {"config": {"term": "SECOND", "limit": limit}}}}
        )
        [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
        meta = output.event_specific_data.metadata
        # 3 targets x 3 samples of prompt "two" match, whatever the limit shows
        assert (meta["matches"].value, meta["shown"].value) == (9, shown)
        found = rows(meta["results"])
        assert len(found) == shown and {r["prompt"] for r in found} == {"second question here"}


def legacy_rows(n, start=0, batch="batch-a"):
    return [
        {"prompt": f"legacy prompt {i}", "response": f"legacy answer {i}", "provider": "azure",
         "tokens": 10 + i, "latency_ms": 100.0 + i, "metadata": {"i": i}, "batch_id": batch,
         "created_at": (T0 + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S")}
        for i in range(start, start + n)
    ]  # fmt: skip


def test_migration_asset_checks_and_incremental_rerun(db_url, tmp_path):
    legacy = create_v1_sqlite(tmp_path / "v1.db", legacy_rows(40) + legacy_rows(5, 40, "batch-b"))
    resources = make_resources(db_url, tmp_path / "sets", legacy_url=f"sqlite:///{legacy}")
    with dg.instance_for_test() as instance:
        first = run(resources, MIGRATION, instance)
        assert first.success
        assert metadata(first, "migrated_raw_calls")["migrated_now"] == 45
        checks = {c.check_name: c for c in first.get_asset_check_evaluations()}
        assert {n: c.passed for n, c in checks.items()} == {
            "row_counts_match": True, "batch_sizes_match": True, "batch_order_matches": True,
            "timestamps_match": True, "sample_parity": True, "no_rows_quarantined": True,
        }  # fmt: skip
        assert "report" in checks["row_counts_match"].metadata

        add_v1_sqlite_rows(legacy, legacy_rows(100, 45, "batch-c"))
        second = run(resources, MIGRATION, instance)
        assert metadata(second, "migrated_raw_calls")["migrated_now"] == 100
        assert metadata(second, "migrated_raw_calls")["already_migrated"] == 45

        # Tamper: a migrated call leaves its batch group -> batch_sizes_match fails, naming it.
        db = DatabaseConnection(db_url)
        with db.session_scope() as session:
            group_id = GroupRepository(session).find_group("batch", "batch-b").id
            victim = session.scalars(
                select(GroupMember.call_id).where(GroupMember.group_id == group_id).limit(1)
            ).one()
            session.execute(delete(GroupMember).where(GroupMember.call_id == victim))
        db.dispose()
        third = run(resources, MIGRATION, instance)
        batch_check = {c.check_name: c for c in third.get_asset_check_evaluations()}[
            "batch_sizes_match"
        ]
        assert not batch_check.passed
        assert "batch-b" in batch_check.metadata["report"].value


def test_an_unreachable_app_database_fails_the_migration_clearly(tmp_path):
    legacy = create_v1_sqlite(tmp_path / "v1.db", legacy_rows(3))
    # Nothing listens on port 1: the connection is refused.
    unreachable = "postgresql://study:s3cret-pw@127.0.0.1:1/app"
    resources = make_resources(unreachable, tmp_path / "sets", legacy_url=f"sqlite:///{legacy}")
    with dg.instance_for_test() as instance:
        result = run(resources, MIGRATION, instance)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data.error)
    where = "postgresql://study:***@127.0.0.1:1/app"
    assert f"The app database ({where}) failed during the migration" in message
    assert "rows already migrated are not copied again" in message
    assert "s3cret-pw" not in message


def test_legacy_sensor_observes_and_requests_migrations(tmp_path):
    with dg.instance_for_test() as instance:
        unset = legacy_database_sensor(dg.build_sensor_context(
            instance=instance, resources={"legacy_database": LegacyDatabaseResource(url=None)},
        ))  # fmt: skip
        assert "LEGACY_DATABASE_URL is not set" in unset.skip_message

        legacy = create_v1_sqlite(tmp_path / "v1.db", legacy_rows(3))
        resources = {"legacy_database": LegacyDatabaseResource(url=f"sqlite:///{legacy}")}
        first = legacy_database_sensor(
            dg.build_sensor_context(instance=instance, resources=resources)
        )
        [request] = first.run_requests
        assert request.run_key == "migrate:3:3"
        [observation] = first.asset_events
        assert observation.metadata["row_count"].value == 3

        same = legacy_database_sensor(
            dg.build_sensor_context(instance=instance, resources=resources, cursor=first.cursor)
        )
        assert not same.run_requests and "unchanged" in same.skip_reason.skip_message

        add_v1_sqlite_rows(legacy, legacy_rows(2, 3))
        grown = legacy_database_sensor(
            dg.build_sensor_context(instance=instance, resources=resources, cursor=first.cursor)
        )
        assert [r.run_key for r in grown.run_requests] == ["migrate:5:5"]


def test_failed_runs_are_recorded_for_the_analytics(db_url, tmp_path, llm_server):
    prompt_dir = tmp_path / "sets"
    write_prompt_set(prompt_dir, "duo", SET)
    resources = make_resources(db_url, prompt_dir)  # no keys: the run fails before any call
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("prompt_sets", ["duo"])
        failed = run(
            resources, dg.AssetSelection.assets("prompt_set", "inference_run"), instance, "duo"
        )
        assert not failed.success
        # the blocking check stopped it; run inference_run alone to get a step failure too
        alone = run(resources, dg.AssetSelection.assets("inference_run"), instance, "duo")
        [failure_record] = instance.all_logs(alone.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        failure_event = failure_record.dagster_event
        context = dg.build_run_status_sensor_context(
            sensor_name="record_failed_runs", dagster_instance=instance,
            dagster_run=alone.dagster_run, dagster_event=failure_event,
            resources={"database": DatabaseResource(url=db_url)},
        ).for_run_failure()  # fmt: skip
        requests = record_failed_runs(context)
        record_failed_runs(context)  # seen twice, recorded once
        # the analytics refresh (study_summary lists the failure); no run group was started
        # (missing key), so there is no report to write
        assert [(r.job_name, r.run_key) for r in requests] == [
            ("analytics_job", f"after-failed:{alone.run_id}")
        ]

    db = DatabaseConnection(db_url)
    with db.session_scope() as session:
        [recorded] = RunFailureRepository(session).recent_run_failures()
        assert recorded.run_id == alone.run_id and recorded.partition_key == "duo"
        assert recorded.failed_steps == ["inference_run.plan_inference"]  # refused before any call
        assert "set OPENAI_API_KEY" in recorded.error
        assert session.scalars(select(Group)).all()  # the prompt_set group; no run group
    db.dispose()


OPENAI_ONLY = """
    name: solo
    prompts:
      - {id: one, text: "first question here"}
      - {id: two, text: "second question here"}
    targets:
      - {provider: openai, model: gpt-4o-mini, params: {max_tokens: 20}}
    samples: 2
"""


def test_a_failed_inference_run_gets_its_report_and_refreshes(db_url, tmp_path, llm_server):
    prompt_dir = tmp_path / "sets"
    write_prompt_set(prompt_dir, "solo", OPENAI_ONLY)
    resources = make_resources(db_url, prompt_dir, llm_server.url)
    # every call keeps failing with a server error: nothing succeeds, the run fails, the
    # failed calls are kept
    llm_server.fault_fn = lambda request: Fault(status=503) if "chat" in request.path else None
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("prompt_sets", ["solo"])
        failed = run(resources, STUDY_ASSETS, instance, "solo")
        assert not failed.success
        [record] = instance.all_logs(failed.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        context = dg.build_run_status_sensor_context(
            sensor_name="record_failed_runs", dagster_instance=instance,
            dagster_run=failed.dagster_run, dagster_event=record.dagster_event,
            resources={"database": DatabaseResource(url=db_url)},
        ).for_run_failure()  # fmt: skip
        analytics, results = record_failed_runs(context)
        assert analytics.job_name == "analytics_job"
        assert (results.job_name, results.partition_key) == ("results_job", "solo")
        # the requested run writes the failed run's results
        job = dg.Definitions(
            assets=defs.assets, asset_checks=defs.asset_checks, jobs=[results_job],
            resources=resources,
        ).resolve_job_def("results_job")  # fmt: skip
        written = job.execute_in_process(
            instance=instance, partition_key="solo", tags=results.tags, raise_on_error=False
        )
    assert written.success
    meta = metadata(written, "study_results")
    assert meta["run"] == failed.run_id
    assert (meta["items"], meta["items_answered"], meta["failed_calls"]) == (4, 0, 4)
    html = Path(meta["report"]).read_text()
    assert html.count('data-kind="failure"') == 2  # one group per cell: one/two x the target
    assert "server_error" in html and "503" in html


def test_migrations_refresh_the_analytics_without_being_their_upstream():
    graph = defs.resolve_asset_graph()
    for name in ("provider_comparison", "usage_time_series", "study_summary", "recent_calls"):
        # an upstream that was never materialized makes the UI ask "Are you sure?"
        assert graph.get(dg.AssetKey(name)).parent_keys == {dg.AssetKey("inference_run")}
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization("migrated_raw_calls"))
        first = analytics_after_migration.evaluate_tick(
            dg.build_sensor_context(instance=instance, definitions=defs)
        )
        [request] = first.run_requests
        assert request.run_key.startswith("after-migration:")
        again = analytics_after_migration.evaluate_tick(
            dg.build_sensor_context(instance=instance, definitions=defs, cursor=first.cursor)
        )
        assert not again.run_requests  # one refresh per migration


def test_analytics_refresh_after_new_inference_runs(db_url, tmp_path, llm_server):
    prompt_dir = tmp_path / "sets"
    write_prompt_set(prompt_dir, "duo", SET)
    resources = make_resources(db_url, prompt_dir, llm_server.url)
    analytics = ["provider_comparison", "usage_time_series", "study_summary", "recent_calls"]

    def requested(result) -> list[str]:
        return sorted(k for k in analytics if result.get_num_requested(dg.AssetKey(k)))

    def evaluate(cursor=None):
        return dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=ANALYTICS, cursor=cursor
        )

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("prompt_sets", ["duo"])
        first = evaluate()
        assert requested(first) == sorted(analytics)  # never materialized: requested at once
        assert run(resources, ANALYTICS, instance).success
        quiet = evaluate(first.cursor)
        assert requested(quiet) == []  # nothing new upstream
        assert run(resources, STUDY_ASSETS, instance, "duo").success  # a new inference run
        after = evaluate(quiet.cursor)
        assert requested(after) == sorted(analytics)
        assert run(resources, ANALYTICS, instance).success
        settled = evaluate(after.cursor)
        assert requested(settled) == []

        # A refresh that was already running when an inference run finished ends after it:
        # its materialization must not swallow the update it may not have seen.
        assert run(resources, STUDY_ASSETS, instance, "duo").success
        assert run(resources, ANALYTICS, instance).success  # the refresh that was running
        raced = evaluate(settled.cursor)
        assert requested(raced) == sorted(analytics)

        # The same, right after a request: the update arrives between the tick that requested
        # the refresh and the next one (as in the daemon, where the requested run starts late).
        assert run(resources, STUDY_ASSETS, instance, "duo").success
        assert run(resources, ANALYTICS, instance).success
        again = evaluate(raced.cursor)
        assert requested(again) == sorted(analytics)
        assert run(resources, ANALYTICS, instance).success
        assert requested(evaluate(again.cursor)) == []
