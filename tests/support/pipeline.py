"""Helpers for tests of the Dagster layer: resources pointed at test databases, a prompt set
folder, and the fake LLM server; and a reconstructable study job for re-execution tests."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import dagster as dg

from study_query_dagster.config import Settings
from study_query_dagster.resources import build_resources

FAST_RETRIES = {"max_retries": 1, "initial_wait_s": 0.01, "max_wait_s": 0.05, "timeout_s": 5.0}


STUDY_ASSETS = dg.AssetSelection.assets("prompt_set", "inference_run", "response_embeddings")


class SettingsForTest(Settings):
    """Settings from the values given only: neither the environment nor `.env`, so a
    developer's keys never reach a test (nor a test's requests the internet)."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **_sources):
        return (init_settings,)


def make_resources(
    db_url: str,
    prompt_dir: Path,
    llm_url: str | None = None,
    embedding_options: dict | None = None,
    *,
    legacy_url: str | None = None,
    exports_dir: Path | None = None,
    reports_dir: Path | None = None,
    **llm_options,
):
    """The code location's resources (`build_resources`), from test settings: `llm_url` is the
    fake server (openai and azure point at it, with fake keys); retries are quick.
    `embedding_options` are EmbeddingResource fields (e.g. batch_size)."""
    values = {
        "DATABASE_URL": db_url,
        "LEGACY_DATABASE_URL": legacy_url,
        "PROMPT_SETS_DIR": prompt_dir,
        "EXPORTS_DIR": exports_dir or prompt_dir.parent / "exports",
        "REPORTS_DIR": reports_dir or prompt_dir.parent / "reports",
    }
    if llm_url:
        values.update(
            OPENAI_API_KEY="sk-test-fake",
            OPENAI_BASE_URL=f"{llm_url}/v1",
            AZURE_OPENAI_API_KEY="az-test-fake",
            AZURE_OPENAI_ENDPOINT=llm_url,
        )
    return build_resources(
        SettingsForTest(**values),
        llm={**FAST_RETRIES, **llm_options},
        embedding=embedding_options,
    )


def write_prompt_set(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(body).lstrip())
    return path


def no_stale_state_storage():
    """Resolve a job outside any instance's "defs state storage": Dagster keeps the current one
    in a context variable that an instance sometimes leaves set after it closed (seen after
    sensor-context tests), and building a repository then fails with "Attempted to resolve
    undefined DagsterInstance weakref"."""
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    return set_defs_state_storage(None)


def study_assets_and_checks():
    from study_query_dagster import definitions

    return [*definitions.defs.assets, *definitions.defs.asset_checks]


def get_study_job():
    """The study job with test resources from the environment (for dg.reconstructable):
    SQD_TEST_DB_URL, SQD_TEST_PROMPT_DIR, SQD_TEST_LLM_URL and, optionally,
    SQD_TEST_LLM_OPTIONS and SQD_TEST_EMBEDDING_OPTIONS (JSON: fields of LLMProvidersResource,
    such as max_retries or timeout_s, and of EmbeddingResource)."""
    from study_query_dagster.definitions import defs

    resources = make_resources(
        os.environ["SQD_TEST_DB_URL"],
        Path(os.environ["SQD_TEST_PROMPT_DIR"]),
        os.environ.get("SQD_TEST_LLM_URL") or None,
        json.loads(os.environ.get("SQD_TEST_EMBEDDING_OPTIONS") or "{}"),
        **json.loads(os.environ.get("SQD_TEST_LLM_OPTIONS") or "{}"),
    )
    test_defs = dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=[
            dg.define_asset_job(
                "study_job",
                selection=STUDY_ASSETS,
                executor_def=dg.in_process_executor,
            )
        ],
        resources=resources,
    )
    with no_stale_state_storage():
        return test_defs.resolve_job_def("study_job")


def reconstructable_study_job():
    """`dg.reconstructable(get_study_job)`, rebuilt from the current environment. Dagster keeps
    the last reconstructed job per process (an lru_cache keyed by the pointer, which is the same
    for every test): without the reset, a run in this process would get the resources (the
    database URL!) of whichever test reconstructed it first."""
    job = dg.reconstructable(get_study_job)
    type(job).get_definition.cache_clear()
    type(job).get_repository_definition.cache_clear()
    return job


# The run config that runs the production job's steps in the run's own process: none, as
# study_job's executor is the in-process one (STUDY_JOB_EXECUTOR's default).
IN_PROCESS: dict = {}


def get_production_study_job():
    """`study_job` exactly as the code location defines it, with resources built from the
    environment as it is now (definitions.py reads it once, at import)."""
    from study_query_dagster import definitions
    from study_query_dagster.jobs import study_job

    defs = dg.Definitions(
        assets=definitions.defs.assets,
        asset_checks=definitions.defs.asset_checks,
        jobs=[study_job],
        resources=build_resources(Settings()),
    )
    with no_stale_state_storage():
        return defs.resolve_job_def("study_job")


def reconstructable_production_study_job():
    """`dg.reconstructable(get_production_study_job)`, rebuilt from the current environment
    (see `reconstructable_study_job`)."""
    job = dg.reconstructable(get_production_study_job)
    type(job).get_definition.cache_clear()
    type(job).get_repository_definition.cache_clear()
    return job
