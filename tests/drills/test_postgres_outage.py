"""The app's PostgreSQL stops in the middle of a 500-call run (while the fake server holds calls
in flight): the run fails with a clear database error; once the server is back, re-execution
from failure completes the run without sending captured successes again."""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter

import dagster as dg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from study_query_dagster.db import DatabaseConnection, normalize_url
from tests.support.drills import (
    ScriptedFaults,
    call_key,
    drill_prompt_set,
    request_key,
    run_calls,
    step_failure,
    study_job_env,
)
from tests.support.pipeline import reconstructable_study_job, write_prompt_set

STOP_AFTER = 150  # requests seen by the fake server


@pytest.fixture
def own_postgres():
    """A PostgreSQL server of this test's own (the session's is shared by other tests)."""
    import pgserver

    with tempfile.TemporaryDirectory(prefix="sqd-pg-outage-") as pgdata:
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
        try:
            yield server
        finally:
            server.cleanup()


def stop(server) -> None:
    from pgserver._commands import pg_ctl

    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


def start(server) -> None:
    with server._lock:
        server.ensure_postgres_running()


def create_app_database(server) -> str:
    admin = normalize_url(server.get_uri())
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text('CREATE DATABASE "study"'))
    engine.dispose()
    url = admin.set(database="study")
    db = DatabaseConnection(url)
    db.init_db()
    db.dispose()
    return url.render_as_string(hide_password=False)


@pytest.mark.slow
def test_database_outage_fails_the_run_clearly_and_reexecution_completes_it(
    own_postgres, prompt_dir, llm_server, monkeypatch
):
    db_url = create_app_database(own_postgres)
    uri = own_postgres.get_uri()
    write_prompt_set(prompt_dir, "outage", drill_prompt_set("outage", 250))
    study_job_env(monkeypatch, db_url, prompt_dir, llm_server.url)
    faults = ScriptedFaults()
    stopped = threading.Event()

    def answer_after_the_outage(request):
        # Requests after the STOP_AFTER-th wait for the outage: calls are in flight when the
        # database goes away, and the run cannot finish first, however fast the machine.
        if llm_server.count("/chat/completions") >= STOP_AFTER:
            stopped.wait()
        return faults(request)

    llm_server.fault_fn = answer_after_the_outage

    def stop_mid_run():
        try:
            while llm_server.count("/chat/completions") < STOP_AFTER:
                time.sleep(0.01)
            stop(own_postgres)
        finally:
            stopped.set()  # never leave the server's threads waiting

    stopper = threading.Thread(target=stop_mid_run, daemon=True)
    stopper.start()
    job = reconstructable_study_job()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("prompt_sets", ["outage"])
        first = dg.execute_job(job, instance, tags={"dagster/partition": "outage"})
        stopper.join()
        assert not first.success
        message = step_failure(first, "inference_run.send_shard[shard_0]")
        # the calls held for the outage are recorded once released, maybe after the run ended
        llm_server.wait_until_idle()
        sent_before = len(llm_server.requests)
        assert STOP_AFTER <= sent_before < 500

        start(own_postgres)
        assert own_postgres.get_uri() == uri
        group = f"outage/{first.run_id}"
        before = {c.id: c for c in run_calls(db_url, group)}
        captured = {call_key(c) for c in before.values() if c.status == "success"}
        assert 0 < len(captured) < 500

        options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
        second = dg.execute_job(
            job, instance, reexecution_options=options, tags=first.dagster_run.tags
        )
        assert second.success, step_failure(second, "inference_run.send_shard[shard_0]")

    # A clear error: which database, what it said, what to do; not a driver traceback.
    where = make_url(db_url).render_as_string(hide_password=True)
    assert f"The app database ({where}) failed during the inference run: " in message
    assert "re-execute this run from failure" in message

    after = run_calls(db_url, group)
    by_id = {c.id: c for c in after}
    assert all(by_id[i].request_hash == c.request_hash for i, c in before.items())
    successes = Counter(call_key(c) for c in after if c.status == "success")
    assert len(successes) == 500 and set(successes.values()) == {1}
    resent = Counter(request_key(r) for r in llm_server.requests[sent_before:])
    assert set(resent) == set(successes) - captured and set(resent.values()) == {1}
