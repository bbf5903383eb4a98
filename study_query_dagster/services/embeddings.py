"""`EmbeddingService`: embeddings with a deterministic cache, batched API calls, retries,
immutable capture and similarity search.

How a batch is served:
1. Each text is normalised (NUL bytes removed, Unicode NFC, whitespace runs collapsed,
   stripped) and checked (empty, over the token limit) -> a per-item error, never an API call.
2. Its request hash (sha256 of canonical JSON of key_version, provider, model, normalised text,
   dimensions, encoding_format) is looked up in an in-process LRU, then in `embedding_vectors`
   with one query per chunk of hashes.
3. Only misses reach the provider: deduplicated, in calls of at most `max_batch_size` inputs.
   Each call is one `raw_calls` row (modality "embedding", success or failed); each vector one
   `embedding_vectors` row keyed by its request hash (unique: concurrent writers insert-or-ignore
   and read the stored row back, so every process sees one entry per hash).
4. Every item gets an `EmbeddingResponse`: a vector, or an `EmbeddingError`. A batch never aborts.

Retries (tenacity): retryable `ProviderError`s and transient database errors (`OperationalError`),
exponential backoff with jitter (1 s doubling to 30 s) at most 6 attempts, `Retry-After` honoured.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from json.encoder import c_encode_basestring, py_encode_basestring  # type: ignore[attr-defined]
from typing import Any, TypeVar

import numpy as np
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from ..db import DatabaseConnection, GroupRepository, RawCallRepository, VectorStore
from ..log import get_logger
from ..providers.base import ProviderError
from ..providers.embeddings import (
    ENCODING_FORMATS,
    BaseEmbeddingProvider,
    EmbeddingResult,
)

logger = get_logger(__name__)

KEY_VERSION = 1
DEFAULT_MAX_BATCH_SIZE = 256
# OpenAI accepts at most 2048 inputs per embeddings request.
MAX_INPUTS_PER_CALL = 2048
PROBE_TEXT = "deployment probe"
# Errors meaning "this provider:model cannot be used" (missing deployment/model, bad key).
INVALID_DEPLOYMENT_STATUSES = {401, 403, 404}

T = TypeVar("T")


# --- request identity ------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """NUL bytes removed, Unicode NFC, whitespace runs collapsed to one space, stripped."""
    text = unicodedata.normalize("NFC", text.replace("\x00", ""))
    return " ".join(text.split())


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# How json.dumps(..., ensure_ascii=False) writes one string (the C encoder when available).
_json_string = c_encode_basestring or py_encode_basestring


def compute_request_hash(
    text: str,
    *,
    provider: str,
    model: str,
    dimensions: int | None = None,
    encoding_format: str = "float",
) -> str:
    """The cache identity of one embedding request (the text is normalised first): sha256 of
    canonical_json({key_version, provider, model, normalized_text, dimensions, encoding_format})."""
    prefix, suffix = _hash_frame(provider, model, dimensions, encoding_format)
    return _hash_normalized(prefix, normalize_text(text), suffix)


@lru_cache(maxsize=1024)
def _hash_frame(
    provider: str, model: str, dimensions: int | None, encoding_format: str
) -> tuple[str, str]:
    """The canonical JSON around the text, split at the text. Equal to `canonical_json` of the
    whole payload (a test checks it); built once per request key since batches share keys."""
    marker = "\x00text\x00"
    frame = canonical_json({
        "key_version": KEY_VERSION, "provider": provider, "model": model,
        "normalized_text": marker, "dimensions": dimensions, "encoding_format": encoding_format,
    })  # fmt: skip
    prefix, suffix = frame.split(_json_string(marker))
    return prefix, suffix


def _hash_normalized(prefix: str, normalized: str, suffix: str) -> str:
    data = prefix + _json_string(normalized) + suffix
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def utf8_token_bound(text: str) -> int:
    """A token count that is never too low for byte-level BPE tokenizers (cl100k_base,
    o200k_base): every token covers at least one UTF-8 byte. It needs no tokenizer data, at the
    price of over-counting (English averages about 4 bytes per token)."""
    return len(text.encode("utf-8"))


# --- retry policy ----------------------------------------------------------------------------


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: a retryable provider error or a transient database error."""
    if isinstance(exc, ProviderError):
        return exc.retryable
    return isinstance(exc, OperationalError)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: wait ~initial, 2*initial, ... capped at max_wait, for at
    most `attempts` attempts. A provider's Retry-After (capped at max_retry_after) is a floor."""

    attempts: int = 6
    initial_wait: float = 1.0
    max_wait: float = 30.0
    jitter: float = 1.0
    max_retry_after: float = 60.0

    def __post_init__(self):
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1 (got {self.attempts})")
        if min(self.initial_wait, self.max_wait, self.jitter, self.max_retry_after) < 0:
            raise ValueError("RetryPolicy waits must not be negative")

    def wait(self, state: RetryCallState) -> float:
        backoff = wait_exponential_jitter(
            multiplier=self.initial_wait, max=self.max_wait, jitter=self.jitter
        )(state)
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after:
            return max(backoff, min(float(retry_after), self.max_retry_after))
        return backoff

    def _kwargs(self, on_retry: Callable[[RetryCallState], None] | None) -> dict[str, Any]:
        return {
            "stop": stop_after_attempt(self.attempts),
            "wait": self.wait,
            "retry": retry_if_exception(is_transient),
            "reraise": True,
            "before_sleep": on_retry,
        }

    def asynchronous(self, on_retry=None) -> AsyncRetrying:
        return AsyncRetrying(**self._kwargs(on_retry))

    def synchronous(self, on_retry=None) -> Retrying:
        return Retrying(**self._kwargs(on_retry))


# --- public data -----------------------------------------------------------------------------


class EmbeddingError(Exception):
    """Why one item has no vector.

    kind: "invalid_input" (not a string, or empty after normalisation), "too_long" (over the
    model's token limit), "invalid_deployment" (the provider:model failed its probe),
    "provider_error" (the API call failed; `provider_error` has the details), "storage_error"
    (the vector could not be stored).
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        provider_error: ProviderError | None = None,
        raw_call_id: int | None = None,
    ):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.provider_error = provider_error
        self.raw_call_id = raw_call_id

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "message": self.message}
        if self.provider_error is not None:
            out["provider_error"] = self.provider_error.to_dict()
        if self.raw_call_id is not None:
            out["raw_call_id"] = self.raw_call_id
        return out

    def __repr__(self) -> str:
        return f"EmbeddingError({self.kind}, {self.message!r})"


@dataclass(frozen=True)
class EmbeddingRequest:
    """One text to embed; unset fields take the batch's (then the service's) defaults."""

    text: str
    model: str | None = None
    dimensions: int | None = None
    encoding_format: str | None = None
    truncate: bool | None = None


@dataclass(eq=False)
class EmbeddingResponse:
    """The result for one item: a vector, or `error`.

    `array` is the float32 vector as a read-only numpy array (shared with the cache: copy it
    before changing it); `vector` is the same values as a list, made on first access.
    """

    array: np.ndarray | None
    model: str | None
    dimension: int | None
    request_hash: str | None
    cached: bool = False
    raw_call_id: int | None = None
    embedding_id: int | None = None
    text: str | None = None  # the normalised (possibly truncated) text that was embedded
    truncated: bool = False
    error: EmbeddingError | None = None

    @cached_property
    def vector(self) -> list[float] | None:
        return None if self.array is None else self.array.tolist()

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class SimilarEmbedding:
    text: str | None
    distance: float  # cosine distance, 0 = same direction
    model: str
    embedding_id: int
    raw_call_id: int
    request_hash: str | None

    @property
    def similarity(self) -> float:
        return 1.0 - self.distance


# --- internals -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Key:
    """What must be equal for texts to share one API call."""

    model: str
    dimensions: int | None
    encoding_format: str


@dataclass
class _Item:
    index: int
    key: _Key | None = None
    text: str | None = None
    request_hash: str | None = None
    tokens: int = 0
    truncated: bool = False
    error: EmbeddingError | None = None


@dataclass(frozen=True)
class _Entry:
    """A stored embedding, as kept in the LRU."""

    vector: np.ndarray
    embedding_id: int
    raw_call_id: int
    model: str
    text: str | None

    def __post_init__(self):
        self.vector.flags.writeable = False  # shared by the LRU and every response

    @classmethod
    def of(cls, row: Any) -> _Entry:
        vector = np.asarray(row.vector, dtype=np.float32)
        return cls(vector, row.id, row.call_id, row.model, row.text)


@dataclass
class _Outcome:
    """One logical API call after retries."""

    result: EmbeddingResult | None = None
    error: ProviderError | None = None
    attempts: int = 0
    retried: list[dict[str, Any]] = field(default_factory=list)
    elapsed_ms: float = 0.0


class _LRU:
    def __init__(self, size: int):
        self.size = size
        self._data: OrderedDict[str, _Entry] = OrderedDict()

    def get(self, key: str) -> _Entry | None:
        entry = self._data.get(key)
        if entry is not None:
            self._data.move_to_end(key)
        return entry

    def put(self, key: str, entry: _Entry) -> None:
        if self.size <= 0:
            return
        self._data[key] = entry
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


def _check_dimensions(value: Any, where: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ValueError(f"{where}: `dimensions` must be a positive integer (got {value!r})")


def _check_format(value: Any, where: str) -> None:
    if value not in ENCODING_FORMATS:
        raise ValueError(
            f"{where}: `encoding_format` must be one of {', '.join(ENCODING_FORMATS)} "
            f"(got {value!r})"
        )


def _check_metadata(value: Any, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: `metadata` must be a dict (got {type(value).__name__})")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: `metadata` must be JSON-serialisable: {exc}") from exc


# --- the service -----------------------------------------------------------------------------


class EmbeddingService:
    """Embeddings for one provider, cached in the v2 database.

    `model`, `dimensions` and `encoding_format` are defaults that each call (or
    `EmbeddingRequest`) may override. `token_limits` maps a model to its per-input limit (the
    provider's default otherwise: 8191 for OpenAI/Azure, none offline); `token_counter` counts a
    text's tokens (default `utf8_token_bound`, an over-estimate that needs no downloads);
    `truncate` cuts over-long texts instead of failing them. A call carries at most
    `max_batch_size` inputs and `max_tokens_per_call` counted tokens (default: the provider's
    request limit, 300,000 for OpenAI/Azure). `group_id` and `metadata` (seed, library
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
        _check_dimensions(dimensions, where)
        _check_format(encoding_format, where)
        _check_metadata(metadata, where)
        if not isinstance(max_batch_size, int) or not 1 <= max_batch_size <= MAX_INPUTS_PER_CALL:
            raise ValueError(f"{where}: `max_batch_size` must be 1..{MAX_INPUTS_PER_CALL} "
                             f"(got {max_batch_size!r})")  # fmt: skip
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"{where}: `concurrency` must be >= 1 (got {concurrency!r})")
        for name, limit in (token_limits or {}).items():
            if limit is not None and (not isinstance(limit, int) or limit <= 0):
                raise ValueError(f"{where}: token_limits[{name!r}] must be a positive integer "
                                 f"or None (got {limit!r})")  # fmt: skip
        self.db = db
        self.provider = provider
        self.provider_name = provider.get_provider_name()
        self.model = model
        self.dimensions = dimensions
        self.encoding_format = encoding_format
        self.max_batch_size = max_batch_size
        self.max_tokens_per_call = max_tokens_per_call or provider.max_request_tokens
        self.retry = retry or RetryPolicy()
        self.token_limits = dict(token_limits or {})
        self.token_counter = token_counter
        self.truncate = truncate
        self.group_id = group_id
        self.metadata = dict(metadata or {})
        self._lru = _LRU(cache_size)
        self._semaphore = asyncio.Semaphore(concurrency)
        # provider:model validity, remembered for the service's life (both outcomes).
        self._deployments: dict[str, bool] = {}
        self._deployment_errors: dict[str, ProviderError] = {}
        self._known_groups: set[int] = set()
        self._indexed: set[tuple[str, int]] = set()
        self.stats = {"api_calls": 0, "lru_hits": 0, "db_hits": 0, "misses": 0}

    async def aclose(self) -> None:
        await self.provider.aclose()

    async def __aenter__(self) -> EmbeddingService:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    # --- public API ------------------------------------------------------------------------

    async def get_embedding(
        self,
        text: str | EmbeddingRequest,
        *,
        model: str | None = None,
        dimensions: int | None = None,
        encoding_format: str | None = None,
        truncate: bool | None = None,
        group_id: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> EmbeddingResponse:
        """One embedding (cached). Raises `EmbeddingError` if the item fails."""
        [response] = await self.get_embeddings_batch(
            [text], model=model, dimensions=dimensions, encoding_format=encoding_format,
            truncate=truncate, group_id=group_id, metadata=metadata,
        )  # fmt: skip
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
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise ValueError(f"{where}: `model` must be a non-empty string (got {model!r})")
        _check_dimensions(dimensions, where)
        if encoding_format is not None:
            _check_format(encoding_format, where)
        _check_metadata(metadata, where)
        group_id = group_id if group_id is not None else self.group_id
        await self._check_group(group_id)
        provenance = {"group_id": group_id, "caller": {**self.metadata, **(metadata or {})}}
        defaults = EmbeddingRequest(
            "", model or self.model, dimensions if dimensions is not None else self.dimensions,
            encoding_format or self.encoding_format,
            self.truncate if truncate is None else truncate,
        )  # fmt: skip
        started = time.perf_counter()
        prepared = [self._prepare(i, item, defaults) for i, item in enumerate(items)]
        valid = [p for p in prepared if p.error is None]

        found: dict[str, _Entry] = {}
        lookup: list[str] = []
        for item in valid:
            assert item.request_hash is not None
            if item.request_hash in found:
                continue
            entry = self._lru.get(item.request_hash)
            if entry is not None:
                found[item.request_hash] = entry
                self.stats["lru_hits"] += 1
            else:
                lookup.append(item.request_hash)
        try:
            stored = await self._check_cache(lookup) if lookup else {}
        except Exception as exc:  # the database stayed unreachable through the retries
            logger.exception("embedding cache lookup failed; no API call made")
            error = EmbeddingError("storage_error", f"the cache lookup failed: {exc}")
            failed = {item.request_hash: error for item in valid if item.request_hash not in found}
            return [self._respond(p, found, failed, set(found)) for p in prepared]
        self.stats["db_hits"] += len(stored)
        cached_hashes = set(found) | set(stored)
        found.update(stored)
        for request_hash, entry in stored.items():
            self._lru.put(request_hash, entry)

        misses: dict[_Key, dict[str, _Item]] = {}
        for item in valid:
            if item.request_hash not in found:
                misses.setdefault(item.key, {}).setdefault(item.request_hash, item)
        self.stats["misses"] += sum(len(m) for m in misses.values())
        failures: dict[str, EmbeddingError] = {}
        fresh: dict[str, _Entry] = {}
        outcomes = await asyncio.gather(
            *(self._embed_misses(key, list(p.values()), provenance) for key, p in misses.items())
        )
        for got, failed in outcomes:
            fresh.update(got)
            failures.update(failed)
        found.update(fresh)

        responses = [self._respond(p, found, failures, cached_hashes) for p in prepared]
        errors = sum(1 for r in responses if r.error is not None)
        logger.info(
            "embedding batch provider=%s: %d items, %d cached, %d embedded, %d errors in %.0f ms",
            self.provider_name, len(items), len(cached_hashes), len(fresh), errors,
            (time.perf_counter() - started) * 1000,
        )  # fmt: skip
        return responses

    def request_hashes(
        self, texts: Sequence[str], *, model: str | None = None, truncate: bool | None = None
    ) -> list[str | None]:
        """The cache identity each text would have in `get_embeddings_batch` (after
        normalisation and truncation), without any call; None for a text that would be refused."""
        defaults = EmbeddingRequest(
            "", model or self.model, self.dimensions, self.encoding_format,
            self.truncate if truncate is None else truncate,
        )  # fmt: skip
        return [self._prepare(i, text, defaults).request_hash for i, text in enumerate(texts)]

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
            vector = np.asarray(text_or_vector, dtype=np.float32)
            if vector.ndim != 1 or vector.size == 0 or not np.all(np.isfinite(vector)):
                raise ValueError("similar: the query vector must be a non-empty list of numbers")
        return await asyncio.to_thread(self._nearest, vector, k, model, exclude)

    # --- plan-named internals --------------------------------------------------------------

    def _compute_request_hash(
        self,
        text: str,
        *,
        model: str | None = None,
        dimensions: int | None = None,
        encoding_format: str | None = None,
    ) -> str:
        return compute_request_hash(
            text,
            provider=self.provider_name,
            model=model or self.model,
            dimensions=dimensions if dimensions is not None else self.dimensions,
            encoding_format=encoding_format or self.encoding_format,
        )

    async def _check_cache(self, hashes: Sequence[str]) -> dict[str, _Entry]:
        """Stored embeddings for `hashes`: one query per chunk, never one per item."""

        def lookup() -> dict[str, _Entry]:
            with self.db.session_scope() as session:
                rows = VectorStore(session).embeddings_by_hash(hashes)
                return {h: _Entry.of(row) for h, row in rows.items()}

        return await asyncio.to_thread(self._with_db_retry, lookup)

    async def _validate_deployment(self, model: str) -> bool:
        """Probe provider:model once (a one-input embedding call, captured as a raw_call but
        not cached) and remember the outcome. A transient failure is not remembered."""
        known = self._deployments.get(model)
        if known is not None:
            return known
        key = _Key(model, self.dimensions, self.encoding_format)
        outcome = await self._create_embedding_with_retry([PROBE_TEXT], key)
        provenance = {"group_id": self.group_id, "caller": self.metadata, "purpose": "probe"}
        if outcome.result is not None:
            self._deployments[model] = True
            await asyncio.to_thread(
                self._with_db_retry, self._store_call, [PROBE_TEXT], [], key, outcome, provenance
            )
            return True
        assert outcome.error is not None
        await self._log_failure([PROBE_TEXT], [], key, outcome, provenance)
        if self._is_invalid_deployment(outcome.error):
            self._mark_invalid(model, outcome.error)
        else:
            logger.warning("probe of %s:%s failed, will probe again later: %s",
                           self.provider_name, model, outcome.error.message)  # fmt: skip
        return False

    async def _create_embedding_with_retry(self, texts: list[str], key: _Key) -> _Outcome:
        """One logical API call: retried on transient errors, never raises."""
        outcome = _Outcome()
        started = time.perf_counter()

        def on_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            summary = (
                error.to_dict() if isinstance(error, ProviderError) else {"message": str(error)}
            )
            outcome.retried.append({"attempt": state.attempt_number, **summary})
            logger.info(
                "embedding call %s:%s attempt %d failed (%s), retrying in %.2f s",
                self.provider_name, key.model, state.attempt_number,
                getattr(error, "error_type", type(error).__name__),
                state.next_action.sleep if state.next_action else 0,
            )  # fmt: skip

        try:
            async with self._semaphore:
                async for attempt in self.retry.asynchronous(on_retry):
                    with attempt:
                        outcome.attempts += 1
                        self.stats["api_calls"] += 1
                        outcome.result = await self.provider.embed(
                            texts, model=key.model, dimensions=key.dimensions,
                            encoding_format=key.encoding_format,
                        )  # fmt: skip
        except ProviderError as exc:
            outcome.error = exc
        except Exception as exc:  # a provider bug must not abort the batch
            outcome.error = ProviderError(
                f"{self.provider_name}: {type(exc).__name__}: {exc}", self.provider_name,
                error_type="unknown",
            )  # fmt: skip
        outcome.elapsed_ms = (time.perf_counter() - started) * 1000
        return outcome

    async def _log_failure(
        self,
        texts: list[str],
        hashes: list[str],
        key: _Key,
        outcome: _Outcome,
        provenance: dict[str, Any],
    ) -> int | None:
        """Capture a failed call as a `failed` (or `timeout`) raw_call with error_json."""
        assert outcome.error is not None
        error = outcome.error
        row = {
            "provider": self.provider_name,
            "model": key.model,
            "modality": "embedding",
            "status": "timeout" if error.is_timeout else "failed",
            "request_hash": self._call_hash(key, hashes or texts),
            "request_json": self._request_json(texts, key),
            "error_json": error.to_dict(),
            "latency_ms": outcome.elapsed_ms,
            "metadata_json": self._call_metadata(hashes, outcome, provenance),
        }
        try:
            call_id = await asyncio.to_thread(self._with_db_retry, self._insert_failed, row,
                                              provenance.get("group_id"))  # fmt: skip
        except Exception:
            logger.exception("could not capture a failed embedding call (%s)", error.error_type)
            return None
        logger.info(
            "captured failed embedding call id=%s provider=%s model=%s inputs=%d error=%s",
            call_id, self.provider_name, key.model, len(texts), error.error_type,
        )  # fmt: skip
        return call_id

    # --- steps -----------------------------------------------------------------------------

    def _prepare(self, index: int, item: Any, defaults: EmbeddingRequest) -> _Item:
        out = _Item(index)
        request = item if isinstance(item, EmbeddingRequest) else EmbeddingRequest(item)
        model = request.model or defaults.model
        dimensions = request.dimensions if request.dimensions is not None else defaults.dimensions
        encoding_format = request.encoding_format or defaults.encoding_format
        truncate = defaults.truncate if request.truncate is None else request.truncate
        try:
            if not isinstance(model, str) or not model.strip():
                raise ValueError(f"item {index}: `model` must be a non-empty string "
                                 f"(got {model!r})")  # fmt: skip
            _check_dimensions(dimensions, f"item {index}")
            _check_format(encoding_format, f"item {index}")
        except ValueError as exc:
            out.error = EmbeddingError("invalid_input", str(exc))
            return out
        out.key = _Key(model, dimensions, encoding_format)
        if not isinstance(request.text, str):
            out.error = EmbeddingError(
                "invalid_input", f"item {index}: text must be a string (got "
                f"{type(request.text).__name__})",
            )  # fmt: skip
            return out
        text = normalize_text(request.text)
        if not text:
            out.error = EmbeddingError(
                "invalid_input", f"item {index}: text is empty after normalisation "
                f"(got {request.text[:40]!r})",
            )  # fmt: skip
            return out
        limit = self.token_limits.get(model, self.provider.default_token_limit)
        tokens = self.token_counter(text)
        if limit is not None and tokens > limit:
            if not truncate:
                out.error = EmbeddingError(
                    "too_long",
                    f"item {index}: about {tokens} tokens (counted with "
                    f"{getattr(self.token_counter, '__name__', 'the token counter')}) exceeds "
                    f"the {limit}-token limit of {model}; pass truncate=True to cut it",
                )
                return out
            text = self._truncate(text, limit)
            tokens = self.token_counter(text)
            out.truncated = True
        out.text, out.tokens = text, tokens
        prefix, suffix = _hash_frame(self.provider_name, model, dimensions, encoding_format)
        out.request_hash = _hash_normalized(prefix, text, suffix)
        return out

    def _truncate(self, text: str, limit: int) -> str:
        """The longest prefix within `limit` tokens (binary search: any counter works)."""
        low, high = 0, len(text)
        while low < high:
            middle = (low + high + 1) // 2
            if self.token_counter(text[:middle]) <= limit:
                low = middle
            else:
                high = middle - 1
        return normalize_text(text[:low])

    def _chunks(self, items: list[_Item]) -> list[list[_Item]]:
        """Calls of at most max_batch_size inputs and max_tokens_per_call (estimated) tokens."""
        budget = self.max_tokens_per_call
        chunks: list[list[_Item]] = []
        current: list[_Item] = []
        tokens = 0
        for item in items:
            too_many = len(current) >= self.max_batch_size
            too_big = budget is not None and current and tokens + item.tokens > budget
            if too_many or too_big:
                chunks.append(current)
                current, tokens = [], 0
            current.append(item)
            tokens += item.tokens
        if current:
            chunks.append(current)
        return chunks

    async def _embed_misses(
        self, key: _Key, items: list[_Item], provenance: dict[str, Any]
    ) -> tuple[dict[str, _Entry], dict[str, EmbeddingError]]:
        got: dict[str, _Entry] = {}
        failed: dict[str, EmbeddingError] = {}
        chunks = self._chunks(items)
        if self._deployments.get(key.model) is None and chunks:
            # The first call doubles as the deployment probe: if the deployment is missing,
            # the remaining chunks are not sent.
            first_got, first_failed = await self._run_call(key, chunks.pop(0), provenance)
            got.update(first_got)
            failed.update(first_failed)
        if self._deployments.get(key.model) is False:
            error = self._invalid_error(key.model)
            failed.update({i.request_hash: error for chunk in chunks for i in chunk})
            return got, failed
        results = await asyncio.gather(*(self._run_call(key, c, provenance) for c in chunks))
        for chunk_got, chunk_failed in results:
            got.update(chunk_got)
            failed.update(chunk_failed)
        return got, failed

    async def _run_call(
        self, key: _Key, chunk: list[_Item], provenance: dict[str, Any]
    ) -> tuple[dict[str, _Entry], dict[str, EmbeddingError]]:
        texts = [i.text for i in chunk]
        hashes = [i.request_hash for i in chunk]
        outcome = await self._create_embedding_with_retry(texts, key)
        if outcome.error is not None:
            call_id = await self._log_failure(texts, hashes, key, outcome, provenance)
            if self._is_invalid_deployment(outcome.error):
                self._mark_invalid(key.model, outcome.error)
                error = self._invalid_error(key.model, call_id)
            else:
                error = EmbeddingError(
                    "provider_error", outcome.error.message, provider_error=outcome.error,
                    raw_call_id=call_id,
                )  # fmt: skip
            return {}, dict.fromkeys(hashes, error)
        self._deployments.setdefault(key.model, True)
        try:
            entries = await asyncio.to_thread(
                self._with_db_retry, self._store_call, texts, hashes, key, outcome, provenance
            )
        except Exception as exc:
            logger.exception("could not store %d embeddings of %s", len(texts), key.model)
            error = EmbeddingError("storage_error", f"could not store the embedding: {exc}")
            return {}, dict.fromkeys(hashes, error)
        for request_hash, entry in entries.items():
            self._lru.put(request_hash, entry)
        return entries, {}

    def _store_call(
        self,
        texts: list[str],
        hashes: list[str],
        key: _Key,
        outcome: _Outcome,
        provenance: dict[str, Any],
    ) -> dict[str, _Entry]:
        """One transaction: the raw_call, its vectors (insert-or-ignore by request hash), and
        the group membership. Returns the stored entry per hash, which is another writer's
        when it stored the same hash first."""
        result = outcome.result
        assert result is not None
        vectors = result.array if result.array is not None else np.asarray(result, np.float32)
        with self.db.session_scope() as session:
            call_id = RawCallRepository(session).insert_raw_call(
                provider=self.provider_name,
                model=key.model,
                modality="embedding",
                status="success",
                request_hash=self._call_hash(key, hashes or texts),
                request_json=self._request_json(texts, key),
                response_json={
                    "count": len(result),
                    "dimension": result.dimension,
                    "model": result.model,
                    "request_id": result.request_id,
                },
                latency_ms=result.latency_ms,
                tokens_json=result.usage,
                metadata_json=self._call_metadata(hashes, outcome, provenance),
            )
            group_id = provenance.get("group_id")
            if group_id is not None:
                GroupRepository(session).add_group_members(group_id, [call_id], role="embedding")
            if not hashes:  # a probe: captured, not cached
                return {}
            # Sorted by hash so concurrent writers lock rows in the same order (no deadlock).
            order = sorted(range(len(hashes)), key=hashes.__getitem__)
            rows = [
                {"call_id": call_id, "model": key.model, "vector": vectors[i],
                 "request_hash": hashes[i], "text": texts[i]}
                for i in order
            ]  # fmt: skip
            ids = VectorStore(session).insert_embedding_vectors(rows, ignore_duplicates=True)
            entries = {
                hashes[i]: _Entry(vectors[i], embedding_id, call_id, key.model, texts[i])
                for i, embedding_id in zip(order, ids, strict=True)
            }
            ours = set(ids)
            for row in VectorStore(session).stored_by_other_calls(ours, call_id):
                entries[row.request_hash] = _Entry.of(row)
        logger.info(
            "embedded %d texts provider=%s model=%s call_id=%s in %.0f ms (attempts=%d)",
            len(texts), self.provider_name, key.model, call_id, outcome.elapsed_ms,
            outcome.attempts,
        )  # fmt: skip
        return entries

    def _insert_failed(self, row: dict[str, Any], group_id: int | None) -> int:
        with self.db.session_scope() as session:
            call_id = RawCallRepository(session).insert_raw_call(**row)
            if group_id is not None:
                GroupRepository(session).add_group_members(group_id, [call_id], role="embedding")
            return call_id

    def _respond(
        self,
        item: _Item,
        found: dict[str, _Entry],
        failures: dict[str, EmbeddingError],
        cached: set[str],
    ) -> EmbeddingResponse:
        key = item.key
        model = key.model if key else None
        if item.error is not None or item.request_hash is None:
            return EmbeddingResponse(None, model, None, item.request_hash, error=item.error)
        entry = found.get(item.request_hash)
        if entry is None:
            error = failures.get(item.request_hash) or EmbeddingError(
                "provider_error", "no embedding was returned for this item"
            )
            return EmbeddingResponse(None, model, None, item.request_hash, text=item.text,
                                     truncated=item.truncated, error=error)  # fmt: skip
        return EmbeddingResponse(
            array=entry.vector,
            model=entry.model,
            dimension=int(entry.vector.size),
            request_hash=item.request_hash,
            cached=item.request_hash in cached,
            raw_call_id=entry.raw_call_id,
            embedding_id=entry.embedding_id,
            text=item.text,
            truncated=item.truncated,
        )

    def _nearest(
        self, vector: np.ndarray, k: int, model: str, exclude: str | None
    ) -> list[SimilarEmbedding]:
        dimension = int(vector.size)
        if self.db.dialect == "postgresql" and (model, dimension) not in self._indexed:
            self._ensure_index(model, dimension)
        with self.db.session_scope() as session:
            hits = VectorStore(session).nearest_embeddings(
                vector, k=k + (1 if exclude else 0), model=model
            )
            out = [
                SimilarEmbedding(e.text, distance, e.model, e.id, e.call_id, e.request_hash)
                for e, distance in hits
                if exclude is None or e.request_hash != exclude
            ]
        return out[:k]

    def _ensure_index(self, model: str, dimension: int) -> None:
        # Its own short transaction: CREATE INDEX blocks writers until it commits.
        try:
            with self.db.session_scope() as session:
                VectorStore(session).ensure_hnsw_index(model, dimension)
        except (IntegrityError, ProgrammingError):
            # Another process created the same index at the same moment: fine if it is there.
            with self.db.session_scope() as session:
                if not VectorStore(session).hnsw_index_exists(model, dimension):
                    raise
        self._indexed.add((model, dimension))

    # --- helpers ---------------------------------------------------------------------------

    def _with_db_retry(self, fn: Callable[..., T], *args: Any) -> T:
        for attempt in self.retry.synchronous(self._log_db_retry):
            with attempt:
                return fn(*args)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _log_db_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        logger.warning("database step failed (attempt %d), retrying: %s", state.attempt_number,
                       type(error).__name__)  # fmt: skip

    async def _check_group(self, group_id: int | None) -> None:
        if group_id is None or group_id in self._known_groups:
            return

        def exists() -> bool:
            with self.db.session_scope() as session:
                return GroupRepository(session).get_group(group_id) is not None

        if not await asyncio.to_thread(exists):
            raise ValueError(f"group_id {group_id!r} does not exist (create the group first)")
        self._known_groups.add(group_id)

    @staticmethod
    def _is_invalid_deployment(error: ProviderError) -> bool:
        return error.status_code in INVALID_DEPLOYMENT_STATUSES

    def _mark_invalid(self, model: str, error: ProviderError) -> None:
        if self._deployments.get(model) is False:
            return
        self._deployments[model] = False
        self._deployment_errors[model] = error
        logger.warning(
            "skipping invalid deployment %s:%s for the rest of this service's life: %s",
            self.provider_name, model, error.message,
        )  # fmt: skip

    def _invalid_error(self, model: str, raw_call_id: int | None = None) -> EmbeddingError:
        error = self._deployment_errors.get(model)
        reason = error.message if error else "it failed its probe"
        return EmbeddingError(
            "invalid_deployment", f"deployment {self.provider_name}:{model} is not usable: {reason}",
            provider_error=error, raw_call_id=raw_call_id,
        )  # fmt: skip

    def _request_json(self, texts: list[str], key: _Key) -> dict[str, Any]:
        return {
            "input": texts,
            "model": key.model,
            "dimensions": key.dimensions,
            "encoding_format": key.encoding_format,
        }

    def _call_hash(self, key: _Key, parts: list[str]) -> str:
        payload = {
            "key_version": KEY_VERSION, "provider": self.provider_name, "model": key.model,
            "dimensions": key.dimensions, "encoding_format": key.encoding_format, "inputs": parts,
        }  # fmt: skip
        return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()

    def _call_metadata(
        self, hashes: list[str], outcome: _Outcome, provenance: dict[str, Any]
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "request_hashes": hashes,
            "key_version": KEY_VERSION,
            "attempts": outcome.attempts,
            "elapsed_ms": round(outcome.elapsed_ms, 3),
            **{k: v for k, v in provenance.items() if v not in (None, {})},
        }
        if outcome.retried:
            meta["retried_errors"] = outcome.retried
        return meta
