"""`InferenceRepository`: the v1 (legacy) `inference_runs` table, as the original tool used it.

The original's methods behave as they did (including `get_batch_summary`'s keys and its answer
for an unknown batch, and a batch's rows newest first); the project adds validation with clear
errors, an explicit `created_at`, escaped search terms and stable tie-breaking by id. One
deliberate difference: `get_provider_stats` gives None, not 0, for an average nothing reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from ..log import get_logger
from .models_v1 import InferenceRun

logger = get_logger(__name__)


def _validate(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = dict(row)
    if "metadata" in out:
        out["metadata_json"] = out.pop("metadata")
    for field in ("prompt", "response", "provider"):
        if not isinstance(out.get(field), str):
            raise ValueError(f"{where}: field '{field}' is required (got {out.get(field)!r})")
    if len(out["provider"]) > 50:
        raise ValueError(f"{where}: field 'provider' is longer than 50 characters")
    return out


class InferenceRepository:
    def __init__(self, session: Session):
        self.session = session

    def insert_inference_run(
        self,
        prompt: str,
        response: str,
        provider: str,
        tokens: int | None = None,
        latency_ms: float | None = None,
        metadata: dict | None = None,
        batch_id: str | None = None,
        created_at: datetime | None = None,
    ) -> int:
        """Insert one row; its id. No metadata is stored as `{}`, as the original did."""
        row = _validate(
            {
                "prompt": prompt,
                "response": response,
                "provider": provider,
                "tokens": tokens,
                "latency_ms": latency_ms,
                "metadata": metadata or {},
                "batch_id": batch_id,
                **({"created_at": created_at} if created_at else {}),
            },
            "inference_run",
        )
        run = InferenceRun(**row)
        self.session.add(run)
        self.session.flush()
        logger.info("inserted inference_run id=%s provider=%s", run.id, provider)
        return run.id

    def batch_insert_inferences(self, rows: Iterable[Mapping[str, Any]]) -> list[int]:
        """Insert rows (dicts of the columns; `metadata` or `metadata_json`); their ids in
        input order. A bad row fails the batch before anything is inserted."""
        validated = [_validate(r, f"inference_runs row {i}") for i, r in enumerate(rows)]
        if not validated:
            return []
        stmt = insert(InferenceRun).returning(InferenceRun.id, sort_by_parameter_order=True)
        ids = list(self.session.execute(stmt, validated).scalars())
        logger.info("inserted %d inference_runs", len(ids))
        return ids

    def get_inference_by_id(self, inference_id: int) -> InferenceRun | None:
        return self.session.get(InferenceRun, inference_id)

    def query_inferences(
        self,
        provider: str | None = None,
        date_range: tuple[datetime | None, datetime | None] | None = None,
        limit: int | None = 100,
        offset: int = 0,
    ) -> list[InferenceRun]:
        """Rows newest first, optionally of one provider and within (start, end) (inclusive;
        either end may be None)."""
        stmt = select(InferenceRun)
        if provider:
            stmt = stmt.where(InferenceRun.provider == provider)
        if date_range is not None:
            start, end = date_range
            if start is not None:
                stmt = stmt.where(InferenceRun.created_at >= start)
            if end is not None:
                stmt = stmt.where(InferenceRun.created_at <= end)
        stmt = stmt.order_by(InferenceRun.created_at.desc(), InferenceRun.id.desc()).offset(offset)
        if limit is not None:
            stmt = stmt.limit(limit)
        return list(self.session.scalars(stmt))

    def get_provider_stats(self) -> list[dict[str, Any]]:
        stmt = (
            select(
                InferenceRun.provider,
                func.count().label("count"),
                func.avg(InferenceRun.tokens).label("avg_tokens"),
                func.avg(InferenceRun.latency_ms).label("avg_latency_ms"),
                func.sum(InferenceRun.tokens).label("total_tokens"),
            )
            .group_by(InferenceRun.provider)
            .order_by(InferenceRun.provider)
        )
        return [
            {
                "provider": r.provider,
                "count": r.count,
                "avg_tokens": float(r.avg_tokens) if r.avg_tokens is not None else None,
                "avg_latency_ms": float(r.avg_latency_ms) if r.avg_latency_ms is not None else None,
                "total_tokens": int(r.total_tokens or 0),
            }
            for r in self.session.execute(stmt)
        ]

    def search_by_prompt(self, term: str, limit: int = 50) -> list[InferenceRun]:
        """Rows whose prompt contains `term` (case-insensitive, `%` and `_` taken literally),
        newest first."""
        escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = (
            select(InferenceRun)
            .where(InferenceRun.prompt.ilike(f"%{escaped}%", escape="\\"))
            .order_by(InferenceRun.created_at.desc(), InferenceRun.id.desc())
            .limit(limit)
        )
        return list(self.session.scalars(stmt))

    def get_total_count(self) -> int:
        return self.session.scalar(select(func.count()).select_from(InferenceRun)) or 0

    def get_count_by_provider(self, provider: str) -> int:
        stmt = select(func.count()).select_from(InferenceRun)
        return self.session.scalar(stmt.where(InferenceRun.provider == provider)) or 0

    def get_inferences_by_batch_id(self, batch_id: str) -> list[InferenceRun]:
        """A batch's rows, newest first (as the original listed them)."""
        stmt = (
            select(InferenceRun)
            .where(InferenceRun.batch_id == batch_id)
            .order_by(InferenceRun.created_at.desc(), InferenceRun.id.desc())
        )
        return list(self.session.scalars(stmt))

    def get_batch_summary(self, batch_id: str) -> dict[str, Any]:
        """A batch's statistics, aggregated in SQL: the original's keys (`total_runs`,
        `providers`, `total_tokens`, `avg_tokens`, `avg_latency_ms`, `min_latency_ms`,
        `max_latency_ms`, `created_at_range`) plus `count`, `first_created_at` and
        `last_created_at`. An unknown batch gives zeros and an empty provider list, as the
        original did; averages over rows without a value are 0.0 (the original's choice)."""
        stmt = select(
            func.count().label("count"),
            func.sum(InferenceRun.tokens).label("total_tokens"),
            func.avg(InferenceRun.tokens).label("avg_tokens"),
            func.avg(InferenceRun.latency_ms).label("avg_latency_ms"),
            func.min(InferenceRun.latency_ms).label("min_latency_ms"),
            func.max(InferenceRun.latency_ms).label("max_latency_ms"),
            func.min(InferenceRun.created_at).label("first_at"),
            func.max(InferenceRun.created_at).label("last_at"),
        ).where(InferenceRun.batch_id == batch_id)
        row = self.session.execute(stmt).one()
        providers = self.session.scalars(
            select(InferenceRun.provider)
            .where(InferenceRun.batch_id == batch_id)
            .distinct()
            .order_by(InferenceRun.provider)
        ).all()
        return {
            "batch_id": batch_id,
            "total_runs": row.count,
            "providers": list(providers),
            "total_tokens": int(row.total_tokens or 0),
            "avg_tokens": _float(row.avg_tokens, 0.0),
            "avg_latency_ms": _float(row.avg_latency_ms, 0.0),
            "min_latency_ms": _float(row.min_latency_ms),
            "max_latency_ms": _float(row.max_latency_ms),
            "created_at_range": (row.first_at, row.last_at),
            "count": row.count,
            "first_created_at": row.first_at,
            "last_created_at": row.last_at,
        }


def _float(value: Any, default: float | None = None) -> float | None:
    return float(value) if value is not None else default
