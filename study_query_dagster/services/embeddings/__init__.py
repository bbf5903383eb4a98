"""Embeddings with a deterministic cache, batched API calls, retries, immutable capture and
similarity search: `EmbeddingService` and its parts, one job per module. Every public name of
the package is importable from here."""

from ..request_identity import EMBEDDING_KEY_VERSION as KEY_VERSION
from ..request_identity import canonical_json, normalize_text
from ..request_identity import embedding_request_hash as compute_request_hash
from ..retry import RetryPolicy, is_transient
from .cache import LRU
from .deployments import INVALID_DEPLOYMENT_STATUSES
from .models import (
    ERROR_KINDS,
    EmbeddingError,
    EmbeddingRequest,
    EmbeddingResponse,
    SimilarEmbedding,
)
from .requests import utf8_token_bound
from .retrying import DEFAULT_RETRY
from .service import (
    DEFAULT_MAX_BATCH_SIZE,
    MAX_INPUTS_PER_CALL,
    PROBE_TEXT,
    EmbeddingService,
)

__all__ = [
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_RETRY",
    "ERROR_KINDS",
    "INVALID_DEPLOYMENT_STATUSES",
    "KEY_VERSION",
    "LRU",
    "MAX_INPUTS_PER_CALL",
    "PROBE_TEXT",
    "EmbeddingError",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "EmbeddingService",
    "RetryPolicy",
    "SimilarEmbedding",
    "canonical_json",
    "compute_request_hash",
    "is_transient",
    "normalize_text",
    "utf8_token_bound",
]
