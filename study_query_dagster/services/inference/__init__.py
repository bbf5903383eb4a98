"""Chat inference: `InferenceService` and the parts it is made of.

| module | job |
| --- | --- |
| `requests` | validate what a caller gives, preprocess, hash (`compute_request_hash`) |
| `attempts` | send one request under the provider's limits, retried by the `RetryPolicy` |
| `records` | the raw_calls rows (the capture format) and the results callers get |
| `dedup` | identical in-flight requests share one call and one row |
| `batching` | the worker pool behind `run_batch` / `run_sampling` |
| `store`, `capture` | the database side: lookups, groups, group-commit writes |
| `rate_limits` | `TokenBucket`, `ProviderLimits` (concurrency and RPM/TPM per provider) |
| `service` | `InferenceService`, the front door |
"""

from .batching import BatchResults
from .capture import CaptureWriter, Membership
from .rate_limits import Clock, ProviderLimits, TokenBucket
from .requests import RESERVED_METADATA_KEYS, compute_request_hash
from .service import InferenceService

__all__ = [
    "RESERVED_METADATA_KEYS",
    "BatchResults",
    "CaptureWriter",
    "Clock",
    "InferenceService",
    "Membership",
    "ProviderLimits",
    "TokenBucket",
    "compute_request_hash",
]
