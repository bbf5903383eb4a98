"""What a call's row keeps, against the loopback server through the real openai client, on
SQLite and PostgreSQL: tool calls, refusals and content parts as the API returned them,
log-probabilities (in call_artifacts when large), SQL NULL for absent values, and the
server's own words in error texts."""

import json

import pytest
from sqlalchemy import JSON, func, insert, select

from study_query_dagster.db import CallArtifact, RawCall, RawCallRepository
from study_query_dagster.providers import OfflineProvider, OpenAIProvider, ProviderError
from study_query_dagster.services import InferenceService
from study_query_dagster.services.inference.records import LOGPROBS_INLINE_BYTES
from tests.support.fake_llm_server import Fault, fake_logprobs

KEY = "sk-fidelity-test-0123456789"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    },
}


@pytest.fixture
async def provider(llm_server):
    base_url = llm_server.openai_base_url
    async with OpenAIProvider(KEY, "gpt-4o-mini", base_url=base_url, timeout=60) as p:
        yield p


def service(provider, db=None, **kwargs) -> InferenceService:
    return InferenceService(provider, db, initial_wait=0.01, max_wait=0.05, **kwargs)


def row(db, call_id) -> RawCall:
    with db.session_scope() as session:
        return session.get(RawCall, call_id)


# --- tool calls, refusals, content parts -----------------------------------------------------


async def test_a_tool_call_answer_is_kept_as_the_api_returned_it(db, provider, llm_server):
    result = await service(provider, db).run_inference("Weather in Oslo?", tools=[WEATHER])
    assert llm_server.requests[-1].body["tools"] == [WEATHER]
    call = row(db, result["id"])
    response = call.response_json
    assert response["finish_reason"] == "tool_calls" and response["text"] == ""
    [tool_call] = response["message"]["tool_calls"]
    assert tool_call["id"].startswith("call_fake_") and tool_call["type"] == "function"
    assert tool_call["function"]["name"] == "get_weather"
    assert json.loads(tool_call["function"]["arguments"]) == {"q": "Weather in Oslo?"}
    assert response["message"]["content"] is None and "refusal" in response["message"]
    assert result["message"] == response["message"]  # the caller sees the same message


async def test_refusals_and_content_parts_are_kept(db, provider, llm_server):
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "world"}]
    llm_server.message_fn = lambda request: {"role": "assistant", "content": parts}
    spoken = await service(provider, db).run_inference("parts please")
    assert spoken["response"] == "Hello world"  # the text parts, joined
    assert row(db, spoken["id"]).response_json["message"]["content"] == parts

    refusal = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    llm_server.message_fn = lambda request: refusal
    refused = await service(provider, db).run_inference("something unsafe")
    assert row(db, refused["id"]).response_json["message"] == refusal


# --- log-probabilities -------------------------------------------------------------------------


async def test_logprobs_are_stored_with_the_call_and_exposed(db, provider, llm_server):
    result = await service(provider, db).run_inference("one two", logprobs=True, top_logprobs=2)
    sent = llm_server.requests[-1].body
    assert sent["logprobs"] is True and sent["top_logprobs"] == 2
    with db.session_scope() as session:
        stored = RawCallRepository(session).logprobs(result["id"])
        assert session.scalar(select(func.count()).select_from(CallArtifact)) == 0
    assert stored == fake_logprobs("echo: one two", 2)
    assert [t["token"] for t in stored["content"]] == ["echo:", " one", " two"]
    assert all(len(t["top_logprobs"]) == 2 for t in stored["content"])


async def test_large_logprobs_go_to_call_artifacts(db, provider, llm_server):
    long_answer = " ".join(f"word{i}" for i in range(2000))
    llm_server.reply_fn = lambda request: long_answer
    result = await service(provider, db).run_inference("talk", logprobs=True, top_logprobs=3)
    expected = fake_logprobs(long_answer, 3)
    assert len(json.dumps(expected)) > LOGPROBS_INLINE_BYTES
    with db.session_scope() as session:
        repo = RawCallRepository(session)
        response = repo.get_raw_call(result["id"]).response_json
        [artifact] = repo.call_artifacts(result["id"])
        assert repo.logprobs(result["id"]) == expected
    assert "logprobs" not in response and response["text"] == long_answer
    assert response["logprobs_artifact"]["sha256"] == artifact.sha256
    assert artifact.artifact_type == "logprobs" and artifact.content_type == "application/json"
    assert artifact.byte_size == response["logprobs_artifact"]["byte_size"]


async def test_offline_logprobs_are_deterministic(db):
    svc = service(OfflineProvider(), db)
    first = await svc.run_inference("a question", logprobs=True, top_logprobs=2)
    second = await service(OfflineProvider(), db).run_inference(
        "a question", logprobs=True, top_logprobs=2
    )
    other = await svc.run_inference("another question", logprobs=True, top_logprobs=2)
    with db.session_scope() as session:
        repo = RawCallRepository(session)
        a, b, c = (repo.logprobs(r["id"]) for r in (first, second, other))
    assert a == b and a != c
    tokens = [t["token"] for t in a["content"]]
    assert "".join(tokens) == first["response"]  # one entry per token of the answer
    assert all(t["logprob"] <= 0 and len(t["top_logprobs"]) == 2 for t in a["content"])


# --- SQL NULL for absent values ------------------------------------------------------------------


async def test_absent_json_values_are_sql_null_and_filters_treat_old_json_nulls_alike(
    db, provider, llm_server
):
    svc = service(provider, db, max_retries=0)
    ok = await svc.run_inference("fine")
    llm_server.script(Fault(status=400))
    with pytest.raises(ProviderError) as caught:
        await svc.run_inference("refused")
    failed_id = caught.value.call_id
    with db.session_scope() as session:
        null_error = session.scalars(select(RawCall.id).where(RawCall.error_json.is_(None)))
        assert list(null_error) == [ok["id"]]
        null_answer = select(RawCall.id).where(
            RawCall.response_json.is_(None), RawCall.tokens_json.is_(None)
        )
        assert list(session.scalars(null_answer)) == [failed_id]
        # A row as older versions wrote it: JSON null where there was no error.
        old_id = session.execute(
            insert(RawCall).returning(RawCall.id),
            {
                "provider": "openai",
                "status": "success",
                "request_json": {"messages": []},
                "response_json": {"text": "old"},
                "error_json": JSON.NULL,
            },
        ).scalar_one()
    with db.session_scope() as session:
        repo = RawCallRepository(session)
        assert sorted(c.id for c in repo.query_raw_calls(has_error=False)) == [ok["id"], old_id]
        assert [c.id for c in repo.query_raw_calls(has_error=True)] == [failed_id]


# --- error texts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (Fault(kind="detail", status=404, body="Not Found"), "openai: HTTP 404: Not Found"),
        (
            Fault(
                status=422,
                body=json.dumps({"detail": [{"loc": ["body", "model"], "msg": "field required"}]}),
            ),
            "openai: HTTP 422: body.model: field required",
        ),
        (
            Fault(status=503, body="upstream overloaded, try later", content_type="text/plain"),
            "openai: HTTP 503: upstream overloaded, try later",
        ),
        (Fault(status=418, body="{}"), "openai: HTTP 418: no error message in the response"),
    ],
)
async def test_error_texts_keep_the_servers_words(provider, llm_server, fault, message):
    llm_server.script(fault)
    with pytest.raises(ProviderError) as caught:
        await service(provider, max_retries=0).run_inference("hi")
    assert caught.value.message == message


async def test_a_long_error_text_is_truncated(provider, llm_server):
    llm_server.script(Fault(status=500, body="x" * 5000, content_type="text/plain"))
    with pytest.raises(ProviderError) as caught:
        await service(provider, max_retries=0).run_inference("hi")
    text = caught.value.message.removeprefix("openai: HTTP 500: ")
    assert len(text) == 500 and text.endswith("…")
