"""End to end through Dagster vs the same calls through `InferenceService.run_batch` alone.

A 1,000-call prompt set (1,000 prompts x one OpenAI target, embed off) is materialized by
`study_job` as the code location defines it — its selection (prompt_set -> inference_run ->
response_embeddings and study_results, with every asset check) and its executor — launched
with `dg.execute_job` as a run from the UI executes, against the fake server in its own process
(20 ms per request), concurrency 64. Baseline, in the same run, on the same databases and
server: the same 1,000 requests through `LLMProvidersResource.create_service(...).run_batch`
into a group, with nothing of Dagster. SQLite (Dagster instance and app DB) with the default
in-process executor, then the multiprocess executor (a process per step, as before), then
PostgreSQL (Dagster storage and app DB on one embedded server). Each side runs ROUNDS times,
alternating; the best run of each counts.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import yaml

from study_query_dagster import definitions
from study_query_dagster.cli import LOCAL_DAGSTER_YAML
from study_query_dagster.config import Settings
from study_query_dagster.jobs import study_job as defined_study_job
from study_query_dagster.jobs import study_job_executor
from study_query_dagster.services.prompt_sets import load_prompt_set
from study_query_dagster.services.runs import call_model

from .support import bench_resources, fake_server, ratio_line

N = 1000
CONCURRENCY = 64
LATENCY_S = 0.020
ROUNDS = 3
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
    return bench_resources(db_url, prompt_dir, base_url, concurrency=CONCURRENCY)


def bench_study_job() -> dg.JobDefinition:
    """`study_job` with the bench's resources and the executor named in the environment (for
    `dg.reconstructable`: a multiprocess step process rebuilds it from there)."""
    resources = make_resources(
        os.environ["SQD_BENCH_DB_URL"],
        Path(os.environ["SQD_BENCH_PROMPT_DIR"]),
        os.environ["SQD_BENCH_BASE_URL"],
    )
    job = dg.define_asset_job(
        "study_job",
        selection=defined_study_job.selection,
        executor_def=study_job_executor(
            Settings(study_job_executor=os.environ["SQD_BENCH_EXECUTOR"])
        ),
    )
    defs = dg.Definitions(
        assets=definitions.defs.assets,
        asset_checks=definitions.defs.asset_checks,
        jobs=[job],
        resources=resources,
    )
    return defs.resolve_job_def("study_job")


def reconstructable_job(db_url: str, prompt_dir: Path, base_url: str, executor: str):
    os.environ.update(
        SQD_BENCH_DB_URL=db_url, SQD_BENCH_PROMPT_DIR=str(prompt_dir),
        SQD_BENCH_BASE_URL=base_url, SQD_BENCH_EXECUTOR=executor,
    )  # fmt: skip
    job = dg.reconstructable(bench_study_job)
    # Dagster caches the reconstructed job per pointer: rebuild it from this environment
    type(job).get_definition.cache_clear()
    type(job).get_repository_definition.cache_clear()
    return job


@contextmanager
def instance(storage: dict | None) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance in a temporary DAGSTER_HOME, configured as `make run` configures its
    own (cli.LOCAL_DAGSTER_YAML: our loggers shown in the UI, pools, run monitoring): SQLite
    storage, or `storage`."""
    with tempfile.TemporaryDirectory(prefix="sqd-bench-home-") as home:
        config = yaml.safe_load(LOCAL_DAGSTER_YAML)
        if storage:
            config["storage"] = storage
        (Path(home) / "dagster.yaml").write_text(yaml.safe_dump(config))
        with dg.DagsterInstance.from_config(home) as inst:
            inst.add_dynamic_partitions("prompt_sets", [SET_NAME])
            yield inst


QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def through_dagster(job, inst: dg.DagsterInstance) -> float:
    """One run of the job, as the run launcher would execute it (executor included)."""
    started = time.perf_counter()
    with dg.execute_job(
        job, instance=inst, tags={"dagster/partition": SET_NAME}, run_config=QUIET
    ) as result:
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


def measure(
    label: str, db_url: str, storage: dict | None, base_url: str, executor: str = "in_process",
    rounds: int = ROUNDS,
) -> Iterator[str]:  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="sqd-bench-sets-") as folder:
        prompt_path = write_prompt_set(Path(folder))
        resources = make_resources(db_url, Path(folder), base_url)
        job = reconstructable_job(db_url, Path(folder), base_url, executor)
        dagster_times, batch_times = [], []
        with instance(storage) as inst:
            through_run_batch(resources, prompt_path, -1)  # warm-up: connections, imports
            for round_number in range(rounds):
                dagster_times.append(through_dagster(job, inst))
                batch_times.append(through_run_batch(resources, prompt_path, round_number))
    ours, baseline = min(dagster_times), min(batch_times)
    yield ratio_line(
        f"study_job ({executor} executor) {N:,} calls @ {LATENCY_S * 1000:.0f} ms, "
        f"concurrency {CONCURRENCY}, {label}",
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
        with tempfile.TemporaryDirectory(prefix="sqd-bench-app-") as tmp:
            sqlite_url = f"sqlite:///{Path(tmp) / 'app.db'}"
            # a process per step, as study_job ran before: one round is enough to see it
            yield from measure(
                "SQLite instance + app DB", sqlite_url, None, base_url, "multiprocess", rounds=1
            )
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
