"""Provider quotas shared by every process that calls a provider (revision 0006).

A *scope* is one account's quota (a provider, and its endpoint when it has one). Times are
seconds on the limiters' clock (wall-clock time in production, so machines can share them).

- `quota_scopes`: the scope's requests-per-minute and tokens-per-minute buckets.
- `quota_windows`: what the server last said about a model's quota (the adaptive gate).
- `quota_leases`: what each live holder (a run step's limiter) has in flight per model and how
  many of its requests are waiting; a row whose `expires_at` has passed belongs to a holder that
  stopped renewing it (crashed) and no longer counts.
"""

from __future__ import annotations

from sqlalchemy import Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base


class QuotaScope(Base):
    __tablename__ = "quota_scopes"

    scope: Mapped[str] = mapped_column(String(255), primary_key=True)
    rpm_level: Mapped[float | None] = mapped_column(Float)
    rpm_at: Mapped[float | None] = mapped_column(Float)
    tpm_level: Mapped[float | None] = mapped_column(Float)
    tpm_at: Mapped[float | None] = mapped_column(Float)


class QuotaWindow(Base):
    __tablename__ = "quota_windows"

    scope: Mapped[str] = mapped_column(String(255), primary_key=True)
    model: Mapped[str] = mapped_column(String(255), primary_key=True)  # '' for no model
    requests_limit: Mapped[float | None] = mapped_column(Float)
    requests_remaining: Mapped[float | None] = mapped_column(Float)
    requests_ends_at: Mapped[float | None] = mapped_column(Float)
    tokens_limit: Mapped[float | None] = mapped_column(Float)
    tokens_remaining: Mapped[float | None] = mapped_column(Float)
    tokens_ends_at: Mapped[float | None] = mapped_column(Float)
    paused_until: Mapped[float | None] = mapped_column(Float)
    pauses: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class QuotaLease(Base):
    __tablename__ = "quota_leases"
    __table_args__ = (Index("ix_quota_leases_scope_expires_at", "scope", "expires_at"),)

    scope: Mapped[str] = mapped_column(String(255), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(255), primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    tokens: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    waiting: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    expires_at: Mapped[float] = mapped_column(Float, nullable=False)
