"""The prompt set sensor and the schedules, evaluated with Dagster's own test contexts."""

import json
from datetime import datetime, timezone

import dagster as dg

from study_query_dagster.automation import daily_prompt_sets, hourly_prompt_sets, prompt_set_sensor
from study_query_dagster.definitions import defs
from study_query_dagster.resources.prompt_sets import PromptSetsResource
from tests.support.pipeline import write_prompt_set

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
        # new file: its partition is added and a run requested, keyed by name + content hash
        first = evaluate(instance, folder)
        assert [list(r.partition_keys) for r in first.dynamic_partitions_requests] == [["alpha"]]
        [run] = first.run_requests
        alpha_hash = json.loads(first.cursor)["alpha"]
        assert (run.partition_key, run.run_key) == ("alpha", f"alpha:{alpha_hash}")
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
        assert not changed.dynamic_partitions_requests

        # invalid: a skip reason naming the file, line and field; no partition, no run
        (folder / "broken.yaml").write_text(
            "name: broken\nprompts: []\ntargets:\n  - {provider: nope}\n"
        )
        invalid = evaluate(instance, folder, changed.cursor)
        assert not invalid.run_requests
        message = invalid.skip_reason.skip_message
        assert "broken.yaml:" in message and "targets[0].provider" in message
        assert instance.get_dynamic_partitions("prompt_sets") == ["alpha"]


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
