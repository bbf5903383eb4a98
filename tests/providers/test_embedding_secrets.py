"""A key echoed by the server in an error body is masked in the embedding providers' errors (as
in the chat providers'), so it cannot reach raw_calls or a log line through a retried error."""

import pytest

from study_query_dagster.providers.base import ProviderError
from study_query_dagster.providers.embeddings import AzureEmbeddingProvider, OpenAIEmbeddingProvider
from tests.support.fake_llm_server import Fault

KEY = "sk-embed-echo-0123456789abcdef"


def echo(status: int) -> Fault:
    return Fault(
        status=status,
        body='{"error": {"message": "Incorrect API key provided: '
        + KEY
        + '", "code": "invalid_api_key"}}',
    )


@pytest.mark.parametrize("status", [401, 500])
@pytest.mark.parametrize("dialect", ["openai", "azure"])
async def test_key_echoed_in_an_error_body_is_masked(dialect, status, llm_server):
    if dialect == "openai":
        provider = OpenAIEmbeddingProvider(KEY, llm_server.openai_base_url)
    else:
        provider = AzureEmbeddingProvider(KEY, llm_server.url, "2024-10-21")
    llm_server.script(echo(status))
    async with provider:
        with pytest.raises(ProviderError) as caught:
            await provider.embed(["some text"], model="text-embedding-3-small")
    error = caught.value
    assert error.status_code == status and "Incorrect API key provided: ***" in error.message
    assert KEY not in str(error) and KEY not in repr(error) and KEY not in str(error.to_dict())
