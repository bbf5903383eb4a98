"""Embedding clients: Azure OpenAI, OpenAI (or any OpenAI-compatible server) and an offline
feature-hashing embedder.

Every provider answers `await provider.embed(texts, model=..., dimensions=None,
encoding_format="float")` with an `EmbeddingResult`: a `list[list[float]]` (one vector per
input, in input order) that also carries `usage`, `model` and `latency_ms`. Failures are raised
as `ProviderError` (see `providers/base.py`); the SDK's own retries are switched off
(`max_retries=0`) because `EmbeddingService` owns the retry policy.

`create_embedding_provider(name, **config)` builds one by name; `embedding_provider_from_env()`
builds one from `Settings` (the same variables as the chat providers: one registry row each).
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from .azure import DEFAULT_API_VERSION
from .base import ProviderError, clean_api_key, error_from_openai, scrub_secrets

ENCODING_FORMATS = ("float", "base64")
# OpenAI's documented per-input limit for text-embedding-3-* and ada-002 (Azure serves the same).
OPENAI_EMBEDDING_TOKEN_LIMIT = 8191
OPENAI_REQUEST_TOKEN_LIMIT = 300_000
DEFAULT_TIMEOUT_S = 60.0


class EmbeddingResult(list):
    """The vectors of one `embed` call (a `list[list[float]]`), plus what the API reported."""

    def __init__(
        self,
        vectors: Sequence[Sequence[float]],
        *,
        model: str,
        usage: dict[str, int | None] | None = None,
        latency_ms: float | None = None,
        request_id: str | None = None,
        array: np.ndarray | None = None,
    ):
        super().__init__(vectors)
        # The same vectors as one float32 matrix, when the provider already built it.
        self.array = array
        self.model = model
        self.usage = usage or {"prompt_tokens": None, "total_tokens": None}
        self.latency_ms = latency_ms
        self.request_id = request_id

    @property
    def dimension(self) -> int | None:
        return len(self[0]) if self else None


def validate_embed_args(
    texts: Any, model: Any, dimensions: Any, encoding_format: Any, where: str = "embed"
) -> None:
    """Reject malformed arguments before anything is sent (ValueError naming the field)."""
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
        raise ValueError(
            f"{where}: `texts` must be a non-empty list of strings (got {texts!r:.80})"
        )
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: texts[{i}] must be a non-empty string (got {text!r:.80})")
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"{where}: `model` must be a non-empty string (got {model!r})")
    if dimensions is not None and (
        isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions <= 0
    ):
        raise ValueError(f"{where}: `dimensions` must be a positive integer (got {dimensions!r})")
    if encoding_format not in ENCODING_FORMATS:
        raise ValueError(
            f"{where}: `encoding_format` must be one of {', '.join(ENCODING_FORMATS)} "
            f"(got {encoding_format!r})"
        )


class BaseEmbeddingProvider(ABC):
    """An async embedding client. Use as `async with provider: ...` or call `aclose()`."""

    name: str = "embedding"
    # The model used when a caller names none (None: the caller must name one).
    default_model: str | None = None
    # Per-input token limit assumed for every model of this provider (None: no limit).
    default_token_limit: int | None = OPENAI_EMBEDDING_TOKEN_LIMIT
    # Tokens summed over one request's inputs (OpenAI: 300,000; None: no limit).
    max_request_tokens: int | None = OPENAI_REQUEST_TOKEN_LIMIT

    @abstractmethod
    async def embed(
        self,
        texts: Sequence[str],
        *,
        model: str,
        dimensions: int | None = None,
        encoding_format: str = "float",
    ) -> EmbeddingResult:
        """One API call embedding `texts`. Raises `ProviderError` on any failure."""

    def get_provider_name(self) -> str:
        return self.name

    async def aclose(self) -> None:  # noqa: B027 (optional hook)
        """Release network resources."""

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


class _OpenAISDKEmbeddingProvider(BaseEmbeddingProvider):
    """Shared call path for the two openai SDK clients (AsyncOpenAI, AsyncAzureOpenAI)."""

    _client: Any
    _secrets: tuple[str, ...] = ()  # masked in error messages: a server may echo the key

    async def embed(
        self,
        texts: Sequence[str],
        *,
        model: str,
        dimensions: int | None = None,
        encoding_format: str = "float",
    ) -> EmbeddingResult:
        validate_embed_args(texts, model, dimensions, encoding_format, f"{self.name}.embed")
        params: dict[str, Any] = {
            "input": list(texts),
            "model": model,
            # Always explicit: the SDK silently asks for base64 when this is omitted.
            "encoding_format": encoding_format,
        }
        if dimensions is not None:
            params["dimensions"] = dimensions
        started = time.perf_counter()
        try:
            raw = await self._client.embeddings.with_raw_response.create(**params)
            # Parsed as plain JSON: the SDK's model construction visits every float and costs
            # ~50x more than the decoding itself for a batch of 256 vectors.
            body = json.loads(raw.http_response.content)
        except Exception as exc:
            # `from None`: the SDK's exception may hold an echoed key; the mapped error says it all.
            raise scrub_secrets(error_from_openai(exc, self.name), self._secrets) from None
        latency_ms = (time.perf_counter() - started) * 1000
        request_id = raw.headers.get("x-request-id")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or len(data) != len(texts):
            got = len(data) if isinstance(data, list) else "no"
            raise ProviderError(
                f"{self.name}: asked for {len(texts)} embeddings, got {got}",
                self.name,
                retryable=True,
                error_type="malformed_response",
                request_id=request_id,
            )
        try:
            data = sorted(data, key=lambda d: d["index"])
            vectors = [_decode(d["embedding"]) for d in data]
            # One matrix: rejects ragged or non-numeric vectors, and the service reuses it.
            array = np.asarray(vectors, dtype=np.float32)
            if array.ndim != 2 or array.shape[1] == 0 or not np.all(np.isfinite(array)):
                raise ValueError("vectors must be equally long, non-empty and finite")
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderError(
                f"{self.name}: malformed embeddings response: {exc}",
                self.name,
                retryable=True,
                error_type="malformed_response",
                request_id=request_id,
            ) from exc
        usage = body.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return EmbeddingResult(
            vectors,
            model=body.get("model") or model,
            usage={
                "prompt_tokens": usage.get("prompt_tokens"),
                "total_tokens": usage.get("total_tokens"),
            },
            latency_ms=latency_ms,
            request_id=request_id,
            array=array,
        )

    async def aclose(self) -> None:
        await self._client.close()


def _decode(embedding: Any) -> Any:
    if isinstance(embedding, str):  # encoding_format="base64": little-endian float32
        return np.frombuffer(base64.b64decode(embedding, validate=True), dtype="<f4").tolist()
    return embedding


class OpenAIEmbeddingProvider(_OpenAISDKEmbeddingProvider):
    """OpenAI's embeddings API, or any OpenAI-compatible server through `base_url`.

    `name` overrides the provider name recorded with each call (and used in cache keys), so a
    local server (e.g. name="vllm") does not share cache entries with OpenAI's models.
    """

    name = "openai"
    default_model = "text-embedding-3-small"

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        *,
        organization: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        name: str | None = None,
        default_model: str | None = None,
        token_limit: int | None = OPENAI_EMBEDDING_TOKEN_LIMIT,
    ):
        import openai

        # A local OpenAI-compatible server that ignores keys accepts any non-empty value.
        api_key = clean_api_key(api_key, "openai embeddings", "OPENAI_API_KEY")
        self.name = name or self.name
        self.default_model = default_model or self.default_model
        self.default_token_limit = token_limit
        self.base_url = base_url
        self._secrets = (api_key,)
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            organization=organization,
            timeout=timeout,
            max_retries=0,
        )


class AzureEmbeddingProvider(_OpenAISDKEmbeddingProvider):
    """Azure OpenAI: `model` is the deployment name (routed to /openai/deployments/{model})."""

    name = "azure"

    def __init__(
        self,
        api_key: str,
        endpoint: str,
        api_version: str = DEFAULT_API_VERSION,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        default_model: str | None = None,
        token_limit: int | None = OPENAI_EMBEDDING_TOKEN_LIMIT,
    ):
        import openai

        api_key = clean_api_key(api_key, "azure embeddings", "AZURE_OPENAI_API_KEY")
        if not endpoint:
            raise ValueError(
                "azure embeddings need an endpoint (AZURE_OPENAI_ENDPOINT), "
                "e.g. https://your-resource.openai.azure.com"
            )
        if not api_version:
            raise ValueError("azure embeddings need an API version (AZURE_OPENAI_API_VERSION)")
        self.endpoint = endpoint
        self.default_model = default_model
        self.default_token_limit = token_limit
        self._secrets = (api_key,)
        self._client = openai.AsyncAzureOpenAI(
            api_key=api_key,
            azure_endpoint=endpoint,
            api_version=api_version,
            timeout=timeout,
            max_retries=0,
        )


# --- offline ---------------------------------------------------------------------------------

_WORD = re.compile(r"\w+")


def _feature_slot(feature: str, dimension: int) -> tuple[int, float]:
    # blake2b, not hash(): the same text must give the same vector in every process.
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    # The sign bit keeps collisions from only ever adding up (signed feature hashing).
    return value % dimension, (1.0 if value >> 63 else -1.0)


def hash_embedding(text: str, dimension: int) -> np.ndarray:
    """Word unigrams and bigrams (casefolded) hashed into `dimension` slots, L2-normalised.

    Texts that share words share slots, so their cosine similarity is higher. A text with no
    word characters is embedded by its whole content, so every non-empty text gets a unit vector.
    """
    words = _WORD.findall(text.casefold())
    features = words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
    if not features:
        features = [text.strip()]
    vector = np.zeros(dimension, dtype=np.float64)
    for feature in features:
        slot, sign = _feature_slot(feature, dimension)
        vector[slot] += sign
    norm = np.linalg.norm(vector)
    if norm == 0:  # every feature cancelled out: fall back to the text itself
        slot, sign = _feature_slot(text, dimension)
        vector[slot], norm = sign, 1.0
    return (vector / norm).astype(np.float32)


class OfflineEmbeddingProvider(BaseEmbeddingProvider):
    """Deterministic feature-hashing embedder: no network, no model download.

    It captures lexical overlap only (shared words and word pairs), which is what dry runs,
    tests and demos need; `dimensions` defaults to 256.
    """

    name = "offline"
    default_model = "offline-hash-v1"
    default_token_limit = None
    max_request_tokens = None

    def __init__(self, dimensions: int = 256, *, default_model: str | None = None):
        self.default_model = default_model or self.default_model
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions <= 0:
            raise ValueError(
                f"offline embeddings: `dimensions` must be a positive integer (got {dimensions!r})"
            )
        self.dimensions = dimensions

    async def embed(
        self,
        texts: Sequence[str],
        *,
        model: str = default_model,
        dimensions: int | None = None,
        encoding_format: str = "float",
    ) -> EmbeddingResult:
        validate_embed_args(texts, model, dimensions, encoding_format, "offline.embed")
        started = time.perf_counter()
        size = dimensions or self.dimensions
        array = np.vstack([hash_embedding(text, size) for text in texts])
        tokens = sum(len(_WORD.findall(text)) for text in texts)
        return EmbeddingResult(
            array.tolist(),
            array=array,
            model=model,
            usage={"prompt_tokens": tokens, "total_tokens": tokens},
            latency_ms=(time.perf_counter() - started) * 1000,
        )


# --- by name (the rows are in registry.py, which imports the classes above) -----------------


def _embedding_row(name: str):
    from .registry import EMBEDDING_PROVIDERS, PROVIDERS

    if name not in EMBEDDING_PROVIDERS:
        raise ValueError(
            f"unknown embedding provider {name!r}; known: {', '.join(sorted(EMBEDDING_PROVIDERS))}"
        )
    return PROVIDERS[name]


def create_embedding_provider(name: str, /, **config: Any) -> BaseEmbeddingProvider:
    """An embedding provider by name ("azure", "openai", "offline", ...) with its constructor's
    arguments. Unknown names or arguments raise ValueError listing what is accepted."""
    cls = _embedding_row(name).embedding
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(config) - set(accepted))
    if unknown:
        raise ValueError(
            f"embedding provider {name!r}: unknown option(s) {unknown}; accepted: {accepted}"
        )
    return cls(**config)


def embedding_provider_from_env(
    name: str | None = None, settings: Any = None, **overrides: Any
) -> BaseEmbeddingProvider:
    """A provider configured from `Settings` (environment / .env); `overrides` win.

    The provider's variables are those of its registry row (azure: AZURE_OPENAI_API_KEY,
    AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_VERSION; openai: OPENAI_API_KEY, OPENAI_BASE_URL,
    OPENAI_ORGANIZATION; offline: none), plus LLM_TIMEOUT_S. `name` defaults to
    EMBEDDING_PROVIDER, the default model to EMBEDDING_MODEL. A missing required variable
    raises ValueError naming it, before any call is made.
    """
    from ..config import get_settings
    from .registry import accepted, settings_args

    s = settings or get_settings()
    name = name or s.embedding_provider
    row = _embedding_row(name)
    config = settings_args(row, s, row.embedding)
    if s.embedding_model:
        config.update(accepted(row.embedding, {"default_model": s.embedding_model}))
    config.update(overrides)
    missing = [row.env_vars[arg] for arg in row.required_settings if not config.get(arg)]
    if missing:
        raise ValueError(f"embedding provider {name!r} needs {' and '.join(missing)} to be set")
    return create_embedding_provider(name, **config)
