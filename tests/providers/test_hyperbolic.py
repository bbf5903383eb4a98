"""HyperbolicProvider over plain httpx against the loopback server."""

import pytest

from study_query_dagster.providers import HyperbolicProvider, ProviderError
from tests.support.fake_llm_server import Fault

KEY = "hb-test-key-0123456789abcdef"


MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct"


@pytest.fixture
async def hyperbolic(llm_server):
    # A generous timeout: only the timeout test wants the client to give up (see there).
    async with HyperbolicProvider(KEY, MODEL, base_url=llm_server.url, timeout=60) as provider:
        yield provider


async def test_sends_path_bearer_and_body_and_parses_reply(hyperbolic, llm_server):
    reply = await hyperbolic.complete("Name a prime.", temperature=0.1, max_tokens=64, top_k=3)
    sent = llm_server.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body == {
        "model": "meta-llama/Meta-Llama-3.1-8B-Instruct",
        "messages": [{"role": "user", "content": "Name a prime."}],
        "temperature": 0.1,
        "max_tokens": 64,
        "top_k": 3,
    }
    assert reply.text == "echo: Name a prime."
    assert (reply.prompt_tokens, reply.completion_tokens, reply.tokens) == (3, 4, 7)
    assert reply.finish_reason == "stop" and reply.provider == "hyperbolic"
    assert reply.metadata["request_id"].startswith("req-")


async def test_finish_reason_length(hyperbolic, llm_server):
    reply = await hyperbolic.complete("a b c d e", max_tokens=2)
    assert reply.finish_reason == "length" and reply.completion_tokens == 2


@pytest.mark.parametrize(
    ("fault", "error_type", "status", "retryable"),
    [
        (Fault(status=429, retry_after=1), "rate_limit", 429, True),
        (
            Fault(
                status=503,
                body="<html><h1>503 Service Unavailable</h1></html>",
                content_type="text/html",
            ),
            "server_error",
            503,
            True,
        ),
        (
            Fault(
                status=400, body="bad request: temperature out of range", content_type="text/plain"
            ),
            "bad_request",
            400,
            False,
        ),
        (Fault(status=401), "authentication", 401, False),
        (Fault(kind="drop"), "connection", None, True),
        (Fault(kind="malformed"), "malformed_response", None, True),
    ],
)
async def test_failures_including_non_json_bodies(
    hyperbolic, llm_server, fault, error_type, status, retryable
):
    llm_server.script(fault)
    with pytest.raises(ProviderError) as caught:
        await hyperbolic.complete("hi")
    error = caught.value
    assert (error.error_type, error.status_code, error.retryable) == (error_type, status, retryable)
    if fault.retry_after:
        assert error.retry_after == 1.0
    if fault.body and not fault.body.startswith("{"):
        assert fault.body[:20] in error.message  # the text body is kept for the capture


async def test_a_server_that_never_answers_is_a_timeout(llm_server):
    llm_server.script(Fault(kind="hang", hang_s=None))
    with pytest.raises(ProviderError) as caught:
        async with HyperbolicProvider(KEY, MODEL, base_url=llm_server.url, timeout=0.5) as p:
            await p.complete("hi")
    assert (caught.value.error_type, caught.value.retryable) == ("timeout", True)


async def test_key_never_in_errors_or_repr(hyperbolic, llm_server):
    llm_server.script(Fault(status=401, body=f"invalid key {KEY}", content_type="text/plain"))
    with pytest.raises(ProviderError) as caught:
        await hyperbolic.complete("hi")
    assert KEY not in caught.value.message and KEY not in repr(hyperbolic)
