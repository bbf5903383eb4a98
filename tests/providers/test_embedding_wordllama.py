"""The wordllama embedder: loaded from its wheel with the network blocked, it tells paraphrases
from unrelated texts (what the hash embedder cannot), and serves through EmbeddingService and
the provider registry like any other embedder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from study_query_dagster.config import Settings
from study_query_dagster.providers.base import ProviderError
from study_query_dagster.providers.embeddings import (
    OfflineEmbeddingProvider,
    create_embedding_provider,
)
from study_query_dagster.providers.registry import EMBEDDING_PROVIDERS
from study_query_dagster.providers.wordllama_embeddings import MODEL, WordLlamaEmbeddingProvider
from study_query_dagster.services.embeddings import EmbeddingService

ROOT = Path(__file__).resolve().parents[2]

ANSWER = "The capital of France is Paris."
PARAPHRASES = [
    "Paris is the capital city of France.",
    "France's capital is Paris.",
    "The French capital is Paris.",
]
UNRELATED = [
    "Photosynthesis turns sunlight into chemical energy.",
    "I would like two bananas for breakfast, please.",
    "The match ended in a draw after extra time.",
]

# Run in a fresh interpreter, with every way out of the machine closed before wordllama is
# imported, and an empty HOME so that no download cache can stand in for the wheel.
OFFLINE_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, logging, socket, sys

    attempts = []

    def blocked(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network access is blocked in this test")

    socket.socket.connect = blocked
    socket.socket.connect_ex = blocked
    socket.create_connection = blocked
    socket.getaddrinfo = blocked

    from study_query_dagster.providers.wordllama_embeddings import WordLlamaEmbeddingProvider

    texts = json.loads(sys.argv[1])
    result = asyncio.run(WordLlamaEmbeddingProvider().embed(texts))
    print(json.dumps({
        "vectors": result.array.tolist(),
        "attempts": attempts,
        "root_handlers": len(logging.getLogger().handlers),
    }))
    """
)


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_loads_from_the_wheel_with_the_network_blocked_and_ranks_paraphrases_first(tmp_path):
    texts = [ANSWER, *PARAPHRASES, *UNRELATED]
    env = {**os.environ, "HOME": str(tmp_path), "HF_HUB_OFFLINE": "0"}
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT, json.dumps(texts)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["attempts"] == []  # nothing even tried to connect
    assert out["root_handlers"] == 0  # wordllama's logging.basicConfig() was undone
    assert not (tmp_path / ".cache").exists()  # and nothing was downloaded
    vectors = out["vectors"]
    assert all(len(v) == 256 and abs(np.linalg.norm(v) - 1) < 1e-5 for v in vectors)
    similar = [cosine(vectors[0], v) for v in vectors[1:4]]
    different = [cosine(vectors[0], v) for v in vectors[4:]]
    # Every paraphrase is closer than every unrelated text, by a wide margin.
    assert min(similar) > 0.85 and max(different) < 0.3, (similar, different)


async def test_paraphrases_are_one_answer_to_wordllama_and_several_to_the_hash_embedder():
    # Why wordllama is the default: at a clustering cut of 0.15 cosine distance, word overlap
    # splits paraphrases of one answer into different answers; the semantic model does not.
    # (Neither knows negation: "Paris is not the capital" is close to the answer in both.)
    texts = [ANSWER, *PARAPHRASES]
    hashed = (await OfflineEmbeddingProvider().embed(texts)).array
    semantic = (await WordLlamaEmbeddingProvider().embed(texts)).array
    assert all(1 - cosine(hashed[0], v) > 0.15 for v in hashed[1:])
    assert all(1 - cosine(semantic[0], v) < 0.15 for v in semantic[1:])


async def test_dimensions_are_the_shipped_256_or_a_trained_prefix():
    provider = WordLlamaEmbeddingProvider()
    full = (await provider.embed([ANSWER])).array[0]
    for size in (64, 128):
        prefix = (await provider.embed([ANSWER], dimensions=size)).array[0]
        assert prefix.shape == (size,) and abs(np.linalg.norm(prefix) - 1) < 1e-5
        # A prefix of the same averaged vector, renormalised.
        np.testing.assert_allclose(prefix, full[:size] / np.linalg.norm(full[:size]), atol=1e-5)
    with pytest.raises(ProviderError, match=r"dimensions must be one of \(64, 128, 256\)") as bad:
        await provider.embed([ANSWER], dimensions=100)
    assert bad.value.status_code == 400 and not bad.value.retryable
    with pytest.raises(ProviderError, match="unknown model") as unknown:
        await provider.embed([ANSWER], model="text-embedding-3-small")
    assert unknown.value.status_code == 404


def test_it_is_a_registry_row_and_the_default_embedder():
    assert "wordllama" in EMBEDDING_PROVIDERS and "offline" in EMBEDDING_PROVIDERS
    assert isinstance(create_embedding_provider("wordllama"), WordLlamaEmbeddingProvider)
    assert isinstance(create_embedding_provider("offline"), OfflineEmbeddingProvider)
    defaults = Settings.model_fields["embedding_provider"].default
    assert defaults == "wordllama"


async def test_through_the_service_cached_and_searchable(db):
    async with EmbeddingService(db, WordLlamaEmbeddingProvider()) as svc:
        fresh = await svc.get_embeddings_batch([ANSWER, *PARAPHRASES, *UNRELATED])
        again = await svc.get_embeddings_batch([ANSWER])
        hits = await svc.similar("Which city is the capital of France? Paris.", k=4)
        [wrong] = await svc.get_embeddings_batch([ANSWER], model="text-embedding-3-small")
    assert all(r.ok and r.dimension == 256 and r.model == MODEL for r in fresh)
    assert again[0].cached and svc.stats["api_calls"] == 3  # batch, similar's query, the 404
    assert {h.text for h in hits} == {ANSWER, *PARAPHRASES}
    assert wrong.error.kind == "invalid_deployment"
