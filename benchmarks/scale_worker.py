"""One measured process of `bench_scale`: a run worker executing `study_job` in process for one
prompt set, or the same requests through `InferenceService.run_batch` alone.

    python -m benchmarks.scale_worker study|batch PROMPT_DIR SET_NAME DB_URL BASE_URL DAGSTER_HOME

Prints one JSON line: seconds, calls that succeeded and this process's peak resident memory
(VmHWM, bytes).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import dagster as dg

from study_query_dagster import definitions
from study_query_dagster.services.prompt_sets import load_prompt_set
from study_query_dagster.services.runs import call_model

from .support import bench_resources

CONCURRENCY = 64


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def resources(db_url: str, prompt_dir: Path, base_url: str) -> dict:
    return bench_resources(
        db_url, prompt_dir, base_url, concurrency=CONCURRENCY, embedder="offline"
    )


def through_study_job(prompt_dir: Path, name: str, db_url: str, base_url: str, home: str):
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
        resources=resources(db_url, prompt_dir, base_url),
    )
    job = defs.resolve_job_def("study_job")
    with dg.DagsterInstance.from_config(home) as instance:
        instance.add_dynamic_partitions("prompt_sets", [name])
        started = time.perf_counter()
        result = job.execute_in_process(
            instance=instance,
            partition_key=name,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
        elapsed = time.perf_counter() - started
    assert result.success
    run = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.path == ["inference_run"]
    )
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert all(checks.values()), checks
    return elapsed, run["successes"].value


def through_run_batch(prompt_dir: Path, name: str, db_url: str, base_url: str):
    ps = load_prompt_set(prompt_dir / f"{name}.yaml").prompt_set
    res = resources(db_url, prompt_dir, base_url)
    db = res["database"].get_connection()
    first = next(ps.iter_work_items())
    service = res["llm"].create_service("openai", call_model(first), db)

    async def run() -> tuple[float, int]:
        items = [
            {
                "messages": i.messages,
                "sample_index": i.sample_index,
                "params": i.params,
                "extra_metadata": {"item_key": i.key},
            }
            for i in ps.iter_work_items()
        ]
        started = time.perf_counter()
        async with service:
            results = await service.run_batch(items, group_type="run", group_name=f"{name}/batch")
        return time.perf_counter() - started, sum(r["status"] == "success" for r in results)

    return asyncio.run(run())


def main(mode: str, prompt_dir: str, name: str, db_url: str, base_url: str, home: str) -> None:
    if mode == "study":
        elapsed, calls = through_study_job(Path(prompt_dir), name, db_url, base_url, home)
    else:
        elapsed, calls = through_run_batch(Path(prompt_dir), name, db_url, base_url)
    print(json.dumps({"seconds": elapsed, "calls": calls, "peak_rss": peak_rss()}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:7])
