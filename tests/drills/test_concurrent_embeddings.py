"""Two runs of `response_embeddings`, in two processes started together, embed the answers of two
prompt sets whose answers overlap: the embedding cache keeps one entry per request hash, and both
runs find every answer embedded."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import dagster as dg
import pytest
from sqlalchemy import func, select

from study_query_dagster.db import DatabaseConnection, EmbeddingVector
from tests.support.deployment import ROOT
from tests.support.drills import study_job_env
from tests.support.pipeline import reconstructable_study_job, write_prompt_set

EMBED_MODEL = "text-embedding-3-small"
SETS = {"left": range(0, 60), "right": range(30, 90)}  # 30 answers in common


def overlapping_set(name: str, numbers: range) -> str:
    prompts = "\n".join(f'  - {{id: q{i}, text: "shared question {i}"}}' for i in numbers)
    return (
        f"name: {name}\nprompts:\n{prompts}\n"
        "targets:\n  - {provider: openai, model: gpt-4o-mini}\n"
        f"embed: {{provider: openai, model: {EMBED_MODEL}}}\n"
    )


def run_embeddings(name: str, env: dict, log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.run_study_job", name, "response_embeddings"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_concurrent_embedding_runs_leave_one_cache_entry_per_hash(
    db_url, prompt_dir, llm_server, tmp_path, monkeypatch
):
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name, numbers in SETS.items():
        write_prompt_set(prompt_dir, name, overlapping_set(name, numbers))
    # Small embedding batches interleave the two runs' API calls and writes.
    study_job_env(monkeypatch, db_url, prompt_dir, llm_server.url, {"batch_size": 8})
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("prompt_sets", list(SETS))
        for name in SETS:  # the answers to embed
            result = dg.execute_job(
                reconstructable_study_job(),
                instance,
                tags={"dagster/partition": name},
                asset_selection=[dg.AssetKey("prompt_set"), dg.AssetKey("inference_run")],
            )
            assert result.success
    assert llm_server.count("/embeddings") == 0

    # No embedding is answered until both runs have sent one. Each run's first call of the
    # model goes alone (it doubles as the deployment probe), so the first two calls come from
    # the two runs: both have looked up every answer before either stored a vector.
    llm_server.hold(until=lambda requests: len(requests) >= 2, match="/embeddings")
    go = tmp_path / "go"
    env = {**os.environ, "SQD_TEST_GO": str(go)}
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in SETS}
    runs = {name: run_embeddings(name, env, logs[name]) for name in SETS}
    while len(list(tmp_path.glob("go.ready-*"))) < len(SETS):
        for name, proc in runs.items():
            assert proc.poll() is None, (tmp_path / f"{name}.log").read_text()
        time.sleep(0.02)
    go.touch()
    while any(proc.poll() is None for proc in runs.values()):
        if any(proc.returncode not in (None, 0) for proc in runs.values()):
            llm_server.release()  # a failed run never sends: let the other one finish
        time.sleep(0.02)
    for name, proc in runs.items():
        logs[name].close()
        output = (tmp_path / f"{name}.log").read_text()
        assert proc.returncode == 0, output

    # The race happened: every answer of the overlap was sent for embedding by both runs.
    sent = Counter(
        text
        for r in llm_server.requests
        if r.path.endswith("/embeddings")
        for text in r.body["input"]
    )
    shared = {f"echo: shared question {i}" for i in range(30, 60)}
    assert all(sent[text] == 2 for text in shared), sent

    db = DatabaseConnection(db_url)
    with db.session_scope() as session:
        rows = session.scalar(select(func.count()).select_from(EmbeddingVector))
        hashes = session.scalar(select(func.count(func.distinct(EmbeddingVector.request_hash))))
        texts = set(session.scalars(select(EmbeddingVector.text)))
    db.dispose()
    assert rows == hashes == 90  # one cache entry per distinct answer, none twice
    assert texts == {f"echo: shared question {i}" for i in range(90)}

    with dg.DagsterInstance.get() as instance:
        embedding_runs = [
            r
            for r in instance.get_runs()
            if r.asset_selection == {dg.AssetKey("response_embeddings")}
        ]
        assert len(embedding_runs) == 2
        for run in embedding_runs:
            assert run.status == dg.DagsterRunStatus.SUCCESS
            checks = {
                record.event_log_entry.dagster_event.asset_check_evaluation_data.check_name: record.event_log_entry.dagster_event.asset_check_evaluation_data.passed
                for record in instance.get_records_for_run(
                    run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
                ).records
            }
            assert checks == {
                "every_response_embedded": True,
                "embedding_dimensions_consistent": True,
            }
