"""The v2 schema: immutable call capture plus mutable grouping.

`raw_calls` rows are append-only; the database itself refuses UPDATE and DELETE (triggers
created by the initial Alembic migration). Groups and memberships stay mutable.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base
from .types import JSONType, UTCDateTime, Vector, utcnow

CALL_STATUSES = ("success", "failed", "timeout", "cancelled")
# BigInteger ids on PostgreSQL; SQLite only auto-increments a plain INTEGER PRIMARY KEY.
IdType = BigInteger().with_variant(Integer(), "sqlite")


class RawCall(Base):
    __tablename__ = "raw_calls"
    __table_args__ = (
        CheckConstraint(
            "status IN ('success', 'failed', 'timeout', 'cancelled')", name="status_valid"
        ),
        Index("ix_raw_calls_provider_status", "provider", "status"),
        # Analytics: per-model counts and latency percentiles of successful text calls are
        # read from this index alone, already in latency order (revision 0002). Status comes
        # first so that a filter on modality alone does not pick it over a table scan.
        Index(
            "ix_raw_calls_status_modality_model_latency",
            "status",
            "modality",
            "provider",
            "model",
            "latency_ms",
        ),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(64), nullable=False)
    model: Mapped[str | None] = mapped_column(String(255), index=True)
    modality: Mapped[str] = mapped_column(String(32), nullable=False, default="text")
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    # sha256 of the canonical request (see services); indexed for dedup, cache and resume.
    request_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    request_json: Mapped[dict] = mapped_column(JSONType, nullable=False)
    response_json: Mapped[dict | None] = mapped_column(JSONType)
    error_json: Mapped[dict | None] = mapped_column(JSONType)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    tokens_json: Mapped[dict | None] = mapped_column(JSONType)
    metadata_json: Mapped[dict | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, default=utcnow, index=True
    )

    def to_dict(self) -> dict:
        return {c.key: getattr(self, c.key) for c in self.__mapper__.column_attrs}


class CallArtifact(Base):
    __tablename__ = "call_artifacts"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("raw_calls.id"), nullable=False, index=True)
    artifact_type: Mapped[str] = mapped_column(String(64), nullable=False)
    uri: Mapped[str] = mapped_column(Text, nullable=False)
    content_type: Mapped[str | None] = mapped_column(String(255))
    byte_size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    metadata_json: Mapped[dict | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class EmbeddingVector(Base):
    __tablename__ = "embedding_vectors"
    __table_args__ = (CheckConstraint("dimension > 0", name="dimension_positive"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("raw_calls.id"), nullable=False, index=True)
    model: Mapped[str] = mapped_column(String(255), nullable=False, index=True)
    dimension: Mapped[int] = mapped_column(Integer, nullable=False)
    norm: Mapped[float | None] = mapped_column(Float)
    vector: Mapped[np.ndarray] = mapped_column(Vector(), nullable=False)
    # Cache identity (see EmbeddingService); unique so concurrent writers cannot duplicate.
    request_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    text: Mapped[str | None] = mapped_column(Text)
    metadata_json: Mapped[dict | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class Group(Base):
    __tablename__ = "groups"
    # One group per (type, name) makes get_or_create race-free (insert-or-ignore, then read).
    __table_args__ = (UniqueConstraint("group_type", "name"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    group_type: Mapped[str] = mapped_column(String(64), nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    metadata_json: Mapped[dict | None] = mapped_column(JSONType)

    members: Mapped[list[GroupMember]] = relationship(
        back_populates="group", order_by="GroupMember.position", cascade="all, delete-orphan"
    )


class GroupMember(Base):
    __tablename__ = "group_members"
    __table_args__ = (UniqueConstraint("group_id", "call_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    group_id: Mapped[int] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), nullable=False, index=True
    )
    call_id: Mapped[int] = mapped_column(ForeignKey("raw_calls.id"), nullable=False, index=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    position: Mapped[int | None] = mapped_column(Integer)
    role: Mapped[str | None] = mapped_column(String(64))

    group: Mapped[Group] = relationship(back_populates="members")
    call: Mapped[RawCall] = relationship(lazy="joined")


class MigrationLedger(Base):
    """Which legacy v1 row became which raw_call: makes the v1 -> v2 migration idempotent and
    incremental; append-only by database triggers (revision 0004). `source` identifies the v1
    database by content, not by URL (see services/migration/source.py), so a moved or copied
    SQLite file is still recognised."""

    __tablename__ = "migration_ledger"
    # One raw_call per (source, v1 row): a concurrent second run fails instead of duplicating.
    __table_args__ = (UniqueConstraint("source", "v1_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64), nullable=False)
    v1_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    raw_call_id: Mapped[int] = mapped_column(
        ForeignKey("raw_calls.id"), nullable=False, unique=True
    )
    migrated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class MigrationQuarantine(Base):
    """A v1 row the migration could not take (and skipped, when asked to): which source and
    v1 id, the field at fault and why (revision 0004). Mutable bookkeeping: an entry is removed
    when a later run migrates the row after it was fixed."""

    __tablename__ = "migration_quarantine"
    __table_args__ = (UniqueConstraint("source", "v1_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64), nullable=False)
    v1_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    field: Mapped[str] = mapped_column(String(64), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    quarantined_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class RunFailure(Base):
    """A Dagster run that failed (recorded by the run-failure sensor) so the analytics can
    report failed runs next to failed calls. Mutable bookkeeping, not call capture."""

    __tablename__ = "run_failures"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    job_name: Mapped[str] = mapped_column(String(255), nullable=False)
    partition_key: Mapped[str | None] = mapped_column(String(255))
    failed_steps: Mapped[list | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    failed_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, default=utcnow, index=True
    )


class VariationResult(Base):
    """One answer-variation metric value (services/variation): per cell (run, prompt, target),
    per prompt and pair of targets (`other` = the second target), or per cell between a run and
    its baseline (`other` = the baseline run group's name). Append-only like raw_calls (triggers
    of revision 0005): a recomputation adds rows, and readers take the newest per key."""

    __tablename__ = "variation_results"
    __table_args__ = (
        CheckConstraint("n >= 1", name="n_positive"),
        Index("ix_variation_results_run_strategy_metric", "run_group_id", "strategy_key", "metric"),
        Index("ix_variation_results_prompt_set_metric", "prompt_set", "metric"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    run_group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"), nullable=False)
    prompt_set: Mapped[str] = mapped_column(String(64), nullable=False)
    prompt_id: Mapped[str] = mapped_column(String(100), nullable=False)
    target: Mapped[str] = mapped_column(String(100), nullable=False)
    other: Mapped[str | None] = mapped_column(String(255))
    metric: Mapped[str] = mapped_column(String(64), nullable=False)
    value: Mapped[float] = mapped_column(Float, nullable=False)
    n: Mapped[int] = mapped_column(Integer, nullable=False)
    n_other: Mapped[int | None] = mapped_column(Integer)
    strategy: Mapped[str] = mapped_column(String(32), nullable=False)
    # strategy + a hash of its settings (embedder, model, threshold): which results belong
    # together; the settings themselves are in settings_json.
    strategy_key: Mapped[str] = mapped_column(String(64), nullable=False)
    settings_json: Mapped[dict | None] = mapped_column(JSONType)
    method_version: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
