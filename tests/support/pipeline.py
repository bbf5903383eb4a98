"""Helpers for tests of the Dagster layer: resources pointed at test databases, a prompt set
folder, and the fake LLM server; and a reconstructable study job for re-execution tests."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import dagster as dg

from study_query_dagster.resources.database import DatabaseResource, LegacyDatabaseResource
from study_query_dagster.resources.embeddings import EmbeddingResource
from study_query_dagster.resources.exports import ExportsResource
from study_query_dagster.resources.prompt_sets import PromptSetsResource
from study_query_dagster.resources.providers import LLMProvidersResource, ProviderSettings

FAST_RETRIES = {"max_retries": 1, "initial_wait_s": 0.01, "max_wait_s": 0.05, "timeout_s": 5.0}


STUDY_ASSETS = dg.AssetSelection.assets("prompt_set", "inference_run", "response_embeddings")


def make_resources(
    db_url: str,
    prompt_dir: Path,
    llm_url: str | None = None,
    embedding_options: dict | None = None,
    *,
    legacy_url: str | None = None,
    exports_dir: Path | None = None,
    **llm_options,
):
    """Resources as definitions.py builds them, but for tests: `llm_url` is the fake server
    (the openai provider points at it, with a fake key); retries are quick.
    `embedding_options` are EmbeddingResource fields (e.g. batch_size)."""
    openai = (
        ProviderSettings(api_key="sk-test-fake", base_url=f"{llm_url}/v1")
        if llm_url
        else ProviderSettings()
    )
    azure = (
        ProviderSettings(api_key="az-test-fake", endpoint=llm_url)
        if llm_url
        else ProviderSettings()
    )
    llm = LLMProvidersResource(openai=openai, azure=azure, **{**FAST_RETRIES, **llm_options})
    return {
        "database": DatabaseResource(url=db_url),
        "prompt_sets": PromptSetsResource(directory=str(prompt_dir)),
        "llm": llm,
        "embedding": EmbeddingResource(llm=llm, **(embedding_options or {})),
        "legacy_database": LegacyDatabaseResource(url=legacy_url),
        "exports": ExportsResource(directory=str(exports_dir or prompt_dir.parent / "exports")),
    }


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
        os.environ["SQD_TEST_DB_URL"], Path(os.environ["SQD_TEST_PROMPT_DIR"]),
        os.environ.get("SQD_TEST_LLM_URL") or None,
        json.loads(os.environ.get("SQD_TEST_EMBEDDING_OPTIONS") or "{}"),
        **json.loads(os.environ.get("SQD_TEST_LLM_OPTIONS") or "{}"),
    )  # fmt: skip
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


# The executor config that runs the production job's steps in the run's own process.
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


def get_production_study_job():
    """`study_job` exactly as the code location defines it, with resources read from the
    environment now (definitions.py reads it once, at import)."""
    from study_query_dagster import definitions
    from study_query_dagster.jobs import study_job

    defs = dg.Definitions(
        assets=definitions.defs.assets,
        asset_checks=definitions.defs.asset_checks,
        jobs=[study_job],
        resources=definitions.build_resources(),
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
