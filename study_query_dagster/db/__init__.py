"""Database layer: v1 (legacy) and v2 models, portable types, connection, repositories."""

from .connection import DatabaseConnection, normalize_url
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
from .raw_call_repository import RawCallRepository, validate_raw_call

__all__ = [
    "CALL_STATUSES",
    "CallArtifact",
    "CallFilter",
    "DatabaseConnection",
    "EmbeddingVector",
    "Group",
    "GroupMember",
    "InferenceRepository",
    "InferenceRun",
    "MigrationLedger",
    "MigrationQuarantine",
    "RawCall",
    "RawCallRepository",
    "RunFailure",
    "normalize_url",
    "validate_raw_call",
]
