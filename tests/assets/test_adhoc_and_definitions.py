"""The ad-hoc prompt job from launchpad-style config, and the code location as Dagster loads it."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from study_query_dagster.db import DatabaseConnection, GroupRepository, RawCallRepository
from study_query_dagster.definitions import defs
from study_query_dagster.jobs import adhoc_prompt_job
from tests.support.pipeline import make_resources

ROOT = Path(__file__).resolve().parents[2]


def run_adhoc(resources, config):
    job = dg.Definitions(jobs=[adhoc_prompt_job], resources=resources)
    return job.resolve_job_def("adhoc_prompt_job").execute_in_process(
        run_config={"ops": {"adhoc_prompt": {"config": config}}}, raise_on_error=False
    )


def test_adhoc_prompt_is_captured_grouped_and_shown(db_url, tmp_path, llm_server):
    resources = make_resources(db_url, tmp_path, llm_server.url)
    config = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "prompt": "Is water wet?",
        "temperature": 0.0,
        "group": {"type": "experiment", "name": "wetness", "role": "probe", "position": 7},
    }
    result = run_adhoc(resources, config)
    assert result.success
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    meta = output.event_specific_data.metadata
    assert meta["answer"].value == "echo: Is water wet?"
    call_id = int(meta["raw_call_id"].value)  # an id: text, not offered as a plot
    assert llm_server.requests[-1].body["temperature"] == 0.0

    db = DatabaseConnection(db_url)
    with db.session_scope() as session:
        repo = GroupRepository(session)
        group = repo.find_group("experiment", "wetness")
        [member] = repo.get_group_members(group.id)
        assert (member.call_id, member.position, member.role) == (call_id, 7, "probe")
        assert member.call.response_json["text"] == "echo: Is water wet?"
    db.dispose()


def test_adhoc_messages_and_failures(db_url, tmp_path, llm_server):
    resources = make_resources(db_url, tmp_path, llm_server.url)
    chat = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "system": "Be brief.",
        "history": [
            {"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": "Hello Ada."},
        ],
        "prompt": "What is my name?",
    }
    assert run_adhoc(resources, chat).success
    assert [(m["role"], m["content"]) for m in llm_server.requests[-1].body["messages"]] == [
        ("system", "Be brief."),
        ("user", "My name is Ada."),
        ("assistant", "Hello Ada."),
        ("user", "What is my name?"),
    ]

    llm_server.unknown_models = {"ghost"}
    failed = run_adhoc(resources, {"provider": "openai", "model": "ghost", "prompt": "x"})
    assert not failed.success
    db = DatabaseConnection(db_url)
    with db.session_scope() as session:
        statuses = [c.status for c in RawCallRepository(session).query_raw_calls()]
    db.dispose()
    assert statuses == ["failed", "success"]  # the failure is captured too

    unconfigured = run_adhoc(
        make_resources(db_url, tmp_path), {"provider": "openai", "prompt": "x"}
    )
    error = next(e for e in unconfigured.all_events if e.event_type_value == "STEP_FAILURE")
    assert "set OPENAI_API_KEY" in str(error.event_specific_data.error)


def test_adhoc_launchpad_default_works_and_the_schema_flags_a_missing_prompt(db_url, tmp_path):
    resources = make_resources(db_url, tmp_path)
    job = dg.Definitions(jobs=[adhoc_prompt_job], resources=resources).resolve_job_def(
        "adhoc_prompt_job"
    )
    # the launchpad opens with the job's default config: a call that works offline as it is
    result = job.execute_in_process()
    assert result.success
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    assert "What is the capital of Peru?" in output.event_specific_data.metadata["answer"].value

    # without a prompt (or with an unknown provider) the config itself is invalid: the
    # launchpad says so before launch, and nothing runs
    for config, wanted in (
        ({"provider": "offline"}, 'Missing required config entry "prompt"'),
        ({"provider": "anthropic", "prompt": "x"}, "provider not in enum"),
        ({"prompt": "x", "group": {"type": "experiment"}}, 'Missing required config entry "name"'),
    ):
        with pytest.raises(dg.DagsterInvalidConfigError, match=wanted):
            dg.validate_run_config(adhoc_prompt_job, {"ops": {"adhoc_prompt": {"config": config}}})


def test_definitions_validate_with_the_cli():
    dagster = Path(sys.executable).with_name("dagster")
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}  # a temporary instance
    done = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Validation successful" in done.stdout + done.stderr


def load_code_location(env: dict[str, str]) -> subprocess.CompletedProcess:
    """Import the code location in a fresh process with `env`; print its llm resource's limits."""
    script = (
        "from study_query_dagster.definitions import defs\n"
        "llm = defs.resources['llm']\n"
        "print(llm.openai.max_concurrency, llm.openai.requests_per_minute,"
        " llm.openai.tokens_per_minute, llm.azure.max_concurrency,"
        " llm.hyperbolic.requests_per_minute, llm.timeout_s)\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AZURE_", "LLM_"))}
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
    )


def test_provider_limits_and_timeout_come_from_the_environment():
    done = load_code_location(
        {
            "OPENAI_MAX_CONCURRENCY": "3",
            "OPENAI_REQUESTS_PER_MINUTE": "120",
            "OPENAI_TOKENS_PER_MINUTE": "40000",
            "HYPERBOLIC_REQUESTS_PER_MINUTE": "30",
            "LLM_TIMEOUT_S": "7.5",
        }
    )
    assert done.returncode == 0, done.stderr
    # azure keeps the default
    assert done.stdout.split() == ["3", "120", "40000", "16", "30", "7.5"]


def test_a_bad_setting_stops_the_code_location_naming_the_variable():
    # One path for every variable: the timeout is validated like the limits.
    bad = load_code_location({"OPENAI_MAX_CONCURRENCY": "lots", "LLM_TIMEOUT_S": "-1"})
    assert bad.returncode != 0
    assert "OPENAI_MAX_CONCURRENCY" in bad.stderr and "valid integer" in bad.stderr
    assert "LLM_TIMEOUT_S" in bad.stderr and "greater than 0" in bad.stderr


def test_asset_graph_shape():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"prompt_set", "inference_run", "response_embeddings"} <= keys
    assert graph.get(dg.AssetKey("response_embeddings")).parent_keys == {
        dg.AssetKey("inference_run")
    }
    assert graph.get(dg.AssetKey("inference_run")).parent_keys == {dg.AssetKey("prompt_set")}
    checks = {c.name for c in defs.resolve_asset_graph().asset_check_keys}
    assert {
        "prompt_set_is_valid",
        "every_request_captured",
        "failure_rate",
        "raw_calls_are_immutable",
        "every_response_embedded",
        "embedding_dimensions_consistent",
    } <= checks


def test_the_code_location_holds_exactly_these_definitions():
    # Assets and checks are discovered from the assets package: a helper left at module scope, or
    # a module that stops being imported, would change this inventory.
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {
        "prompt_set",
        "inference_run",
        "response_embeddings",
        "study_results",
        "provider_comparison",
        "usage_time_series",
        "study_summary",
        "recent_calls",
        "legacy_inference_runs",
        "migrated_raw_calls",
        "answer_equivalence_classes",
        "sample_dispersion",
        "cross_target_agreement",
        "answer_drift",
        "uncertainty_calibration",
        "answer_clusters",
    }
    assert {f"{c.asset_key.to_user_string()}:{c.name}" for c in graph.asset_check_keys} == {
        "prompt_set:prompt_set_is_valid",
        "inference_run:every_request_captured",
        "inference_run:failure_rate",
        "inference_run:raw_calls_are_immutable",
        "response_embeddings:every_response_embedded",
        "response_embeddings:embedding_dimensions_consistent",
        "migrated_raw_calls:row_counts_match",
        "migrated_raw_calls:batch_sizes_match",
        "migrated_raw_calls:batch_order_matches",
        "migrated_raw_calls:timestamps_match",
        "migrated_raw_calls:sample_parity",
        "migrated_raw_calls:no_rows_quarantined",
        "answer_equivalence_classes:every_answer_in_one_class",
        "sample_dispersion:dispersion_in_bounds",
        "sample_dispersion:deterministic_targets_stable",
        "sample_dispersion:enough_samples_for_entropy",
        "cross_target_agreement:targets_agree_on_modal_answer",
        "answer_drift:no_significant_drift",
        "uncertainty_calibration:calibration_has_both_classes",
    }
    repository = defs.get_repository_def()
    assert {j.name for j in repository.get_all_jobs()} - {"__ASSET_JOB"} == {
        "study_job",
        "variation_job",
        "results_job",
        "adhoc_prompt_job",
        "migration_job",
        "analytics_job",
        "prompt_search_job",
    }
    assert {s.name for s in repository.sensor_defs} == {
        "prompt_set_sensor",
        "legacy_database_sensor",
        "record_failed_runs",
        "analytics_automation",
        "variation_automation",
        "analytics_after_migration",
    }
    assert {s.name for s in repository.schedule_defs} == {"daily_prompt_sets", "hourly_prompt_sets"}
