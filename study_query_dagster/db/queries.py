"""SQL building blocks shared by the repositories and analytics: filters and percentiles.

Percentiles use window functions (ROW_NUMBER/COUNT OVER) with linear interpolation, the same
definition as PostgreSQL's `percentile_cont` and numpy's default, so SQLite and PostgreSQL
return identical figures from one query shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Integer, Select, case, cast, func, literal, select
from sqlalchemy.sql import ColumnElement

from .models_v2 import GroupMember, RawCall


@dataclass(frozen=True)
class CallFilter:
    """Which raw_calls to look at. Every field is optional; None means 'any'."""

    provider: str | Sequence[str] | None = None
    model: str | Sequence[str] | None = None
    status: str | Sequence[str] | None = None
    modality: str | Sequence[str] | None = None
    group_id: int | Sequence[int] | None = None
    date_range: tuple[datetime | None, datetime | None] | None = None

    def apply(self, stmt: Select) -> Select:
        for column, value in (
            (RawCall.provider, self.provider),
            (RawCall.model, self.model),
            (RawCall.status, self.status),
            (RawCall.modality, self.modality),
        ):
            if value is not None:
                stmt = stmt.where(_match(column, value))
        if self.group_id is not None:
            members = select(GroupMember.call_id).where(_match(GroupMember.group_id, self.group_id))
            stmt = stmt.where(RawCall.id.in_(members))
        if self.date_range is not None:
            start, end = self.date_range
            if start is not None:
                stmt = stmt.where(RawCall.created_at >= start)
            if end is not None:
                stmt = stmt.where(RawCall.created_at <= end)
        return stmt


def _match(column, value) -> ColumnElement[bool]:
    if isinstance(value, str | int):
        return column == value
    return column.in_(list(value))


def percentiles_query(
    value: ColumnElement,
    group_by: Sequence[ColumnElement],
    percentiles: Sequence[float],
    where: CallFilter | None = None,
) -> Select:
    """One row per group: the group columns, then one `p{int(q*100)}` column per percentile."""
    keys = [col.label(f"g{i}") for i, col in enumerate(group_by)]
    partition = list(group_by) or [literal(1)]
    ranked = select(
        *keys,
        value.label("v"),
        func.row_number().over(partition_by=partition, order_by=value).label("rn"),
        func.count().over(partition_by=partition).label("n"),
    ).where(value.is_not(None))
    if where is not None:
        ranked = where.apply(ranked)
    ranked = ranked.subquery()

    columns = []
    for q in percentiles:
        position = 1 + q * (ranked.c.n - 1)
        low = cast(position, Integer)  # floor, as position >= 1
        frac = position - low
        columns.append(
            func.sum(
                case(
                    (ranked.c.rn == low, ranked.c.v * (1 - frac)),
                    (ranked.c.rn == low + 1, ranked.c.v * frac),
                    else_=0,
                )
            ).label(f"p{round(q * 100)}")
        )
    group_cols = [ranked.c[f"g{i}"] for i in range(len(group_by))]
    stmt = select(*group_cols, *columns)
    if group_cols:
        stmt = stmt.group_by(*group_cols)
    return stmt


def token_field(name: str) -> ColumnElement:
    """tokens_json[name] as a number (JSON_EXTRACT on SQLite, ->> on PostgreSQL)."""
    return RawCall.tokens_json[name].as_float()
