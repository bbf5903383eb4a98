"""Business logic (no Dagster): inference with retry and capture, embeddings with their cache,
preprocessing, conversations, pricing."""

from .conversation import ConversationService
from .embeddings import (
    EmbeddingError,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingService,
    SimilarEmbedding,
)
from .inference import (
    BatchResults,
    CaptureWriter,
    InferenceService,
    Membership,
    ProviderLimits,
    SharedProviderLimits,
    TokenBucket,
    compute_request_hash,
)
from .preprocessing import PromptPreprocessor
from .pricing import PriceTable, estimate_cost, get_price_table

__all__ = [
    "BatchResults",
    "CaptureWriter",
    "ConversationService",
    "EmbeddingError",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "EmbeddingService",
    "InferenceService",
    "Membership",
    "PriceTable",
    "PromptPreprocessor",
    "ProviderLimits",
    "SharedProviderLimits",
    "SimilarEmbedding",
    "TokenBucket",
    "compute_request_hash",
    "estimate_cost",
    "get_price_table",
]
