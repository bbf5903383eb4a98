"""The scale-out path: study_job with STUDY_JOB_EXECUTOR=celery, its steps taken by two Celery
workers (separate processes, Redis as the broker, configured by deploy/celery.yaml), four
prompt-set runs launched at once, each split into two shards, one provider quota shared by all
of them through the app database.

Everything is a real process started and stopped here: Redis, the two workers, the four run
processes; the fake LLM server answers on 127.0.0.1. The server holds its answers until calls of
two different shards have arrived: a worker runs one step at a time, so that can only happen
when both workers run shards at once. The assertions are counts: which workers ran steps, how
many calls each run captured, how many were in flight at once, how many 429s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from sqlalchemy import func, select

from study_query_dagster.db import DatabaseConnection, Group, GroupMember, RawCall
from tests.support.celery_workers import BIN, REDIS_SERVER, celery_workers, redis_server
from tests.support.deployment import DEPLOY_DIR, ROOT
from tests.support.fake_llm_server import Quota
from tests.support.pipeline import write_prompt_set
from tests.support.processes import HANG_GUARD_S

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        REDIS_SERVER is None,
        reason="redis-server is not installed (`make test` installs Debian's where it can: "
        "as root with apt-get)",
    ),
]

SETS = ["alpha", "beta", "gamma", "delta"]
CONCURRENCY = 4  # OPENAI_MAX_CONCURRENCY: for the sum of every run and worker
SET = """
name: {name}
prompts:
  - {{id: first, text: "{name}: the first question"}}
  - {{id: second, text: "{name}: the second question"}}
targets:
  - {{provider: openai, model: gpt-4o-mini}}
samples: 2
shards: 2
embed: {{provider: offline}}
"""


def environment(tmp_path: Path, db_url: str, llm_url: str, broker: str) -> dict[str, str]:
    """What every worker and run process gets: the production settings, by variable."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
        DATABASE_URL=db_url,
        PROMPT_SETS_DIR=str(tmp_path / "sets"),
        EXPORTS_DIR=str(tmp_path / "exports"),
        OPENAI_API_KEY="sk-test-fake",
        OPENAI_BASE_URL=f"{llm_url}/v1",
        OPENAI_MAX_CONCURRENCY=str(CONCURRENCY),
        LLM_MAX_RETRY_AFTER_S="5",
        EMBEDDING_PROVIDER="offline",
        STUDY_JOB_EXECUTOR="celery",
        CELERY_BROKER_URL=f"{broker}/0",
        CELERY_BACKEND_URL=f"{broker}/1",
        SQD_TEST_PRODUCTION="1",
        SQD_TEST_GO=str(tmp_path / "go"),
    )
    return env


def launch_runs(env: dict[str, str], cwd: Path) -> list[subprocess.Popen]:
    """One run process per prompt set, all released at once."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.run_study_job", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        for name in SETS
    ]
    go = Path(env["SQD_TEST_GO"])
    while len(list(go.parent.glob(f"{go.name}.ready-*"))) < len(procs):
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read())
    go.touch()
    return procs


def test_four_runs_spread_over_two_celery_workers(tmp_path, llm_server):
    for name in SETS:
        write_prompt_set(tmp_path / "sets", name, SET.format(name=name))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump({"telemetry": {"enabled": False}}))
    with dg.DagsterInstance.from_config(str(home)):
        pass  # its storage made once, not by every process at once
    db_url = f"sqlite:///{tmp_path / 'app.db'}"
    DatabaseConnection(db_url).init_db()
    llm_server.quota = quota = Quota(requests=CONCURRENCY, window_s=0.5)
    # Answer nothing until calls of two shards (each shard is one prompt) are in: both workers
    # must then be running a shard at once.
    llm_server.hold(
        lambda received: len({r.body["messages"][-1]["content"] for r in received}) >= 2,
        match="chat",
    )
    logs = tmp_path / "logs"
    logs.mkdir()

    with redis_server(tmp_path) as broker:
        env = environment(tmp_path, db_url, llm_server.url, broker)
        config = DEPLOY_DIR / "celery.yaml"
        with celery_workers(["w1", "w2"], config, env, tmp_path, logs) as nodes:
            procs = launch_runs(env, tmp_path)
            outputs = []
            try:
                for proc in procs:
                    outputs.append(proc.communicate(timeout=HANG_GUARD_S)[0])
            finally:
                for proc in procs:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
            failed = [out for proc, out in zip(procs, outputs, strict=True) if proc.returncode]
            worker_logs = "\n".join(p.read_text()[-3000:] for p in sorted(logs.iterdir()))
            assert not failed, "\n".join(o[-4000:] for o in failed) + worker_logs

    run_ids = [out.strip().splitlines()[-1] for out in outputs]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        ran_on: set[str] = set()
        for run_id in run_ids:
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
            steps = {
                record.dagster_event.step_key: record.dagster_event.engine_event_data.metadata[
                    "Celery worker"
                ].value
                for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
                if record.dagster_event.step_key
                and "Celery worker" in record.dagster_event.engine_event_data.metadata
            }
            # every step went through Celery, the two shards as steps of their own
            assert {
                "inference_run.send_shard[shard_0]",
                "inference_run.send_shard[shard_1]",
            } <= set(steps)
            assert "response_embeddings" in steps
            ran_on.update(steps.values())
    assert ran_on == set(nodes)  # both workers ran steps

    db = DatabaseConnection(db_url)
    with db.session_scope() as session:
        for name, run_id in zip(SETS, run_ids, strict=True):
            group_id = session.scalar(
                select(Group.id).where(Group.group_type == "run", Group.name == f"{name}/{run_id}")
            )
            calls = (
                select(RawCall.request_hash, RawCall.status, func.count())
                .join(GroupMember, GroupMember.call_id == RawCall.id)
                .where(GroupMember.group_id == group_id, RawCall.modality == "text")
                .group_by(RawCall.request_hash, RawCall.status)
            )
            rows = session.execute(calls).all()
            # 2 prompts x 2 samples, each captured once, each a success
            assert sorted(count for _, _, count in rows) == [1, 1, 1, 1]
            assert {status for _, status, _ in rows} == {"success"}
    db.dispose()

    answered = llm_server.count("chat/completions", succeeded=True)
    assert answered == 4 * len(SETS)  # no call sent twice
    assert llm_server.max_in_flight <= CONCURRENCY  # the shared limit held across workers
    assert quota.refused <= 3 * (quota.window + 1)
