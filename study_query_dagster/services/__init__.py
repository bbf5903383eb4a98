"""Business logic (no Dagster): inference with retry and capture, preprocessing,
conversations, pricing."""

from .conversation import ConversationService
from .inference import (
    BatchResults,
    CaptureWriter,
    InferenceService,
    Membership,
    ProviderLimits,
    TokenBucket,
    compute_request_hash,
)
from .preprocessing import PromptPreprocessor
from .pricing import PriceTable, estimate_cost, get_price_table

__all__ = [
    "BatchResults",
    "CaptureWriter",
    "ConversationService",
    "InferenceService",
    "Membership",
    "PriceTable",
    "PromptPreprocessor",
    "ProviderLimits",
    "TokenBucket",
    "compute_request_hash",
    "estimate_cost",
    "get_price_table",
]
