"""The prompt set sensor and the schedules, evaluated with Dagster's own test contexts."""

import json
from datetime import datetime, timezone

import dagster as dg

from study_query_dagster.assets.prompts import PROMPT_SETS
from study_query_dagster.automation import (
    daily_prompt_sets,
    hourly_prompt_sets,
    latest_run_failed,
    prompt_set_sensor,
)
from study_query_dagster.definitions import defs
from study_query_dagster.resources.prompt_sets import PromptSetsResource
from tests.support.pipeline import make_resources, write_prompt_set

SET = """
    name: {name}
    prompts:
      - {{id: q, text: "{text}"}}
    targets:
      - {{provider: offline, model: offline-echo}}
    schedule: {schedule}
"""


def write(folder, name, text="hello", schedule="none"):
    return write_prompt_set(folder, name, SET.format(name=name, text=text, schedule=schedule))


def evaluate(instance, folder, cursor=None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"prompt_sets": PromptSetsResource(directory=str(folder))},
        definitions=defs,
    )  # fmt: skip
    return prompt_set_sensor(context)


def apply(instance, result):
    """What the daemon does with a sensor result: add the partitions it asks for."""
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def test_new_changed_unchanged_and_invalid_files(tmp_path):
    folder = tmp_path / "sets"
    write(folder, "alpha")
    with dg.instance_for_test() as instance:
        # new file: its partition is added and a run requested
        first = evaluate(instance, folder)
        assert [list(r.partition_keys) for r in first.dynamic_partitions_requests] == [["alpha"]]
        [run] = first.run_requests
        alpha_hash = json.loads(first.cursor)["valid"]["alpha"]
        assert (run.partition_key, run.run_key) == ("alpha", f"alpha:{alpha_hash}:1")
        assert run.tags["study/reason"] == "new"
        apply(instance, first)

        # unchanged: nothing to do (and only a comment changed: same content hash)
        path = folder / "alpha.yaml"
        path.write_text("# a comment\n" + path.read_text())
        unchanged = evaluate(instance, folder, first.cursor)
        assert not unchanged.run_requests and unchanged.skip_reason is not None
        assert "no new or changed" in unchanged.skip_reason.skip_message

        # changed: a new run with a new run key, no new partition
        write(folder, "alpha", text="hello again")
        changed = evaluate(instance, folder, unchanged.cursor)
        [rerun] = changed.run_requests
        assert rerun.partition_key == "alpha" and rerun.run_key != run.run_key
        assert rerun.tags["study/reason"] == "changed"
        assert not changed.dynamic_partitions_requests

        # invalid: no run, but a failed prompt_set_is_valid check on its set, with every
        # problem's file:line, and a partition for it to show on
        (folder / "broken.yaml").write_text(
            "name: broken\nprompts: []\ntargets:\n  - {provider: nope}\n"
        )
        invalid = evaluate(instance, folder, changed.cursor)
        assert not invalid.run_requests
        [check] = invalid.asset_events
        assert (check.check_name, check.partition, check.passed) == (
            "prompt_set_is_valid", "broken", False,
        )  # fmt: skip
        problems = check.metadata["problems"].value.splitlines()
        assert len(problems) == 2 and all("broken.yaml:" in p for p in problems)
        assert any("targets[0].provider" in p for p in problems)
        # the skip reason (logged by the daemon every tick) points there, without the details
        message = invalid.skip_reason.skip_message
        assert "prompt_set_is_valid check of broken" in message and "provider" not in message
        apply(instance, invalid)
        assert sorted(instance.get_dynamic_partitions("prompt_sets")) == ["alpha", "broken"]

        # the same broken file again: reported once per change, not on every tick
        again = evaluate(instance, folder, invalid.cursor)
        assert not again.asset_events and not again.run_requests

        # the file goes away: so does the partition that only existed to show it
        (folder / "broken.yaml").unlink()
        gone = evaluate(instance, folder, again.cursor)
        [delete] = gone.dynamic_partitions_requests
        assert isinstance(delete, dg.DeleteDynamicPartitionsRequest)
        assert list(delete.partition_keys) == ["broken"]


def test_a_fixed_file_reruns_a_set_whose_latest_run_failed(tmp_path):
    folder = tmp_path / "sets"
    path = write(folder, "alpha")
    good = path.read_text()
    with dg.instance_for_test() as instance:
        first = evaluate(instance, folder)
        apply(instance, first)
        # its run fails (no materialization of the set's inference_run)
        path.write_text(good.replace("prompts:", "promts:"))  # a typo
        broken = evaluate(instance, folder, first.cursor)
        [check] = broken.asset_events
        assert not check.passed and "did you mean 'prompts'" in check.metadata["problems"].value
        path.write_text(good)  # fixed: the very version that ran (and failed) before
        fixed = evaluate(instance, folder, broken.cursor)
        [rerun] = fixed.run_requests
        assert rerun.tags["study/reason"] == "fixed after a failed run"
        assert rerun.run_key != first.run_requests[0].run_key  # a new key: Dagster launches it
        [passed] = fixed.asset_events
        assert (passed.partition, passed.passed) == ("alpha", True)

        # once the set has run fine, fixing a typo back to that version runs nothing
        for key in ("prompt_set", "inference_run"):
            instance.report_runless_asset_event(dg.AssetMaterialization(key, partition="alpha"))
        path.write_text(good.replace("targets:", "targetz:"))
        broken_again = evaluate(instance, folder, fixed.cursor)
        path.write_text(good)
        quiet = evaluate(instance, folder, broken_again.cursor)
        assert not quiet.run_requests and [e.passed for e in quiet.asset_events] == [True]


def test_latest_run_failed_reads_the_partitions_status(tmp_path, db_url):
    folder = tmp_path / "sets"
    write_prompt_set(
        folder,
        "keyless",
        """
        name: keyless
        prompts: [{id: q, text: "hi"}]
        targets: [{provider: openai, model: gpt-4o-mini}]
        """,
    )
    resources = make_resources(db_url, folder)  # no OPENAI_API_KEY: the run is refused
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("prompt_sets", ["keyless"])
        assert latest_run_failed(instance, "keyless")  # never ran
        assets = [*defs.assets, *defs.asset_checks]
        for selection in ("prompt_set", "inference_run"):
            dg.materialize(assets, selection=[selection], resources=resources, instance=instance,
                           partition_key="keyless", raise_on_error=False)  # fmt: skip
        statuses = instance.get_status_by_partition(
            dg.AssetKey("inference_run"), ["keyless"], PROMPT_SETS
        )
        assert statuses["keyless"] == dg.AssetPartitionStatus.FAILED
        assert latest_run_failed(instance, "keyless")
        instance.report_runless_asset_event(
            dg.AssetMaterialization("inference_run", partition="keyless")
        )
        assert not latest_run_failed(instance, "keyless")


def test_schedules_rerun_sets_marked_for_them(tmp_path):
    folder = tmp_path / "sets"
    write(folder, "daily-set", schedule="daily")
    write(folder, "hourly-set", schedule="hourly")
    write(folder, "manual-set")
    write(folder, "unregistered", schedule="daily")
    resources = {"prompt_sets": PromptSetsResource(directory=str(folder))}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("prompt_sets", ["daily-set", "hourly-set", "manual-set"])
        when = datetime(2026, 11, 27, 6, 0, tzinfo=timezone.utc)
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when,
                                            resources=resources)  # fmt: skip
        [daily] = daily_prompt_sets(context)
        assert daily.partition_key == "daily-set"
        assert daily.run_key == f"daily-set:daily:{when.isoformat()}"  # a new run each day
        [hourly] = hourly_prompt_sets(context)
        assert hourly.partition_key == "hourly-set"

        instance.delete_dynamic_partition("prompt_sets", "daily-set")
        skipped = daily_prompt_sets(context)
        assert isinstance(skipped, dg.SkipReason)


def test_sensors_and_schedules_start_running():
    for sensor in defs.sensors:
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING, sensor.name
    for schedule in defs.schedules:
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING, schedule.name
