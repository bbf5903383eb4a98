"""Database layer: v1 (legacy) and v2 models, portable types, connection, and one repository per
concern. All SQL of the project lives in this package."""

from .connection import DatabaseConnection, normalize_url
from .groups import GroupRepository
from .inference_repository import InferenceRepository
from .models_v1 import InferenceRun
from .models_v2 import (
    CALL_STATUSES,
    CallArtifact,
    EmbeddingVector,
    Group,
    GroupMember,
    MigrationLedger,
    MigrationQuarantine,
    RawCall,
    RunFailure,
)
from .queries import CallFilter
from .quota_store import QuotaStore
from .raw_calls import RawCallRepository, probe_append_only, validate_raw_call
from .run_calls import RunCallsRepository
from .run_failures import RunFailureRepository
from .statistics import StatisticsRepository
from .vector_store import StoredEmbedding, StoredVector, VectorStore, validate_embedding

__all__ = [
    "CALL_STATUSES",
    "CallArtifact",
    "CallFilter",
    "DatabaseConnection",
    "EmbeddingVector",
    "Group",
    "GroupMember",
    "GroupRepository",
    "InferenceRepository",
    "InferenceRun",
    "MigrationLedger",
    "MigrationQuarantine",
    "QuotaStore",
    "RawCall",
    "RawCallRepository",
    "RunCallsRepository",
    "RunFailure",
    "RunFailureRepository",
    "StatisticsRepository",
    "StoredEmbedding",
    "StoredVector",
    "VectorStore",
    "normalize_url",
    "probe_append_only",
    "validate_embedding",
    "validate_raw_call",
]
