"""The data an embedding batch passes around: the public request, response and error types, and
the internal records of one prepared item, one cache entry and one API call's outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ...providers.base import ProviderError
from ...providers.embeddings import EmbeddingResult

ERROR_KINDS = (
    "invalid_input",
    "too_long",
    "invalid_deployment",
    "dimension_mismatch",
    "provider_error",
    "storage_error",
)


class EmbeddingError(Exception):
    """Why one item has no vector.

    kind: "invalid_input" (not a string, or empty after normalisation), "too_long" (over the
    model's token limit), "invalid_deployment" (the provider:model failed its probe),
    "dimension_mismatch" (the API returned vectors of another length than requested, or than
    the model's stored vectors), "provider_error" (the API call failed; `provider_error` has
    the details), "storage_error" (the vector could not be stored).
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


@dataclass(frozen=True)
class RequestKey:
    """What must be equal for texts to share one API call."""

    model: str
    dimensions: int | None
    encoding_format: str


@dataclass
class PreparedItem:
    """One input after validation, normalisation and truncation: a hash to look up, or an error."""

    index: int
    key: RequestKey | None = None
    text: str | None = None
    request_hash: str | None = None
    tokens: int = 0
    truncated: bool = False
    error: EmbeddingError | None = None


@dataclass(frozen=True)
class CacheEntry:
    """A stored embedding, as the LRU keeps it and responses share it."""

    vector: np.ndarray
    embedding_id: int
    raw_call_id: int
    model: str
    text: str | None

    def __post_init__(self):
        self.vector.flags.writeable = False  # shared by the LRU and every response

    @classmethod
    def of(cls, row: Any) -> CacheEntry:
        """From a `StoredEmbedding` or an `EmbeddingVector` row."""
        vector = np.asarray(row.vector, dtype=np.float32)
        return cls(vector, row.id, row.call_id, row.model, row.text)


@dataclass
class CallOutcome:
    """One logical API call after its retries: a result or the last error."""

    result: EmbeddingResult | None = None
    error: ProviderError | None = None
    attempts: int = 0
    retried: list[dict[str, Any]] = field(default_factory=list)
    elapsed_ms: float = 0.0


@dataclass
class Call:
    """One logical API call: what was sent for which cache entries (none for a probe), the
    caller's provenance, and how it ended."""

    key: RequestKey
    texts: list[str]
    hashes: list[str]
    provenance: dict[str, Any]
    outcome: CallOutcome = field(default_factory=CallOutcome)
