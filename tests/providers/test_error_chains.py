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
