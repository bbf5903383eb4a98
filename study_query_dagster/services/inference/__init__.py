"""Chat inference: `InferenceService` and the parts it is made of.

| module | job |
| --- | --- |
| `requests` | validate what a caller gives, preprocess, hash (`compute_request_hash`) |
| `attempts` | send one request under the provider's limits, retried by the `RetryPolicy` |
| `records` | the raw_calls rows (the capture format) and the results callers get |
| `dedup` | identical in-flight requests share one call and one row |
| `batching` | the worker pool behind `run_batch` / `run_sampling` |
| `store`, `capture` | the database side: lookups, groups, group-commit writes |
| `rate_limits`, `quota`, `clock` | `TokenBucket`, `ProviderLimits` (concurrency and RPM/TPM per provider, in one process), `QuotaGate` (the quota the server reports, per model) |
| `shared_limits` | `SharedProviderLimits`: the same limits held for every process, through the database |
| `service` | `InferenceService`, the front door |
"""

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
