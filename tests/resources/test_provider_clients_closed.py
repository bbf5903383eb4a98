"""A service from LLMProvidersResource owns its provider's HTTP client and closes it: left open,
the client is collected later inside another step's event loop, and asyncio logs "Task exception
was never retrieved ... Event loop is closed" in the run's logs."""

import asyncio
import gc

from study_query_dagster.providers import OpenAIProvider
from study_query_dagster.resources.providers import LLMProvidersResource, ProviderSettings
from study_query_dagster.services import InferenceService


def test_a_resource_service_closes_its_client_so_later_loops_stay_clean(llm_server):
    llm = LLMProvidersResource(
        openai=ProviderSettings(api_key="sk-test-fake", base_url=llm_server.openai_base_url)
    )

    async def one_step():
        async with llm.create_service("openai", "gpt-4o-mini", None) as service:
            await service.run_inference("hello")
        return service

    service = asyncio.run(one_step())  # as inference_run runs its calls
    assert service.provider._client.is_closed()

    unhandled = []

    async def next_step():  # as response_embeddings does, in the same process
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: unhandled.append(ctx))
        del service.provider  # the only reference: the client is collected here
        gc.collect()
        await asyncio.sleep(0)

    asyncio.run(next_step())
    assert [c["message"] for c in unhandled] == []


async def test_a_service_around_the_callers_provider_leaves_it_open(llm_server):
    async with OpenAIProvider(
        "sk-test-fake", "gpt-4o-mini", base_url=llm_server.openai_base_url
    ) as provider:
        async with InferenceService(provider) as service:
            await service.run_inference("hello")
        assert not provider._client.is_closed()
        assert (await provider.complete("again")).text == "echo: again"
