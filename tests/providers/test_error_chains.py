"""A provider error carries no unmasked key anywhere in its exception chain (Dagster serialises
the chain of a failure into its event log)."""

import json
import traceback

import pytest

from study_query_dagster.providers import ProviderError, ProviderFactory
from study_query_dagster.providers.embeddings import create_embedding_provider
from tests.support.fake_llm_server import Fault

KEY = "sk-echoed-0123456789abcdef"


def echoing_401() -> Fault:
    body = {"error": {"message": f"Incorrect API key provided: {KEY}", "code": "invalid_api_key"}}
    return Fault(status=401, body=json.dumps(body))


def assert_no_key_in_chain(error: BaseException) -> None:
    text = "".join(traceback.format_exception(error))
    assert KEY not in text
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


@pytest.mark.parametrize("provider", ["openai", "azure", "hyperbolic"])
async def test_chat_provider_errors_hide_the_echoed_key(llm_server, provider):
    config = {
        "openai": {"api_key": KEY, "model": "m", "base_url": llm_server.openai_base_url},
        "azure": {"api_key": KEY, "endpoint": llm_server.url, "deployment_name": "d"},
        "hyperbolic": {"api_key": KEY, "model": "m", "base_url": llm_server.url},
    }[provider]
    llm_server.script(echoing_401())
    async with ProviderFactory.create(provider, **config) as client:
        with pytest.raises(ProviderError) as caught:
            await client.complete("hello")
    assert caught.value.error_type == "authentication" and "***" in caught.value.message
    assert_no_key_in_chain(caught.value)


async def test_embedding_provider_errors_hide_the_echoed_key(llm_server):
    client = create_embedding_provider("openai", api_key=KEY, base_url=llm_server.openai_base_url)
    llm_server.script(echoing_401())
    with pytest.raises(ProviderError) as caught:
        await client.embed(["text"], model="e")
    await client.aclose()
    assert_no_key_in_chain(caught.value)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"Retry-After": "nan"}, None),  # would make asyncio.sleep wait forever
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "soon"}, None),  # neither seconds nor a date
        ({"Retry-After": "-3"}, 0.0),
        ({"retry-after-ms": "nan", "Retry-After": "1"}, 1.0),
    ],
)
def test_retry_after_accepts_only_finite_seconds_or_dates(headers, expected):
    from study_query_dagster.providers.base import parse_retry_after

    assert parse_retry_after(headers) == expected


async def test_a_bad_retry_after_still_retries(llm_server):
    from study_query_dagster.services import InferenceService

    # A garbage header must not turn the 429 into a non-retryable error.
    llm_server.script(Fault(status=429, retry_after="soon"))
    provider = ProviderFactory.create(
        "openai", api_key="k", model="m", base_url=llm_server.openai_base_url
    )
    service = InferenceService(
        provider, None, initial_wait=0.01, max_wait=0.02, close_provider=True
    )
    async with service:
        result = await service.run_inference("hello")
    assert result["status"] == "success" and result["metadata"]["attempts"] == 2


@pytest.mark.parametrize("provider", ["openai", "azure", "hyperbolic"])
async def test_keys_are_stripped_and_inner_whitespace_refused(llm_server, provider):
    base = {
        "openai": {"model": "m", "base_url": llm_server.openai_base_url},
        "azure": {"endpoint": llm_server.url, "deployment_name": "d"},
        "hyperbolic": {"model": "m", "base_url": llm_server.url},
    }[provider]
    # A pasted key with a trailing newline works (an HTTP library would otherwise quote it
    # back, escaped and so unmasked, in its error message).
    async with ProviderFactory.create(provider, api_key=f"  {KEY}\n", **base) as client:
        assert (await client.complete("hi")).text
    sent = llm_server.requests[-1].headers
    assert KEY in (sent.get("authorization", "") + sent.get("api-key", ""))
    with pytest.raises(ValueError, match="contains whitespace") as caught:
        ProviderFactory.create(provider, api_key="sk-abc def", **base)
    assert "sk-abc" not in str(caught.value)
