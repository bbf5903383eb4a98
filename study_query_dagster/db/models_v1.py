"""The legacy v1 schema, exactly as the original tool laid it out (table `inference_runs`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Float, Integer, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from .base import V1Base
from .types import UTCDateTime


class InferenceRun(V1Base):
    __tablename__ = "inference_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt: Mapped[str] = mapped_column(Text, nullable=False)
    response: Mapped[str] = mapped_column(Text, nullable=False)
    provider: Mapped[str] = mapped_column(String(50), nullable=False, index=True)
    tokens: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    # The column is called "metadata" in v1; that name is reserved on declarative classes.
    metadata_json: Mapped[dict | None] = mapped_column("metadata", JSON)
    batch_id: Mapped[str | None] = mapped_column(String(36), index=True)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), server_default=func.now(), nullable=False, index=True
    )

    def __repr__(self) -> str:
        return (
            f"<InferenceRun(id={self.id}, provider={self.provider}, created_at={self.created_at})>"
        )

    def to_dict(self) -> dict:
        """The row as a dict; `created_at` as an ISO 8601 string (as the original tool gave it)."""
        return {
            "id": self.id,
            "prompt": self.prompt,
            "response": self.response,
            "provider": self.provider,
            "tokens": self.tokens,
            "latency_ms": self.latency_ms,
            "metadata": self.metadata_json,
            "batch_id": self.batch_id,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }
