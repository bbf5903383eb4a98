"""`EmbeddingService`: the front door. It checks a call's arguments, prepares the items, asks the
cache, sends the misses and answers one `EmbeddingResponse` per item; each step is its own
module of this package."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ...db import DatabaseConnection
from ...log import get_logger
from ...providers.embeddings import BaseEmbeddingProvider
from ..request_identity import embedding_request_hash
from ..retry import RetryPolicy
from .batching import BatchEmbedder
from .cache import EmbeddingCache
from .calls import EmbeddingCaller
from .capture import CallCapture
from .deployments import Deployments
from .models import (
    CacheEntry,
    EmbeddingError,
    EmbeddingRequest,
    EmbeddingResponse,
    PreparedItem,
    RequestKey,
    SimilarEmbedding,
)
from .requests import (
    RequestPreparer,
    check_dimensions,
    check_format,
    check_metadata,
    check_model,
    utf8_token_bound,
)
from .retrying import DEFAULT_RETRY
from .similarity import SimilaritySearch, query_vector

logger = get_logger(__name__)

DEFAULT_MAX_BATCH_SIZE = 256
# OpenAI accepts at most 2048 inputs per embeddings request.
MAX_INPUTS_PER_CALL = 2048
PROBE_TEXT = "deployment probe"


class EmbeddingService:
    """Embeddings for one provider, cached in the v2 database.

    `model`, `dimensions` and `encoding_format` are defaults that each call (or
    `EmbeddingRequest`) may override. `token_limits` maps a model to its per-input limit (the
    provider's default otherwise: 8191 for OpenAI/Azure, none offline); `token_counter` counts a
    text's tokens (default `utf8_token_bound`, an over-estimate that needs no downloads);
    `truncate` cuts over-long texts instead of failing them. A call carries at most
    `max_batch_size` inputs and `max_tokens_per_call` counted tokens (default: the provider's
    request limit, 300,000 for OpenAI/Azure). `retry` is the retry policy (default
    `DEFAULT_RETRY`: 6 attempts, 1 to 30 s). `group_id` and `metadata` (seed, library
    versions, ...) are provenance stored with every call. Use one service per event loop.
    """

    def __init__(
        self,
        db: DatabaseConnection,
        provider: BaseEmbeddingProvider,
        *,
        model: str | None = None,
        dimensions: int | None = None,
        encoding_format: str = "float",
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_tokens_per_call: int | None = None,
        concurrency: int = 4,
        cache_size: int = 50_000,
        retry: RetryPolicy | None = None,
        token_limits: Mapping[str, int | None] | None = None,
        token_counter: Callable[[str], int] = utf8_token_bound,
        truncate: bool = False,
        group_id: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ):
        where = "EmbeddingService"
        model = model or provider.default_model
        if not isinstance(model, str) or not model.strip():
            raise ValueError(
                f"{where}: `model` is required for provider {provider.get_provider_name()!r} "
                f"(got {model!r}); for azure it is the deployment name"
            )
        check_dimensions(dimensions, where)
        check_format(encoding_format, where)
        check_metadata(metadata, where)
        if not isinstance(max_batch_size, int) or not 1 <= max_batch_size <= MAX_INPUTS_PER_CALL:
            raise ValueError(
                f"{where}: `max_batch_size` must be 1..{MAX_INPUTS_PER_CALL} "
                f"(got {max_batch_size!r})"
            )
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"{where}: `concurrency` must be >= 1 (got {concurrency!r})")
        for name, limit in (token_limits or {}).items():
            if limit is not None and (not isinstance(limit, int) or limit <= 0):
                raise ValueError(
                    f"{where}: token_limits[{name!r}] must be a positive integer or None "
                    f"(got {limit!r})"
                )
        self.db = db
        self.provider = provider
        self.provider_name = provider.get_provider_name()
        self.model = model
        self.dimensions = dimensions
        self.encoding_format = encoding_format
        self.truncate = truncate
        self.group_id = group_id
        self.metadata = dict(metadata or {})
        self.retry = retry or DEFAULT_RETRY
        max_tokens_per_call = max_tokens_per_call or provider.max_request_tokens
        self.preparer = RequestPreparer(
            self.provider_name,
            provider.default_token_limit,
            dict(token_limits or {}),
            token_counter,
            count_tokens=max_tokens_per_call is not None,
        )
        self.cache = EmbeddingCache(db, self.retry, cache_size)
        self.caller = EmbeddingCaller(provider, self.retry, concurrency)
        self.capture = CallCapture(db, self.provider_name, self.retry)
        self.deployments = Deployments(self.provider_name)
        self.embedder = BatchEmbedder(
            self.caller,
            self.capture,
            self.deployments,
            max_inputs=max_batch_size,
            max_tokens=max_tokens_per_call,
        )
        self.search = SimilaritySearch(db)
        self._known_groups: set[int] = set()
        self._misses = 0

    @property
    def stats(self) -> dict[str, int]:
        """API attempts, LRU hits, database hits and misses over the service's life."""
        return {
            "api_calls": self.caller.attempts,
            **self.cache.stats,
            "misses": self._misses,
        }

    async def aclose(self) -> None:
        await self.provider.aclose()

    async def __aenter__(self) -> EmbeddingService:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    # --- public API ------------------------------------------------------------------------

    async def get_embedding(
        self, text: str | EmbeddingRequest, **options: Any
    ) -> EmbeddingResponse:
        """One embedding (cached), with `get_embeddings_batch`'s keyword options. Raises
        `EmbeddingError` if the item fails."""
        [response] = await self.get_embeddings_batch([text], **options)
        if response.error is not None:
            raise response.error
        return response

    async def get_embeddings_batch(
        self,
        items: Sequence[str | EmbeddingRequest],
        *,
        model: str | None = None,
        dimensions: int | None = None,
        encoding_format: str | None = None,
        truncate: bool | None = None,
        group_id: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[EmbeddingResponse]:
        """One response per item, in order: a vector or an error. Never aborts the batch for an
        item's sake; malformed arguments of the call itself raise ValueError before any call."""
        where = "get_embeddings_batch"
        if isinstance(items, str) or not isinstance(items, Sequence):
            raise ValueError(
                f"{where}: `items` must be a list of texts (got {type(items).__name__})"
            )
        if model is not None:
            check_model(model, where)
        check_dimensions(dimensions, where)
        if encoding_format is not None:
            check_format(encoding_format, where)
        check_metadata(metadata, where)
        group_id = group_id if group_id is not None else self.group_id
        await self._check_group(group_id)
        provenance = {"group_id": group_id, "caller": {**self.metadata, **(metadata or {})}}
        started = time.perf_counter()
        defaults = self._defaults(model, dimensions, encoding_format, truncate)
        prepared = self.preparer.prepare_all(items, defaults)
        valid = [p for p in prepared if p.error is None]
        hashes = [p.request_hash for p in valid]

        found, lookup = self.cache.from_lru(hashes)
        models = {p.request_hash: p.key.model for p in valid}
        try:
            stored = await self.cache.from_db({h: models[h] for h in lookup})
        except Exception as exc:  # the database stayed unreachable through the retries
            logger.exception("embedding cache lookup failed; no API call made")
            error = EmbeddingError("storage_error", f"the cache lookup failed: {exc}")
            failed = dict.fromkeys(lookup, error)
            return [self._respond(p, found, failed, found.keys()) for p in prepared]
        found.update(stored)
        cached = set(found)

        misses: dict[RequestKey, dict[str, PreparedItem]] = {}
        for item in valid:
            if item.request_hash not in found:
                misses.setdefault(item.key, {}).setdefault(item.request_hash, item)
        self._misses += sum(len(m) for m in misses.values())
        failures: dict[str, EmbeddingError] = {}
        outcomes = await asyncio.gather(
            *(self.embedder.embed(key, list(m.values()), provenance) for key, m in misses.items())
        )
        fresh = 0
        for got, failed in outcomes:
            self.cache.remember(got)
            found.update(got)
            failures.update(failed)
            fresh += len(got)

        responses = [self._respond(p, found, failures, cached) for p in prepared]
        logger.info(
            "embedding batch provider=%s: %d items, %d cached, %d embedded, %d errors in %.0f ms",
            self.provider_name,
            len(items),
            len(cached),
            fresh,
            sum(1 for r in responses if r.error is not None),
            (time.perf_counter() - started) * 1000,
        )
        return responses

    def request_hashes(
        self, texts: Sequence[str], *, model: str | None = None, truncate: bool | None = None
    ) -> list[str | None]:
        """The cache identity each text would have in `get_embeddings_batch` (after
        normalisation and truncation), without any call; None for a text that would be refused."""
        defaults = self._defaults(model, None, None, truncate)
        return [p.request_hash for p in self.preparer.prepare_all(texts, defaults)]

    async def filter_valid_deployments(self, models: Iterable[str]) -> list[str]:
        """The models (deployments) of this provider that answer an embedding probe, in input
        order. Each is probed once per service; both outcomes are remembered."""
        valid = []
        for model in dict.fromkeys(models):
            if await self._validate_deployment(model):
                valid.append(model)
        return valid

    async def similar(
        self,
        text_or_vector: str | Sequence[float] | np.ndarray,
        k: int = 10,
        model: str | None = None,
        *,
        dimensions: int | None = None,
    ) -> list[SimilarEmbedding]:
        """The k stored embeddings of `model` nearest (cosine) to a text or a vector, with their
        texts; ties by id. A text is embedded through the cache and is itself left out of the
        results. PostgreSQL ranks with pgvector (an HNSW index per model and dimension is
        created on first use); SQLite with numpy. Both give the same answers."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"similar: `k` must be a positive integer (got {k!r})")
        model = model or self.model
        exclude: str | None = None
        if isinstance(text_or_vector, str):
            response = await self.get_embedding(text_or_vector, model=model, dimensions=dimensions)
            vector = response.array
            exclude = response.request_hash
        else:
            vector = query_vector(text_or_vector)
        return await asyncio.to_thread(self.search.nearest, vector, k, model, exclude)

    # --- plan-named internals --------------------------------------------------------------

    def _compute_request_hash(
        self,
        text: str,
        *,
        model: str | None = None,
        dimensions: int | None = None,
        encoding_format: str | None = None,
    ) -> str:
        return embedding_request_hash(
            text,
            provider=self.provider_name,
            model=model or self.model,
            dimensions=dimensions if dimensions is not None else self.dimensions,
            encoding_format=encoding_format or self.encoding_format,
        )

    async def _validate_deployment(self, model: str) -> bool:
        """Probe provider:model once (a one-input embedding call, captured as a raw_call but
        not cached) and remember the outcome. A transient failure is not remembered."""
        known = self.deployments.known(model)
        if known is not None:
            return known
        key = RequestKey(model, self.dimensions, self.encoding_format)
        provenance = {"group_id": self.group_id, "caller": self.metadata, "purpose": "probe"}
        return await self.embedder.probe(key, PROBE_TEXT, provenance)

    # --- steps -----------------------------------------------------------------------------

    def _defaults(
        self,
        model: str | None,
        dimensions: int | None,
        encoding_format: str | None,
        truncate: bool | None,
    ) -> EmbeddingRequest:
        return EmbeddingRequest(
            "",
            model or self.model,
            dimensions if dimensions is not None else self.dimensions,
            encoding_format or self.encoding_format,
            self.truncate if truncate is None else truncate,
        )

    async def _check_group(self, group_id: int | None) -> None:
        if group_id is None or group_id in self._known_groups:
            return
        if not await asyncio.to_thread(self.capture.group_exists, group_id):
            raise ValueError(f"group_id {group_id!r} does not exist (create the group first)")
        self._known_groups.add(group_id)

    @staticmethod
    def _respond(
        item: PreparedItem,
        found: Mapping[str, CacheEntry],
        failures: Mapping[str, EmbeddingError],
        cached: Container[str],
    ) -> EmbeddingResponse:
        model = item.key.model if item.key else None
        if item.error is not None or item.request_hash is None:
            return EmbeddingResponse(None, model, None, item.request_hash, error=item.error)
        entry = found.get(item.request_hash)
        if entry is None:
            error = failures.get(item.request_hash) or EmbeddingError(
                "provider_error", "no embedding was returned for this item"
            )
            return EmbeddingResponse(
                None,
                model,
                None,
                item.request_hash,
                text=item.text,
                truncated=item.truncated,
                error=error,
            )
        size = len(entry.vector)
        dimensions = item.key.dimensions if item.key else None
        if dimensions is not None and size != dimensions:
            # Stored before mismatched sizes were refused: not served as if it fitted.
            error = EmbeddingError(
                "dimension_mismatch",
                f"the stored embedding {entry.id} has {size} dimensions "
                f"but {dimensions} were asked for",
                raw_call_id=entry.call_id,
            )
            return EmbeddingResponse(
                None, model, None, item.request_hash, text=item.text, error=error
            )
        # Positional: a warm batch makes one per item, and keywords cost twice as much.
        return EmbeddingResponse(
            entry.vector,
            entry.model,
            size,
            item.request_hash,
            item.request_hash in cached,
            entry.call_id,
            entry.id,
            item.text,
            item.truncated,
        )
