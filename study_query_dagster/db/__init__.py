"""Database layer: v1 (legacy) and v2 models, portable types, connection, and one repository per
concern. All SQL of the project lives in this package."""

from .answer_clusters import ANSWER_CLUSTER, ANSWER_CLUSTERING, AnswerClusterRepository
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
    VariationResult,
)
from .queries import CallFilter
from .quota_store import QuotaStore
from .raw_calls import RawCallRepository, probe_append_only, validate_raw_call
from .run_calls import RunCallsRepository
from .run_failures import RunFailureRepository
from .run_results import CallRow, RunResultsRepository
from .semantic_clusters import (
    REPRESENTATIVE,
    SEMANTIC_CLUSTER,
    ClusterSpec,
    SemanticClusterRepository,
    StoredCluster,
)
from .statistics import StatisticsRepository
from .variation_results import HistoryPoint, VariationResultRepository, validate_result
from .vector_store import StoredEmbedding, StoredVector, VectorStore, validate_embedding

__all__ = [
    "ANSWER_CLUSTER",
    "ANSWER_CLUSTERING",
    "AnswerClusterRepository",
    "CALL_STATUSES",
    "CallArtifact",
    "CallRow",
    "CallFilter",
    "ClusterSpec",
    "DatabaseConnection",
    "EmbeddingVector",
    "Group",
    "GroupMember",
    "GroupRepository",
    "HistoryPoint",
    "InferenceRepository",
    "InferenceRun",
    "MigrationLedger",
    "MigrationQuarantine",
    "QuotaStore",
    "REPRESENTATIVE",
    "RawCall",
    "RawCallRepository",
    "RunCallsRepository",
    "RunFailure",
    "RunFailureRepository",
    "RunResultsRepository",
    "SEMANTIC_CLUSTER",
    "SemanticClusterRepository",
    "StatisticsRepository",
    "StoredCluster",
    "StoredEmbedding",
    "StoredVector",
    "VariationResult",
    "VariationResultRepository",
    "VectorStore",
    "normalize_url",
    "probe_append_only",
    "validate_embedding",
    "validate_raw_call",
    "validate_result",
]
