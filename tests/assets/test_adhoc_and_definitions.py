"""The ad-hoc prompt job from launchpad-style config, and the code location as Dagster loads it."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

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
        "group_type": "experiment",
        "group_name": "wetness",
        "role": "probe",
        "position": 7,
    }
    result = run_adhoc(resources, config)
    assert result.success
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    meta = output.event_specific_data.metadata
    assert meta["answer"].value == "echo: Is water wet?"
    assert llm_server.requests[-1].body["temperature"] == 0.0

    db = DatabaseConnection(db_url)
    with db.session_scope() as session:
        repo = GroupRepository(session)
        group = repo.find_group("experiment", "wetness")
        [member] = repo.get_group_members(group.id)
        assert (member.call_id, member.position, member.role) == (
            meta["raw_call_id"].value,
            7,
            "probe",
        )
        assert member.call.response_json["text"] == "echo: Is water wet?"
    db.dispose()


def test_adhoc_messages_and_failures(db_url, tmp_path, llm_server):
    resources = make_resources(db_url, tmp_path, llm_server.url)
    chat = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
    }
    assert run_adhoc(resources, chat).success
    assert llm_server.requests[-1].body["messages"][0]["content"] == "Be brief."

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
