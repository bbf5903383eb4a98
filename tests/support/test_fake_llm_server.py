"""The fake server itself, driven by the real clients (so the other tests can trust it)."""

import asyncio

import httpx
import openai
import pytest

from tests.support.fake_llm_server import Fault


async def test_openai_client_chat_and_embeddings(llm_server):
    client = openai.AsyncOpenAI(api_key="k", base_url=llm_server.openai_base_url, max_retries=0)
    chat = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello there"}]
    )
    assert chat.choices[0].message.content == "echo: hello there"
    assert chat.usage.total_tokens == 2 + 3
    emb = await client.embeddings.create(model="e", input=["a b", "c"], dimensions=8)
    assert [len(d.embedding) for d in emb.data] == [8, 8]  # base64 by default, decoded by SDK
    assert llm_server.requests[1].body["encoding_format"] == "base64"
    await client.close()


async def test_azure_client_paths_and_faults(llm_server):
    client = openai.AsyncAzureOpenAI(
        api_key="k", azure_endpoint=llm_server.url, api_version="2024-10-21", max_retries=0
    )
    llm_server.script(Fault(status=429, retry_after=2))
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(
            model="dep", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.response.headers["retry-after"] == "2"
    reply = await client.chat.completions.create(
        model="dep", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.model == "dep"
    assert [r.path for r in llm_server.requests] == ["/openai/deployments/dep/chat/completions"] * 2
    assert llm_server.requests[0].headers["api-key"] == "k"
    assert llm_server.requests[0].query["api-version"] == ["2024-10-21"]
    await client.close()


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault(kind="drop"), httpx.RemoteProtocolError),
        (Fault(kind="hang", hang_s=None), httpx.ReadTimeout),  # never answers
    ],
)
async def test_transport_faults(llm_server, fault, error):
    llm_server.script(fault)
    async with httpx.AsyncClient(timeout=0.5) as client:
        with pytest.raises(error):
            await client.post(f"{llm_server.url}/v1/chat/completions", json={"model": "m"},
                              headers={"Authorization": "Bearer k"})  # fmt: skip


async def test_auth_and_unknown_model(llm_server):
    llm_server.unknown_models = {"ghost"}
    async with httpx.AsyncClient() as client:
        url = f"{llm_server.url}/v1/chat/completions"
        assert (await client.post(url, json={"model": "m"})).status_code == 401
        response = await client.post(
            url, json={"model": "ghost"}, headers={"Authorization": "Bearer k"}
        )
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"
    assert llm_server.count("/chat/completions", succeeded=False) == 2


async def test_a_hold_answers_matching_requests_only_once_its_condition_holds(llm_server):
    llm_server.hold(until=lambda requests: len(requests) >= 2, match="embeddings")
    async with httpx.AsyncClient(base_url=llm_server.openai_base_url) as client:

        def embed(text):
            body = {"model": "e", "input": [text]}
            headers = {"Authorization": "Bearer k"}
            return asyncio.create_task(client.post("/embeddings", json=body, headers=headers))

        first = embed("one")
        while llm_server.count("embeddings") < 1:
            await asyncio.sleep(0.01)
        # Received and held: a request that does not match is answered meanwhile.
        chat = await client.post(
            "/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": "Bearer k"},
        )
        assert chat.status_code == 200 and not first.done()
        second = embed("two")
        replies = await asyncio.gather(first, second)
    assert [r.status_code for r in replies] == [200, 200]
    assert llm_server.count("embeddings") == 2
