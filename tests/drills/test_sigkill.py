"""SIGKILL the process running a 500-call inference run, mark the run failed as run monitoring
would, and re-execute it from failure: no captured call is lost and no successful call is sent
again (counted at the server, per item)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import dagster as dg
import pytest

from tests.support.deployment import ROOT
from tests.support.drills import (
    ScriptedFaults,
    call_key,
    drill_prompt_set,
    request_key,
    run_calls,
    study_job_env,
)
from tests.support.fake_llm_server import FakeLLMServer, Fault
from tests.support.pipeline import reconstructable_study_job, write_prompt_set

CONCURRENCY = 16  # per target (the providers' default), two targets
# Calls whose answer a kill can lose: in flight, or answered and waiting for their commit. A
# batch has 2 x concurrency workers, each holding one call until its row is committed.
AT_RISK = 2 * 2 * CONCURRENCY
KILL_AFTER = 150  # requests seen by the server


@pytest.fixture
def again():
    """A second fake server, for the re-execution."""
    with FakeLLMServer() as server:
        yield server


@pytest.mark.slow
def test_sigkill_mid_run_then_reexecution_loses_nothing_and_repeats_nothing(
    db_url, prompt_dir, llm_server, again, tmp_path, monkeypatch
):
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    write_prompt_set(prompt_dir, "killed", drill_prompt_set("killed", 250))
    study_job_env(monkeypatch, db_url, prompt_dir, llm_server.url)
    faults = ScriptedFaults()  # no faults: only records who asked what

    def answer_until_the_kill(request):
        # Requests after the KILL_AFTER-th get no answer until their client hangs up: the kill
        # lands mid-run with calls in flight, however fast the machine.
        if llm_server.count("/chat/completions") >= KILL_AFTER:
            return Fault(kind="slow", hang_s=None)
        return faults(request)

    llm_server.fault_fn = answer_until_the_kill

    log = tmp_path / "run.log"
    with log.open("w") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.support.run_study_job", "killed"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        while llm_server.count("/chat/completions") < KILL_AFTER:
            assert child.poll() is None, f"the run ended before the kill:\n{log.read_text()}"
            time.sleep(0.01)
        os.killpg(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert KILL_AFTER <= len(llm_server.requests) < 500

    # The re-execution calls a server of its own: bytes the dead process had written may still
    # reach the first one (as a truncated request) at any later moment, and must not count.
    again.fault_fn = faults
    study_job_env(monkeypatch, db_url, prompt_dir, again.url)

    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.STARTED  # nobody lived to record the end
        instance.report_run_failed(run)  # what run monitoring does for a dead run worker
        group = f"killed/{run.run_id}"
        before = {c.id: c for c in run_calls(db_url, group)}
        captured = {call_key(c) for c in before.values() if c.status == "success"}
        assert before and all(c.status == "success" for c in before.values())
        assert len(before) < 500

        options = dg.ReexecutionOptions.from_failure(run.run_id, instance)
        second = dg.execute_job(
            reconstructable_study_job(), instance, reexecution_options=options,
            tags=instance.get_run_by_id(run.run_id).tags,
        )  # fmt: skip
        assert second.success

    # No captured call is lost: every row written before the kill is still there, unchanged.
    after = run_calls(db_url, group)
    by_id = {c.id: c for c in after}
    for call_id, call in before.items():
        kept = by_id[call_id]
        assert (kept.request_hash, kept.status, kept.response_json) == (
            call.request_hash, call.status, call.response_json,
        )  # fmt: skip
    # The run group has one success for every item, and only the re-execution's rows besides.
    successes = Counter(call_key(c) for c in after if c.status == "success")
    assert len(successes) == 500 and set(successes.values()) == {1}
    assert len(after) == len(before) + (500 - len(captured))

    # No successful call is repeated: the re-execution sent exactly the items without a
    # captured success, once each...
    resent = Counter(request_key(r) for r in again.requests)
    assert set(resent) == set(successes) - captured and set(resent.values()) == {1}
    # ...so the only items the server answered twice are calls the kill caught in flight or
    # before their commit: their answers never reached the database.
    twice = {key for key, n in faults.successes().items() if n == 2}
    assert twice.isdisjoint(captured) and len(twice) <= AT_RISK
