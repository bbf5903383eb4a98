"""End to end through Dagster vs the same calls through `InferenceService.run_batch` alone.

A 1,000-call prompt set (1,000 prompts x one OpenAI target, embed off) is materialized by
`study_job` in process (prompt_set -> inference_run -> response_embeddings, with every asset
check) against the fake server in its own process (20 ms per request), concurrency 64. Baseline,
in the same run, on the same databases and server: the same 1,000 requests through
`LLMProvidersResource.create_service(...).run_batch` into a group, with nothing of Dagster.
Twice: SQLite (Dagster instance and app DB), then PostgreSQL (Dagster storage and app DB on
one embedded server). Each side runs twice, alternating; the best run of each counts.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import yaml

from study_query_dagster import definitions
from study_query_dagster.resources.database import DatabaseResource, LegacyDatabaseResource
from study_query_dagster.resources.embeddings import EmbeddingResource
from study_query_dagster.resources.exports import ExportsResource
from study_query_dagster.resources.prompt_sets import PromptSetsResource
from study_query_dagster.resources.providers import LLMProvidersResource, ProviderSettings
from study_query_dagster.services.prompt_sets import load_prompt_set
from study_query_dagster.services.runs import call_model

from .bench_inference import fake_server
from .support import ratio_line

N = 1000
CONCURRENCY = 64
LATENCY_S = 0.020
ROUNDS = 2
SET_NAME = "bench"


def write_prompt_set(folder: Path) -> Path:
    path = folder / f"{SET_NAME}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": SET_NAME,
                "prompts": [
                    {"id": f"q{i}", "text": f"question {i}: what is {i} + {i}?"} for i in range(N)
                ],  # fmt: skip
                "targets": [{"provider": "openai", "model": "gpt-4o-mini"}],
                "embed": "off",
            },
            sort_keys=False,
        )
    )
    return path


def make_resources(db_url: str, prompt_dir: Path, base_url: str) -> dict:
    llm = LLMProvidersResource(
        openai=ProviderSettings(
            api_key="sk-bench", base_url=base_url, max_concurrency=CONCURRENCY
        ),  # fmt: skip
        timeout_s=60,
    )
    return {
        "database": DatabaseResource(url=db_url),
        "prompt_sets": PromptSetsResource(directory=str(prompt_dir)),
        "llm": llm,
        "embedding": EmbeddingResource(llm=llm),
        "legacy_database": LegacyDatabaseResource(url=None),
        "exports": ExportsResource(directory=str(prompt_dir.parent / "exports")),
    }


def study_job(resources: dict) -> dg.JobDefinition:
    defs = dg.Definitions(
        assets=definitions.defs.assets,
        asset_checks=definitions.defs.asset_checks,
        jobs=[
            dg.define_asset_job(
                "study_job",
                selection=dg.AssetSelection.assets(
                    "prompt_set", "inference_run", "response_embeddings"
                ),
                executor_def=dg.in_process_executor,
            )
        ],
        resources=resources,
    )
    return defs.resolve_job_def("study_job")


@contextmanager
def instance(storage: dict | None) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance in a temporary DAGSTER_HOME: SQLite storage, or `storage`."""
    with tempfile.TemporaryDirectory(prefix="sqd-bench-home-") as home:
        config = {"telemetry": {"enabled": False}}
        if storage:
            config["storage"] = storage
        (Path(home) / "dagster.yaml").write_text(yaml.safe_dump(config))
        with dg.DagsterInstance.from_config(home) as inst:
            inst.add_dynamic_partitions("prompt_sets", [SET_NAME])
            yield inst


def through_dagster(job: dg.JobDefinition, inst: dg.DagsterInstance) -> float:
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=inst, partition_key=SET_NAME,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    assert result.success
    run = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.path == ["inference_run"]
    )
    assert run["successes"].value == N, run["successes"]
    return elapsed


def through_run_batch(resources: dict, prompt_path: Path, round_number: int) -> float:
    """The same requests as inference_run sends, through the service alone."""
    items = load_prompt_set(prompt_path).prompt_set.work_items()
    db = resources["database"].get_connection()
    service = resources["llm"].create_service("openai", call_model(items[0]), db)

    async def run() -> float:
        started = time.perf_counter()
        async with service:
            results = await service.run_batch(
                [{"messages": i.messages, "sample_index": i.sample_index,
                  "extra_metadata": {"item_key": i.key}} for i in items],  # fmt: skip
                group_type="run", group_name=f"{SET_NAME}/baseline-{round_number}",
                **items[0].params,
            )  # fmt: skip
        elapsed = time.perf_counter() - started
        assert sum(r["status"] == "success" for r in results) == N
        return elapsed

    return asyncio.run(run())


def measure(label: str, db_url: str, storage: dict | None, base_url: str) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="sqd-bench-sets-") as folder:
        prompt_path = write_prompt_set(Path(folder))
        resources = make_resources(db_url, Path(folder), base_url)
        job = study_job(resources)
        dagster_times, batch_times = [], []
        with instance(storage) as inst:
            through_run_batch(resources, prompt_path, -1)  # warm-up: connections, imports
            for round_number in range(ROUNDS):
                dagster_times.append(through_dagster(job, inst))
                batch_times.append(through_run_batch(resources, prompt_path, round_number))
    ours, baseline = min(dagster_times), min(batch_times)
    yield ratio_line(
        f"study_job {N:,} calls @ {LATENCY_S * 1000:.0f} ms, concurrency {CONCURRENCY}, {label}",
        ours * 1000, baseline * 1000, "ms",
        f"({N / ours:,.0f} calls/s end to end vs {N / baseline:,.0f} calls/s through run_batch "
        f"alone; Dagster adds {(ours - baseline) * 1000:,.0f} ms per run)",
    )  # fmt: skip


def run():
    from tests.support.postgres import PostgresServer

    with fake_server(LATENCY_S) as base_url:
        with tempfile.TemporaryDirectory(prefix="sqd-bench-app-") as tmp:
            sqlite_url = f"sqlite:///{Path(tmp) / 'app.db'}"
            yield from measure("SQLite instance + app DB", sqlite_url, None, base_url)
        server = PostgresServer.start()
        try:
            app = server.create_database()
            storage = server.create_database(migrated=False)
            yield from measure(
                "PostgreSQL storage + app DB",
                app.render_as_string(hide_password=False),
                {"postgres": {"postgres_url": storage.render_as_string(hide_password=False)}},
                base_url,
            )
            from study_query_dagster.resources.database import dispose_shared_connections

            dispose_shared_connections()
            server.drop_database(app)
            server.drop_database(storage)
        finally:
            server.stop()
