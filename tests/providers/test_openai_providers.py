"""OpenAI and Azure OpenAI providers through the real openai SDK against the loopback server."""

import pytest

from study_query_dagster.providers import AzureOpenAIProvider, OpenAIProvider, ProviderError
from tests.support.fake_llm_server import Fault

KEY = "sk-test-openai-provider-0123456789"
# Generous: only the timeout test wants a client to give up, and it waits on a server that
# never answers, so no other test depends on how fast a busy machine answers.
PATIENT_S = 60.0


@pytest.fixture
async def openai_provider(llm_server):
    base_url = llm_server.openai_base_url
    async with OpenAIProvider(KEY, "gpt-4o-mini", base_url=base_url, timeout=PATIENT_S) as p:
        yield p


@pytest.fixture
async def azure_provider(llm_server):
    url = llm_server.url
    async with AzureOpenAIProvider(KEY, url, "my-deployment", "2024-10-21", timeout=PATIENT_S) as p:
        yield p


def make_provider(dialect: str, llm_server, timeout: float = PATIENT_S):
    if dialect == "openai":
        return OpenAIProvider(KEY, "m", base_url=llm_server.openai_base_url, timeout=timeout)
    return AzureOpenAIProvider(KEY, llm_server.url, "dep", timeout=timeout)


@pytest.fixture(params=["openai", "azure"])
async def any_provider(request, llm_server):
    async with make_provider(request.param, llm_server) as provider:
        yield provider


async def test_openai_sends_path_auth_and_body_and_parses_reply(openai_provider, llm_server):
    reply = await openai_provider.complete("What is 2 + 2?", temperature=0.3, seed=7)
    sent = llm_server.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body["model"] == "gpt-4o-mini"
    assert sent.body["messages"] == [{"role": "user", "content": "What is 2 + 2?"}]
    assert sent.body["temperature"] == 0.3 and sent.body["seed"] == 7
    assert reply.text == "echo: What is 2 + 2? [seed 7]"
    assert reply.provider == "openai" and reply.model == "gpt-4o-mini"
    assert (reply.prompt_tokens, reply.completion_tokens, reply.tokens) == (5, 8, 13)
    assert reply.finish_reason == "stop"
    assert reply.latency_ms > 0
    assert reply.metadata["response_id"].startswith("chatcmpl-fake-")
    assert reply.metadata["request_id"].startswith("req-")
    assert reply.raw_response["usage"]["total_tokens"] == 13


async def test_openai_messages_model_override_length_and_extra_body(openai_provider, llm_server):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one two three four five"},
    ]
    reply = await openai_provider.complete(messages=messages, model="gpt-4o", max_tokens=2, top_k=5)
    body = llm_server.requests[-1].body
    assert body["model"] == "gpt-4o" and body["messages"] == messages
    assert body["top_k"] == 5  # not an SDK argument: sent through extra_body
    assert reply.finish_reason == "length" and reply.completion_tokens == 2
    assert reply.text == "echo: one"


async def test_azure_sends_deployment_path_api_version_and_api_key(azure_provider, llm_server):
    reply = await azure_provider.complete("hello azure")
    sent = llm_server.requests[-1]
    assert sent.path == "/openai/deployments/my-deployment/chat/completions"
    assert sent.query["api-version"] == ["2024-10-21"]
    assert sent.headers["api-key"] == KEY
    assert "authorization" not in sent.headers
    assert reply.text == "echo: hello azure"
    assert reply.provider == "azure" and reply.model == "my-deployment"
    assert reply.tokens == reply.prompt_tokens + reply.completion_tokens == 2 + 3


@pytest.mark.parametrize(
    ("fault", "error_type", "status", "retryable", "retry_after"),
    [
        (Fault(status=429, retry_after=2), "rate_limit", 429, True, 2.0),
        (Fault(status=429, retry_after_ms=1500), "rate_limit", 429, True, 1.5),
        (Fault(status=503), "server_error", 503, True, None),
        (
            Fault(status=502, body="<html>Bad gateway</html>", content_type="text/html"),
            "server_error",
            502,
            True,
            None,
        ),
        (Fault(status=400), "bad_request", 400, False, None),
        (Fault(status=401), "authentication", 401, False, None),
        (Fault(status=404), "not_found", 404, False, None),
        (Fault(kind="content_filter"), "content_filter", 400, False, None),
        (Fault(kind="drop"), "connection", None, True, None),
        (Fault(kind="malformed"), "malformed_response", None, True, None),
    ],
)
async def test_failures_map_to_provider_error(
    any_provider, llm_server, fault, error_type, status, retryable, retry_after
):
    provider, dialect = any_provider, any_provider.get_provider_name()
    llm_server.script(fault)
    with pytest.raises(ProviderError) as caught:
        await provider.complete("hi")
    error = caught.value
    assert (error.error_type, error.status_code, error.retryable) == (error_type, status, retryable)
    assert error.retry_after == retry_after
    assert error.provider == dialect


@pytest.mark.parametrize("dialect", ["openai", "azure"])
async def test_a_server_that_never_answers_is_a_timeout(dialect, llm_server):
    llm_server.script(Fault(kind="hang", hang_s=None))
    with pytest.raises(ProviderError) as caught:
        async with make_provider(dialect, llm_server, timeout=0.5) as provider:
            await provider.complete("hi")
    error = caught.value
    assert (error.error_type, error.status_code, error.retryable) == ("timeout", None, True)


async def test_unknown_model_is_not_retryable(openai_provider, llm_server):
    llm_server.unknown_models = {"ghost"}
    with pytest.raises(ProviderError) as caught:
        await openai_provider.complete("hi", model="ghost")
    assert caught.value.error_type == "not_found" and not caught.value.retryable


async def test_key_echoed_in_an_error_body_is_scrubbed(openai_provider, llm_server):
    body = f'{{"error": {{"message": "Incorrect API key provided: {KEY}", "code": "invalid_api_key"}}}}'
    llm_server.script(Fault(status=401, body=body))
    with pytest.raises(ProviderError) as caught:
        await openai_provider.complete("hi")
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)
    assert "***" in caught.value.message
    assert KEY not in repr(openai_provider)


async def test_forbidden_params_are_refused_before_sending(openai_provider, llm_server):
    with pytest.raises(ValueError, match="api_key"):
        await openai_provider.complete("hi", api_key="other")
    with pytest.raises(ValueError, match="exactly one"):
        await openai_provider.complete("hi", messages=[{"role": "user", "content": "x"}])
    assert llm_server.count() == 0


def test_constructors_need_their_settings():
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIProvider("")
    with pytest.raises(ValueError, match="endpoint"):
        AzureOpenAIProvider("k", "", "dep")
