"""Capture durability: rows reach disk as calls complete, cancelled calls are recorded, and no
API key is ever written to the database or a log line."""

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from study_query_dagster.db import DatabaseConnection, GroupRepository, RawCall
from study_query_dagster.providers import OpenAIProvider, ProviderError, ProviderFactory
from study_query_dagster.services import InferenceService
from tests.support.fake_llm_server import Fault
from tests.support.inflight import until_joined

KEY = "sk-capture-test-0123456789"


def slow_for(word: str):
    """A fault_fn: requests whose last message contains `word` get no answer until the client
    hangs up (the tests cancel them; no machine is slow enough to see them answered)."""

    def fault(request):
        content = request.body["messages"][-1]["content"] if isinstance(request.body, dict) else ""
        return Fault(kind="slow", hang_s=None) if word in content else None

    return fault


def count_rows(url: str, status: str | None = None) -> int:
    """Count through a separate connection: what is on disk, not in a session's cache."""
    db = DatabaseConnection(url)
    try:
        with db.session_scope() as session:
            stmt = select(func.count()).select_from(RawCall)
            if status:
                stmt = stmt.where(RawCall.status == status)
            return session.scalar(stmt)
    finally:
        db.dispose()


async def wait_until(predicate, task=None):
    """Poll until `predicate()` holds (no deadline: a hang fails the run, not a timer)."""
    while not predicate():
        if task is not None and task.done():
            task.result()  # surface its error
            raise AssertionError("task finished before the condition held")
        await asyncio.sleep(0.02)


@pytest.fixture
async def provider(llm_server):
    async with OpenAIProvider(
        KEY, "gpt-4o-mini", base_url=llm_server.openai_base_url, timeout=60
    ) as p:
        yield p


async def test_rows_are_on_disk_before_the_batch_returns(db_url, provider):
    db = DatabaseConnection(db_url)
    results = await InferenceService(provider, db, max_concurrency=8).run_batch(
        [f"question {i}" for i in range(40)]
    )
    assert count_rows(db_url) == 40  # a fresh connection sees every row at once
    with db.session_scope() as session:
        assert len(GroupRepository(session).get_group_members(results.group_id)) == 40
    db.dispose()


async def test_closing_the_service_stops_its_capture_thread_and_reopening_works(db_url, provider):
    def capture_threads() -> int:
        return sum(t.name.startswith("capture") for t in threading.enumerate())

    db = DatabaseConnection(db_url)
    before = capture_threads()
    service = InferenceService(provider, db)
    async with service:
        await service.run_batch(["one", "two"])
        assert capture_threads() == before + 1
    assert capture_threads() == before  # a long-lived process does not collect idle threads
    await service.run_inference("three")  # used again after close: a new thread, same rows
    await service.aclose()
    assert count_rows(db_url) == 3 and capture_threads() == before
    db.dispose()


async def test_completed_calls_reach_disk_while_the_batch_still_runs(db_url, provider, llm_server):
    llm_server.fault_fn = slow_for("slow")
    db = DatabaseConnection(db_url)
    svc = InferenceService(provider, db, max_concurrency=8)
    task = asyncio.create_task(svc.run_batch([f"fast {i}" for i in range(5)] + ["slow one"]))
    # The five fast calls are durable while the slow one is still in flight.
    seen = 0

    async def poll():
        nonlocal seen
        seen = await asyncio.to_thread(count_rows, db_url, "success")
        return seen

    while await poll() < 5:
        assert not task.done()
        await asyncio.sleep(0.02)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert count_rows(db_url, "cancelled") == 1
    db.dispose()


async def test_a_cancelled_batch_records_in_flight_and_queued_calls_as_cancelled(
    db_url, provider, llm_server
):
    llm_server.fault_fn = slow_for("slow")
    db = DatabaseConnection(db_url)
    svc = InferenceService(provider, db, max_concurrency=4)
    prompts = ["done first"] + [f"slow {i}" for i in range(6)]  # 7 items, 8 workers
    task = asyncio.create_task(svc.run_batch(prompts))
    await wait_until(lambda: llm_server.count() >= 5, task)  # 1 answered + 4 in flight
    await wait_until(lambda: count_rows(db_url, "success") == 1, task)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Recorded before the CancelledError reached us: read through a fresh connection.
    assert count_rows(db_url) == 7
    assert count_rows(db_url, "cancelled") == 6
    with db.session_scope() as session:
        rows = list(session.scalars(select(RawCall).where(RawCall.status == "cancelled")))
        attempts = sorted(r.metadata_json["attempts"] for r in rows)
        assert attempts == [0] * 2 + [1] * 4  # four were sent, two waited for a slot
        for row in rows:
            assert row.error_json["type"] == "cancelled" and row.response_json is None
            assert row.request_json["prompt"].startswith("slow")
        groups = {m.group_id for r in rows for m in _memberships(session, r.id)}
        assert len(groups) == 1
    db.dispose()


def _memberships(session, call_id):
    from study_query_dagster.db import GroupMember

    return list(session.scalars(select(GroupMember).where(GroupMember.call_id == call_id)))


async def test_a_cancelled_single_call_is_recorded(db_url, provider, llm_server):
    llm_server.fault_fn = slow_for("slow")
    db = DatabaseConnection(db_url)
    task = asyncio.create_task(InferenceService(provider, db).run_inference("slow answer"))
    await wait_until(lambda: llm_server.count() == 1, task)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert count_rows(db_url, "cancelled") == 1
    db.dispose()


async def test_one_of_two_deduplicated_callers_cancelling_does_not_stop_the_call(
    sqlite_db, provider, llm_server
):
    llm_server.hold(until=lambda _: False)  # no answer until the test lets it go
    svc = InferenceService(provider, sqlite_db)
    first = asyncio.create_task(svc.run_inference("shared"))
    second = asyncio.create_task(svc.run_inference("shared"))
    await until_joined(svc, 2, [first, second])
    await wait_until(lambda: llm_server.count() == 1)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    llm_server.release()  # the call outlived the caller that cancelled
    result = await second
    assert result["status"] == "success" and llm_server.count() == 1
    assert count_rows(str(sqlite_db.url)) == 1


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from study_query_dagster.db import DatabaseConnection
    from study_query_dagster.providers import OpenAIProvider
    from study_query_dagster.services import InferenceService

    db_url, base_url = sys.argv[1], sys.argv[2]
    provider = OpenAIProvider("sk-ctrl-c-test-123456", base_url=base_url, timeout=60)
    svc = InferenceService(provider, DatabaseConnection(db_url), max_concurrency=3)
    asyncio.run(svc.run_batch([f"slow {i}" for i in range(5)]))
    """
)


async def test_ctrl_c_records_in_flight_calls_as_cancelled(db_url, llm_server, tmp_path):
    llm_server.fault_fn = slow_for("slow")
    script = tmp_path / "batch.py"
    script.write_text(CTRL_C_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), db_url, llm_server.openai_base_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        await wait_until(lambda: llm_server.count() == 3 or proc.poll() is not None)
        assert proc.poll() is None, proc.stdout.read().decode()
        proc.send_signal(signal.SIGINT)
        output = (await asyncio.to_thread(proc.communicate))[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and "KeyboardInterrupt" in output
    assert count_rows(db_url, "cancelled") == 5  # 3 in flight + 2 queued
    assert count_rows(db_url) == 5


async def test_no_api_key_in_any_raw_calls_column_or_log_line(
    sqlite_db, llm_server, monkeypatch, caplog, tmp_path
):
    monkeypatch.chdir(tmp_path)
    keys = {
        "AZURE_OPENAI_API_KEY": "azk-SECRET-azure-7f3a9c1e",
        "OPENAI_API_KEY": "sk-SECRET-openai-5b2e1d0a",
        "HYPERBOLIC_API_KEY": "hb-SECRET-hyper-9c8d7e6f",
    }
    for name, value in keys.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", llm_server.url)
    monkeypatch.setenv("AZURE_OPENAI_DEPLOYMENT", "gpt-4o-mini")
    monkeypatch.setenv("OPENAI_BASE_URL", llm_server.openai_base_url)
    monkeypatch.setenv("HYPERBOLIC_BASE_URL", llm_server.url)
    caplog.set_level(logging.DEBUG)  # every library's debug lines, not only ours

    for name in ("azure", "openai", "hyperbolic"):
        key = keys[f"{name.upper()}_API_KEY" if name != "azure" else "AZURE_OPENAI_API_KEY"]
        async with ProviderFactory.from_env(name, timeout=5) as provider:
            svc = InferenceService(provider, sqlite_db, initial_wait=0.01, max_wait=0.02)
            await svc.run_inference("hello there", temperature=0.1)
            llm_server.script(Fault(status=429, retry_after=0))
            await svc.run_inference("retry me")
            echo = {"error": {"message": f"Incorrect API key provided: {key}", "code": "401"}}
            llm_server.script(Fault(status=401, body=json.dumps(echo)))
            with pytest.raises(ProviderError):
                await svc.run_inference("denied")
            await svc.run_batch(["a", "b"], extra_metadata={"note": "batch"})
            await svc.run_sampling("sample", 2)
    assert llm_server.count() == 3 * 8
    # the server did receive the keys, so a leak was possible
    assert {
        r.headers.get("api-key") or r.headers["authorization"][7:] for r in llm_server.requests
    } == set(keys.values())

    sqlite_db.dispose()
    path = Path(sqlite_db.url.database)
    blob = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    assert b"hello there" in blob and b"Incorrect API key provided" in blob
    log_lines = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert "HTTP Request" in log_lines or "Request options" in log_lines or "captured" in log_lines
    for value in keys.values():
        assert value.encode() not in blob, "API key written to the database file"
        assert value not in log_lines, "API key in a log line"
    assert os.environ["OPENAI_API_KEY"] == keys["OPENAI_API_KEY"]
