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

        # invalid: its partition is added and a run requested that fails at prompt_set with
        # every problem's file:line (tested in test_a_broken_file_run_fails_with_its_lines)
        (folder / "broken.yaml").write_text(
            "name: broken\nprompts: []\ntargets:\n  - {provider: nope}\n"
        )
        invalid = evaluate(instance, folder, changed.cursor)
        [broken_run] = invalid.run_requests
        assert (broken_run.partition_key, broken_run.tags["study/reason"]) == (
            "broken", "invalid file",
        )  # fmt: skip
        assert broken_run.tags["study/prompt_set_file"].endswith("broken.yaml")
        apply(instance, invalid)
        assert sorted(instance.get_dynamic_partitions("prompt_sets")) == ["alpha", "broken"]

        # the same broken file again: reported once per change, not on every tick; the skip
        # reason (which the daemon logs every tick) names the file without the details
        again = evaluate(instance, folder, invalid.cursor)
        assert not again.run_requests
        message = again.skip_reason.skip_message
        assert "invalid, not run" in message and "broken.yaml" in message
        assert "provider" not in message
        (folder / "broken.yaml").write_text("name: broken\nprompts: []\n")  # changed, still broken
        changed_broken = evaluate(instance, folder, again.cursor)
        [rerun_broken] = changed_broken.run_requests
        assert rerun_broken.run_key != broken_run.run_key

        # the file goes away: so does the partition that only existed to show it
        (folder / "broken.yaml").unlink()
        gone = evaluate(instance, folder, changed_broken.cursor)
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
        # its run fails (no materialization of the set's inference_run); then a typo
        path.write_text(good.replace("prompts:", "promts:"))
        broken = evaluate(instance, folder, first.cursor)
        [failing] = broken.run_requests
        assert failing.tags["study/reason"] == "invalid file"
        path.write_text(good)  # fixed: the very version that ran (and failed) before
        fixed = evaluate(instance, folder, broken.cursor)
        [rerun] = fixed.run_requests
        assert rerun.tags["study/reason"] == "fixed after a failed run"
        assert rerun.run_key != first.run_requests[0].run_key  # a new key: Dagster launches it

        # once the set has run fine, fixing a typo back to that version runs nothing
        for key in ("prompt_set", "inference_run"):
            instance.report_runless_asset_event(dg.AssetMaterialization(key, partition="alpha"))
        path.write_text(good.replace("targets:", "targetz:"))
        broken_again = evaluate(instance, folder, fixed.cursor)
        path.write_text(good)
        quiet = evaluate(instance, folder, broken_again.cursor)
        assert not quiet.run_requests


def test_a_broken_file_run_fails_with_its_lines(tmp_path, db_url):
    folder = tmp_path / "sets"
    (folder).mkdir()
    (folder / "broken.yaml").write_text("name: broken\nprompts: nope\ntargets: []\n")
    resources = make_resources(db_url, folder)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("prompt_sets", ["broken"])
        result = dg.materialize([*defs.assets, *defs.asset_checks], selection=["prompt_set"],
                                resources=resources, instance=instance, partition_key="broken",
                                raise_on_error=False)  # fmt: skip
        assert not result.success
        statuses = instance.get_status_by_partition(
            dg.AssetKey("prompt_set"), ["broken"], PROMPT_SETS
        )
        assert statuses["broken"] == dg.AssetPartitionStatus.FAILED  # red where users look
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    lines = str(failure.event_specific_data.error.message).splitlines()
    assert any(line.endswith("broken.yaml:2: prompts: Input should be a valid list (got 'nope')")
               for line in lines)  # fmt: skip
    assert any("broken.yaml:3: targets" in line for line in lines)


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
