"""InferenceService against the loopback server with capture on SQLite and PostgreSQL."""

import asyncio
import sqlite3

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from study_query_dagster.db import Group, GroupRepository, RawCall
from study_query_dagster.providers import OfflineProvider, OpenAIProvider, ProviderError
from study_query_dagster.services import InferenceService, ProviderLimits, compute_request_hash
from study_query_dagster.services.pricing import estimate_cost
from tests.support.clock import ManualClock
from tests.support.fake_llm_server import Fault
from tests.support.inflight import until_joined

KEY = "sk-inference-test-0123456789"


@pytest.fixture
async def provider(llm_server):
    # A generous timeout: only the hang test wants the client to give up (it has its own).
    async with OpenAIProvider(
        KEY, "gpt-4o-mini", base_url=llm_server.openai_base_url, timeout=60
    ) as p:
        yield p


def service(provider, db=None, **kwargs) -> InferenceService:
    kwargs = {"initial_wait": 0.01, "max_wait": 0.05, **kwargs}
    return InferenceService(provider, db, **kwargs)


def calls(db) -> list[RawCall]:
    with db.session_scope() as session:
        return list(session.scalars(select(RawCall).order_by(RawCall.id)))


def members(db, group_id) -> list[tuple[int, int, str | None]]:
    with db.session_scope() as session:
        return [
            (m.call_id, m.position, m.role)
            for m in GroupRepository(session).get_group_members(group_id)
        ]


# --- capture format --------------------------------------------------------------------------


async def test_success_is_captured_in_the_contract_format(db, provider, llm_server):
    result = await service(provider, db).run_inference(
        "What is 2 + 2?", temperature=0, extra_metadata={"prompt_id": "p1", "prompt_set": "demo"}
    )
    [row] = calls(db)
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    expected_hash = compute_request_hash("openai", "gpt-4o-mini", messages, {"temperature": 0})
    assert result["id"] == row.id and result["status"] == "success"
    assert result["response"] == "echo: What is 2 + 2?"
    assert (row.provider, row.model, row.modality, row.status) == (
        "openai",
        "gpt-4o-mini",
        "text",
        "success",
    )
    assert row.request_hash == expected_hash
    assert row.request_json == {
        "messages": messages,
        "params": {"temperature": 0},
        "prompt": "What is 2 + 2?",
    }
    assert row.response_json == {
        "text": "echo: What is 2 + 2?",
        "finish_reason": "stop",
        "id": llm_server_reply_id(row),
        # the assistant message exactly as the server sent it
        "message": {"role": "assistant", "content": "echo: What is 2 + 2?", "refusal": None},
    }
    assert row.tokens_json == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    assert row.error_json is None and row.latency_ms > 0
    meta = row.metadata_json
    assert meta["request_hash"] == expected_hash and meta["attempts"] == 1
    assert meta["sample_index"] is None and meta["preprocessing"] is None
    assert meta["cost_usd"] == pytest.approx(estimate_cost("openai", "gpt-4o-mini", 5, 6))
    assert meta["cost_usd"] > 0
    assert meta["provider_request_id"].startswith("req-")
    assert (meta["prompt_id"], meta["prompt_set"]) == ("p1", "demo")
    for key in (
        "provider",
        "model",
        "tokens",
        "latency_ms",
        "attempts",
        "request_hash",
        "cost_usd",
    ):
        assert key in result["metadata"]
    assert result["metadata"]["tokens"] == 11


def llm_server_reply_id(row):
    assert row.response_json["id"].startswith("chatcmpl-fake-")
    return row.response_json["id"]


async def test_unknown_model_costs_null_not_zero(db, llm_server):
    async with OpenAIProvider(KEY, "my-finetune", base_url=llm_server.openai_base_url) as p:
        result = await service(p, db).run_inference("hi")
    assert result["metadata"]["cost_usd"] is None
    assert calls(db)[0].metadata_json["cost_usd"] is None


async def test_without_a_database_nothing_is_persisted(provider):
    result = await service(provider).run_inference("hi")
    assert result["id"] is None and result["response"] == "echo: hi"


# --- retries -----------------------------------------------------------------------------------


async def test_429_with_retry_after_waits_then_succeeds_with_two_attempts(db, provider, llm_server):
    llm_server.script(Fault(status=429, retry_after=1))
    result = await service(provider, db).run_inference("hello")
    first, second = llm_server.requests
    assert second.at - first.at >= 1.0  # Retry-After honoured (backoff alone is 0.01 s)
    assert result["status"] == "success" and result["metadata"]["attempts"] == 2
    [row] = calls(db)
    assert row.status == "success" and row.metadata_json["attempts"] == 2
    [failed] = row.metadata_json["attempt_errors"]
    assert failed["attempt"] == 1 and failed["type"] == "rate_limit"
    assert failed["status_code"] == 429 and failed["retry_after"] == 1.0
    assert failed["waited_s"] == 1.0


async def test_retry_after_is_capped(db, provider, llm_server):
    llm_server.script(Fault(status=503, retry_after=120))
    result = await service(provider, db, max_retry_after=0.1).run_inference("hello")
    assert result["metadata"]["attempt_errors"][0]["waited_s"] == 0.1


async def test_400_is_not_retried_and_is_captured_as_failed(db, provider, llm_server):
    llm_server.script(Fault(status=400))
    with pytest.raises(ProviderError) as caught:
        await service(provider, db).run_inference("bad one")
    assert llm_server.count() == 1
    [row] = calls(db)
    assert row.status == "failed" and caught.value.call_id == row.id
    assert row.response_json is None and row.tokens_json is None
    error = row.error_json
    assert (error["type"], error["status_code"]) == ("bad_request", 400)
    assert error["message"] == "openai: HTTP 400: scripted 400"
    assert [a["attempt"] for a in error["attempts"]] == [1]
    assert set(error["attempts"][0]) >= {
        "attempt",
        "type",
        "status_code",
        "message",
        "retry_after",
        "waited_s",
    }
    assert row.metadata_json["attempts"] == 1 and row.metadata_json["cost_usd"] is None


async def test_a_hang_becomes_timeout_after_the_retries(db, llm_server):
    # The server never answers either attempt: the client's timeout ends each one.
    llm_server.script(Fault(kind="hang", hang_s=None), Fault(kind="hang", hang_s=None))
    impatient = OpenAIProvider(KEY, "gpt-4o-mini", base_url=llm_server.openai_base_url, timeout=0.5)
    with pytest.raises(ProviderError) as caught:
        async with impatient:
            await service(impatient, db, max_retries=1).run_inference("hang")
    assert caught.value.error_type == "timeout"
    [row] = calls(db)
    assert row.status == "timeout"
    assert [a["type"] for a in row.error_json["attempts"]] == ["timeout", "timeout"]
    assert row.error_json["attempts"][0]["waited_s"] is not None
    assert row.error_json["attempts"][1]["waited_s"] is None


async def test_retryable_errors_exhaust_max_retries(db, provider, llm_server):
    llm_server.script(*[Fault(status=503)] * 3)
    with pytest.raises(ProviderError) as caught:
        await service(provider, db, max_retries=2).run_inference("x")
    assert llm_server.count() == 3 and len(caught.value.attempts) == 3
    assert calls(db)[0].status == "failed"
    waits = [a["waited_s"] for a in caught.value.attempts]
    assert waits[2] is None and all(0.01 <= w <= 0.05 for w in waits[:2])  # backoff bounds
    first, second, third = llm_server.requests
    assert second.at - first.at >= 0.01 and third.at - second.at >= 0.01


# --- dedup, sampling, batches, cache ------------------------------------------------------------


async def test_identical_concurrent_requests_share_one_call_and_row(db, provider, llm_server):
    llm_server.hold(until=lambda _: False)  # no answer until all 20 callers wait on the call
    svc = service(provider, db)
    tasks = [asyncio.ensure_future(svc.run_inference("same question")) for _ in range(20)]
    await until_joined(svc, 20, tasks)
    llm_server.release()
    results = await asyncio.gather(*tasks)
    assert llm_server.count("/chat/completions") == 1
    assert len(calls(db)) == 1
    assert {r["id"] for r in results} == {calls(db)[0].id}
    assert sum(r["metadata"]["deduplicated"] for r in results) == 19
    assert {r["response"] for r in results} == {"echo: same question"}


async def test_run_sampling_makes_n_calls_grouped(db, provider, llm_server):
    results = await service(provider, db).run_sampling("Pick a number", 5, temperature=1.0)
    assert llm_server.count("/chat/completions") == 5
    rows = calls(db)
    assert sorted(r.metadata_json["sample_index"] for r in rows) == [0, 1, 2, 3, 4]
    assert len({r.request_hash for r in rows}) == 5
    assert [r["metadata"]["sample_index"] for r in results] == [0, 1, 2, 3, 4]
    group_members = members(db, results.group_id)
    assert [p for _, p, _ in group_members] == [1, 2, 3, 4, 5]
    assert [c for c, _, _ in group_members] == [r["id"] for r in results]
    with db.session_scope() as session:
        assert session.get(Group, results.group_id).group_type == "sampling"


async def test_run_batch_keeps_order_and_failed_items_do_not_stop_it(db, provider, llm_server):
    llm_server.fault_fn = lambda req: (
        Fault(status=400) if "bad" in req.body["messages"][-1]["content"] else None
    )
    prompts = [f"prompt {i}" for i in range(10)]
    prompts[3] = "a bad prompt"
    results = await service(provider, db, max_concurrency=4).run_batch(prompts, temperature=0.5)
    assert [r["status"] for r in results] == ["success"] * 3 + ["failed"] + ["success"] * 6
    assert results[3]["error"]["type"] == "bad_request" and results[3]["response"] is None
    assert [r["response"] for i, r in enumerate(results) if i != 3] == [
        f"echo: prompt {i}" for i in range(10) if i != 3
    ]
    assert len(calls(db)) == 10
    group_members = members(db, results.group_id)
    assert [c for c, _, _ in group_members] == [r["id"] for r in results]
    with db.session_scope() as session:
        group = session.get(Group, results.group_id)
        assert group.group_type == "batch" and group.metadata_json["size"] == 10


async def test_a_batch_whose_calls_cannot_be_captured_stops_every_worker(
    sqlite_db, provider, llm_server
):
    # At the 5th request the table disappears (as if the database broke) and answers slow
    # down: the batch must raise the database error with no call left running behind it.
    def break_capture(request):
        if llm_server.count() == 5:
            with sqlite3.connect(sqlite_db.url.database) as conn:
                conn.execute("ALTER TABLE raw_calls RENAME TO raw_calls_gone")
        return Fault(kind="slow", hang_s=0.2) if llm_server.count() > 5 else None

    llm_server.fault_fn = break_capture
    with pytest.raises(OperationalError, match="no such table: raw_calls"):
        await service(provider, sqlite_db, max_concurrency=4).run_batch(
            [f"prompt {i}" for i in range(200)]
        )
    workers = [
        t for t in asyncio.all_tasks() if t.get_coro().__qualname__.endswith("<locals>.worker")
    ]
    assert workers == []
    assert llm_server.count() < 20


async def test_run_batch_into_an_existing_or_named_group_with_item_metadata(db, provider):
    svc = service(provider, db)
    with db.session_scope() as session:
        run_id = GroupRepository(session).create_group("run", "run-1")
    first = await svc.run_batch(["a", "b"], group_id=run_id)
    second = await svc.run_batch(
        [
            {"prompt": "c", "extra_metadata": {"prompt_id": "c1"}, "sample_index": 2},
            {"messages": [{"role": "user", "content": "d"}], "params": {"temperature": 0.9}},
        ],
        group_id=run_id,
        extra_metadata={"prompt_set": "s"},
    )
    assert first.group_id == second.group_id == run_id
    assert [p for _, p, _ in members(db, run_id)] == [1, 2, 3, 4]
    rows = {r.id: r for r in calls(db)}
    c, d = (rows[r["id"]] for r in second)
    assert c.metadata_json["prompt_id"] == "c1" and c.metadata_json["prompt_set"] == "s"
    assert c.metadata_json["sample_index"] == 2
    assert d.request_json["params"] == {"temperature": 0.9} and "prompt" not in d.request_json
    named = await svc.run_batch(["e"], group_type="prompt_set", group_name="geo")
    again = await svc.run_batch(["f"], group_type="prompt_set", group_name="geo")
    assert named.group_id == again.group_id
    assert [p for _, p, _ in members(db, named.group_id)] == [1, 2]


async def test_duplicate_in_two_concurrent_batches_is_one_call_in_both_groups(
    db, provider, llm_server
):
    llm_server.hold(until=lambda _: False)  # no answer until both batches wait on "shared"
    svc = service(provider, db)
    tasks = [asyncio.ensure_future(svc.run_batch(b)) for b in (["shared", "x"], ["shared"])]
    await until_joined(svc, 2, tasks)
    llm_server.release()
    one, two = await asyncio.gather(*tasks)
    assert llm_server.count() == 2
    assert one[0]["id"] == two[0]["id"]
    assert [c for c, _, _ in members(db, two.group_id)] == [two[0]["id"]]


async def test_cache_reuses_an_earlier_success_without_calling(db, provider, llm_server):
    svc = service(provider, db)
    first = await svc.run_inference("cache me", temperature=0)
    again = await svc.run_inference("cache me", temperature=0, cache=True)
    assert llm_server.count() == 1 and len(calls(db)) == 1
    assert again["id"] == first["id"] and again["response"] == first["response"]
    assert (
        again["metadata"]["cached"] is True and again["metadata"]["cached_call_id"] == first["id"]
    )
    # a different param is a different request; a failure is never served from the cache
    await svc.run_inference("cache me", temperature=1, cache=True)
    llm_server.script(Fault(status=400))
    with pytest.raises(ProviderError):
        await svc.run_inference("fails", cache=True)
    retried = await svc.run_inference("fails", cache=True)
    assert retried["metadata"]["cached"] is False
    assert llm_server.count() == 4
    # cached calls still join the batch group of a resumed run
    batch = await svc.run_batch(["cache me", "new one"], cache=True, temperature=0)
    assert [r["metadata"]["cached"] for r in batch] == [True, False]
    assert [c for c, _, _ in members(db, batch.group_id)] == [first["id"], batch[1]["id"]]


# --- preprocessing and validation ---------------------------------------------------------------


async def test_preprocessing_sends_clean_text_and_keeps_the_original(db, provider, llm_server):
    original = "  Email   bob@example.com\x00 about   the report  "
    result = await service(provider, db, preprocess=True).run_inference(original)
    sent = llm_server.requests[-1].body["messages"][0]["content"]
    assert sent == "Email [EMAIL] about the report"
    [row] = calls(db)
    assert row.request_json["prompt"] == sent
    assert row.request_json["messages"][0]["content"] == sent
    pre = row.metadata_json["preprocessing"]
    assert pre["original_prompt"] == original.replace("\x00", "\ufffd")  # see next test
    assert pre["changed"] == ["strip_control_chars", "clean_whitespace", "remove_pii"]
    assert result["metadata"]["preprocessing"]["original_prompt"] == original


async def test_nul_characters_are_stored_as_replacement_characters(db, provider, llm_server):
    # PostgreSQL's JSONB refuses U+0000; the capture must not fail because a prompt has one.
    result = await service(provider, db).run_inference("before\x00after")
    assert llm_server.requests[-1].body["messages"][0]["content"] == "before\x00after"
    [row] = calls(db)
    assert row.id == result["id"]
    assert row.request_json["prompt"] == "before\ufffdafter"
    assert row.response_json["text"] == "echo: before\ufffdafter"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompts": ["ok", 42]}, r"prompts\[1\]: expected a prompt"),
        ({"prompts": ["ok", {"prompt": "x", "colour": 1}]}, r"prompts\[1\]: unknown key"),
        ({"prompts": ["ok", {"messages": [{"content": "no role"}]}]}, r"prompts\[1\].*'role'"),
        ({"prompts": ["ok"], "extra_metadata": {"request_hash": "x"}}, "may not set"),
        ({"prompts": ["ok"], "api_key": "sk-leak"}, "not allowed"),
        ({"prompts": ["ok"], "n": 3}, r"\['n'\] are not allowed.*use samples"),
        ({"prompts": ["ok"], "temperature": object()}, "JSON-serialisable"),
        ({"prompts": ["ok"], "group_id": 999_999}, "group_id 999999 does not exist"),
        ({"prompts": [{"prompt": "x", "sample_index": -1}]}, "sample_index"),
    ],
)
async def test_bad_input_fails_before_any_call_or_write(db, provider, llm_server, kwargs, message):
    kwargs = dict(kwargs)
    prompts = kwargs.pop("prompts")
    with pytest.raises(ValueError, match=message):
        await service(provider, db).run_batch(prompts, **kwargs)
    assert llm_server.count() == 0 and calls(db) == []
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Group)) == 0


async def test_an_empty_batch_makes_no_group(db, provider):
    results = await service(provider, db).run_batch([])
    assert results == [] and results.group_id is None
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Group)) == 0


async def test_run_sampling_needs_a_positive_n(provider):
    with pytest.raises(ValueError, match="n >= 1"):
        await service(provider).run_sampling("q", 0)


# --- rate limits -----------------------------------------------------------------------------


async def test_requests_per_minute_bucket_spaces_calls():
    # The bucket reads a clock the test owns: the waits are what the limit demands, exactly.
    manual = ManualClock()
    limits = ProviderLimits(16, requests_per_minute=600, clock=manual.clock)  # 10/s, burst 10
    svc = service(OfflineProvider(), limits=limits)
    results = await svc.run_batch([f"q{i}" for i in range(15)])
    assert [r["status"] for r in results] == ["success"] * 15
    # 10 calls from the banked second, then 5 more, each after 0.1 s of refill
    assert manual.waited == pytest.approx(0.5)
    assert len([s for s in manual.sleeps if s > 0.01]) == 5
    assert svc.rpm.waited_s == pytest.approx(0.5)


async def test_tokens_per_minute_bucket_charges_real_usage():
    manual = ManualClock()
    limits = ProviderLimits(16, tokens_per_minute=600, clock=manual.clock)  # 10 tokens/s, cap 10
    svc = service(OfflineProvider(), limits=limits)
    first = await svc.run_inference("one two three four five six seven eight nine ten")
    tokens = first["metadata"]["tokens"]
    assert tokens > 10 and manual.sleeps == []  # the estimate (capped at 10) was banked
    await svc.run_inference("again")  # must wait for the first call's overdraft to refill
    # the overdraft (tokens - 10 reserved) plus this call's estimate (2) at 10 tokens/s
    assert manual.waited == pytest.approx((tokens - 10 + 2) / 10)
