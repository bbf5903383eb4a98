"""Embedding providers through the real openai SDK against the loopback fake server, and the
offline feature-hashing embedder."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from study_query_dagster.config import Settings
from study_query_dagster.providers.base import ProviderError
from study_query_dagster.providers.embeddings import (
    AzureEmbeddingProvider,
    EmbeddingResult,
    OfflineEmbeddingProvider,
    OpenAIEmbeddingProvider,
    create_embedding_provider,
    embedding_provider_from_env,
    hash_embedding,
)
from study_query_dagster.providers.wordllama_embeddings import WordLlamaEmbeddingProvider
from tests.support.fake_llm_server import Fault, fake_embedding

KEY = "sk-test-embeddings-0123456789"


def cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture
async def openai_provider(llm_server):
    async with OpenAIEmbeddingProvider(KEY, llm_server.openai_base_url) as provider:
        yield provider


# --- openai / azure -------------------------------------------------------------------------


async def test_openai_embeds_in_order_with_usage_and_explicit_float_format(
    llm_server, openai_provider
):
    result = await openai_provider.embed(["one two", "three"], model="text-embedding-3-small")

    assert isinstance(result, EmbeddingResult) and isinstance(result, list)
    assert result == [
        pytest.approx(fake_embedding("one two", 16)),
        pytest.approx(fake_embedding("three", 16)),
    ]
    assert result.dimension == 16
    assert result.model == "text-embedding-3-small"
    assert result.usage == {"prompt_tokens": 3, "total_tokens": 3}
    assert result.request_id and result.latency_ms > 0
    [request] = llm_server.requests
    assert request.path == "/v1/embeddings"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    # The SDK would ask for base64 if the format were left out.
    assert request.body["encoding_format"] == "float"
    assert "dimensions" not in request.body


async def test_base64_format_decodes_to_the_same_float32_vectors(llm_server, openai_provider):
    as_float = await openai_provider.embed(["alpha beta"], model="m", dimensions=8)
    as_base64 = await openai_provider.embed(
        ["alpha beta"], model="m", dimensions=8, encoding_format="base64"
    )
    assert [r.body["encoding_format"] for r in llm_server.requests] == ["float", "base64"]
    assert [r.body["dimensions"] for r in llm_server.requests] == [8, 8]
    assert np.array_equal(
        np.asarray(as_float, dtype=np.float32), np.asarray(as_base64, dtype=np.float32)
    )


async def test_azure_routes_the_deployment_with_api_key_and_version(llm_server):
    provider = AzureEmbeddingProvider(KEY, llm_server.url, "2024-10-21")
    async with provider:
        result = await provider.embed(["hello world"], model="my-embed-deploy", dimensions=4)
    assert result == [pytest.approx(fake_embedding("hello world", 4))]
    [request] = llm_server.requests
    assert request.path == "/openai/deployments/my-embed-deploy/embeddings"
    assert request.headers["api-key"] == KEY
    assert request.query["api-version"] == ["2024-10-21"]
    assert request.body["encoding_format"] == "float"


@pytest.mark.parametrize(
    ("fault", "error_type", "retryable", "status"),
    [
        (Fault(status=429, retry_after=7), "rate_limit", True, 429),
        (Fault(status=502), "server_error", True, 502),
        (Fault(kind="drop"), "connection", True, None),
        (Fault(status=400), "bad_request", False, 400),
        (Fault(kind="malformed"), "malformed_response", True, None),
        (
            Fault(kind="status", status=200, body='{"data": [{"index": 0, "embedding": ["x"]}]}'),
            "malformed_response",
            True,
            None,
        ),
        (Fault(kind="status", status=200, body='{"data": []}'), "malformed_response", True, None),
    ],
)
async def test_failures_map_to_provider_error_after_exactly_one_request(
    llm_server, openai_provider, fault, error_type, retryable, status
):
    llm_server.script(fault, match="embeddings")
    with pytest.raises(ProviderError) as caught:
        await openai_provider.embed(["x"], model="m")
    error = caught.value
    assert (error.error_type, error.retryable, error.status_code) == (error_type, retryable, status)
    if status == 429:
        assert error.retry_after == 7
    # max_retries=0: retrying is the service's job, the SDK sends one request.
    assert llm_server.count("embeddings") == 1


async def test_unknown_model_is_a_not_found_error(llm_server, openai_provider):
    llm_server.unknown_models = {"nope"}
    with pytest.raises(ProviderError) as caught:
        await openai_provider.embed(["x"], model="nope")
    assert caught.value.status_code == 404 and caught.value.error_type == "not_found"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"texts": []}, "non-empty list"),
        ({"texts": "just a string"}, "non-empty list"),
        ({"texts": ["ok", 3]}, "texts[1]"),
        ({"texts": ["ok", "  "]}, "texts[1]"),
        ({"texts": ["ok"], "model": ""}, "`model`"),
        ({"texts": ["ok"], "dimensions": 0}, "`dimensions`"),
        ({"texts": ["ok"], "encoding_format": "int8"}, "`encoding_format`"),
    ],
)
async def test_bad_arguments_fail_before_any_request(llm_server, openai_provider, kwargs, message):
    args = {"model": "m", **kwargs}
    texts = args.pop("texts")
    with pytest.raises(ValueError, match=re.escape(message)):
        await openai_provider.embed(texts, **args)
    assert llm_server.count() == 0


def test_constructors_refuse_missing_configuration():
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIEmbeddingProvider("")
    with pytest.raises(ValueError, match="AZURE_OPENAI_ENDPOINT"):
        AzureEmbeddingProvider(KEY, "", "2024-10-21")
    with pytest.raises(ValueError, match="AZURE_OPENAI_API_KEY"):
        AzureEmbeddingProvider("", "https://x.openai.azure.com", "2024-10-21")


# --- offline --------------------------------------------------------------------------------


async def test_offline_vectors_are_unit_length_deterministic_and_sized():
    provider = OfflineEmbeddingProvider()
    result = await provider.embed(["the cat sat on the mat", "?!"], model="offline-hash-v1")
    assert [len(v) for v in result] == [256, 256]
    assert [np.linalg.norm(v) for v in result] == [pytest.approx(1.0), pytest.approx(1.0)]
    again = await provider.embed(["the cat sat on the mat"], model="offline-hash-v1")
    assert again[0] == result[0]
    assert len((await provider.embed(["x y"], model="m", dimensions=32))[0]) == 32
    assert result.usage["prompt_tokens"] == 6
    assert provider.default_token_limit is None


def test_offline_vectors_are_the_same_in_another_process():
    # blake2b, not Python's salted hash(): a fresh interpreter must give the same vector.
    code = (
        "from study_query_dagster.providers.embeddings import hash_embedding;"
        "print(hash_embedding('Reproducible across processes', 64).tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert eval(out.stdout) == hash_embedding("Reproducible across processes", 64).tolist()


def test_offline_texts_sharing_words_are_measurably_closer():
    base = "the quick brown fox jumps over the lazy dog"
    related = "a quick brown fox leaped over a sleeping dog"  # 5 words and 2 word pairs shared
    unrelated = "completely different words entirely here"
    v = {t: hash_embedding(t, 256) for t in (base, related, unrelated)}
    assert cosine(v[base], v[related]) > 0.3
    assert abs(cosine(v[base], v[unrelated])) < 0.15
    # Over many random pairs, sharing words means higher similarity, never by accident.
    rng = np.random.default_rng(7)
    vocabulary = [f"w{i}" for i in range(2000)]
    sharing, disjoint = [], []
    for _ in range(300):
        a, b, c = (list(rng.choice(vocabulary, 8, replace=False)) for _ in range(3))
        b[:4] = a[:4]  # b shares four words with a; c almost surely shares none
        sharing.append(cosine(hash_embedding(" ".join(a), 256), hash_embedding(" ".join(b), 256)))
        disjoint.append(cosine(hash_embedding(" ".join(a), 256), hash_embedding(" ".join(c), 256)))
    assert np.mean(sharing) > np.mean(disjoint) + 0.3
    assert np.mean(sharing) > np.percentile(disjoint, 99)
    # Bigrams make word order count, a little.
    assert cosine(hash_embedding("dog bites man", 256), hash_embedding("man bites dog", 256)) < 1
    # Case and punctuation do not.
    assert hash_embedding("The Cat!", 256).tolist() == hash_embedding("the cat", 256).tolist()


# --- factory --------------------------------------------------------------------------------


def test_factory_builds_by_name_and_names_what_is_wrong(llm_server):
    assert isinstance(create_embedding_provider("offline", dimensions=64), OfflineEmbeddingProvider)
    provider = create_embedding_provider(
        "openai", api_key=KEY, base_url=llm_server.openai_base_url, name="vllm"
    )
    assert provider.get_provider_name() == "vllm"
    with pytest.raises(
        ValueError, match=r"unknown embedding provider 'cohere'.*azure, offline, openai"
    ):
        create_embedding_provider("cohere")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['dimension'\]"):
        create_embedding_provider("offline", dimension=64)


async def test_from_env_reads_the_chat_providers_variables(llm_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", llm_server.openai_base_url)
    monkeypatch.setenv("EMBEDDING_MODEL", "text-embedding-3-large")
    provider = embedding_provider_from_env("openai", Settings(_env_file=None))
    assert provider.default_model == "text-embedding-3-large"
    async with provider:
        await provider.embed(["via env"], model=provider.default_model)
    assert llm_server.requests[0].headers["authorization"] == f"Bearer {KEY}"

    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", llm_server.url)
    monkeypatch.setenv("AZURE_OPENAI_API_VERSION", "2024-06-01")
    azure = embedding_provider_from_env("azure", Settings(_env_file=None))
    async with azure:
        await azure.embed(["via env"], model="embed-deploy")
    assert llm_server.requests[1].query["api-version"] == ["2024-06-01"]


def test_from_env_names_the_missing_variable(monkeypatch):
    for var in (
        "OPENAI_API_KEY",
        "AZURE_OPENAI_API_KEY",
        "AZURE_OPENAI_ENDPOINT",
        "EMBEDDING_PROVIDER",
        "EMBEDDING_MODEL",
    ):
        monkeypatch.delenv(var, raising=False)
    settings = Settings(_env_file=None)
    with pytest.raises(ValueError, match="needs OPENAI_API_KEY"):
        embedding_provider_from_env("openai", settings)
    with pytest.raises(ValueError, match="needs AZURE_OPENAI_API_KEY and AZURE_OPENAI_ENDPOINT"):
        embedding_provider_from_env("azure", settings)
    # With nothing configured the default is the offline semantic embedder.
    assert isinstance(embedding_provider_from_env(settings=settings), WordLlamaEmbeddingProvider)
    assert isinstance(embedding_provider_from_env("offline", settings), OfflineEmbeddingProvider)
