"""Chat inference: `InferenceService` and the parts it is made of, one job per module
(docs/ARCHITECTURE.md lists them)."""

from .batching import BatchResults
from .capture import CaptureWriter, Membership
from .clock import Clock
from .quota import QuotaGate
from .rate_limits import Permit, ProviderLimits, TokenBucket
from .requests import RESERVED_METADATA_KEYS, compute_request_hash
from .service import InferenceService
from .shared_limits import SharedProviderLimits

__all__ = [
    "RESERVED_METADATA_KEYS",
    "BatchResults",
    "CaptureWriter",
    "Clock",
    "InferenceService",
    "Membership",
    "Permit",
    "ProviderLimits",
    "QuotaGate",
    "SharedProviderLimits",
    "TokenBucket",
    "compute_request_hash",
]
