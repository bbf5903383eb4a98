"""SQL building blocks shared by the repositories and analytics: filters and percentiles.

Percentiles use window functions (ROW_NUMBER/COUNT OVER) with linear interpolation, the same
definition as PostgreSQL's `percentile_cont` and numpy's default, so SQLite and PostgreSQL
return identical figures from one query shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, Text, case, func, literal, literal_column, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from .models_v2 import CALL_STATUSES, GroupMember, RawCall


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
        # Linear interpolation between the two ranks around `position`: rank rn weighs
        # 1 - |position - rn| when that is positive. (No CAST to find the lower rank:
        # PostgreSQL rounds where SQLite truncates.)
        distance = func.abs(1 + q * (ranked.c.n - 1) - ranked.c.rn)
        columns.append(
            func.sum(case((distance < 1, ranked.c.v * (1 - distance)), else_=0)).label(
                f"p{round(q * 100)}"
            )
        )
    group_cols = [ranked.c[f"g{i}"] for i in range(len(group_by))]
    stmt = select(*group_cols, *columns)
    if group_cols:
        stmt = stmt.group_by(*group_cols)
    return stmt


MANY_GROUPS = 500  # above this many groups, percentiles() runs the one-statement query


def percentiles(
    session: Session,
    value: ColumnElement,
    group_by: Sequence[ColumnElement],
    percentiles: Sequence[float],
    where: CallFilter | None = None,
    many_groups: int = MANY_GROUPS,
) -> dict[tuple, list[float | None]]:
    """{group key tuple: [one value per percentile]}, same definition as `percentiles_query`
    but cheaper on large tables: the group sizes first, then one ranking pass that returns
    only the rows at the ranks the interpolation needs. (A second window function for the
    group size would double the sort work; SQLite has no percentile function.)"""

    def scoped(stmt: Select) -> Select:
        stmt = stmt.where(value.is_not(None))
        return where.apply(stmt) if where is not None else stmt

    keys = [col.label(f"g{i}") for i, col in enumerate(group_by)]
    sizes_stmt = scoped(select(*keys, func.count().label("n")))
    if group_by:
        sizes_stmt = sizes_stmt.group_by(*group_by)
    sizes = {tuple(r[:-1]): r[-1] for r in session.execute(sizes_stmt) if r[-1]}
    if not sizes:
        return {}
    if len(sizes) > many_groups:
        rows = session.execute(percentiles_query(value, group_by, percentiles, where))
        width = len(group_by)
        return {tuple(r[:width]): [_number(x) for x in r[width:]] for r in rows}

    def bounds(n: int, q: float) -> tuple[int, float]:
        position = 1 + q * (n - 1)
        return int(position), position - int(position)

    needed = set()
    for n in sizes.values():
        for q in percentiles:
            low, frac = bounds(n, q)
            needed.update((low, low + 1) if frac else (low,))
    partition = list(group_by) or [literal(1)]
    ranked = scoped(
        select(
            *keys,
            value.label("v"),
            func.row_number().over(partition_by=partition, order_by=value).label("rn"),
        )
    ).subquery()
    at_rank = {
        (tuple(r[:-2]), r.rn): float(r.v)
        for r in session.execute(select(ranked).where(ranked.c.rn.in_(sorted(needed))))
    }
    out: dict[tuple, list[float | None]] = {}
    for key, n in sizes.items():
        values = []
        for q in percentiles:
            low, frac = bounds(n, q)
            v = at_rank[key, low]
            values.append(v + (at_rank[key, low + 1] - v) * frac if frac else v)
        out[key] = values
    return out


def _number(value) -> float | None:
    return None if value is None else float(value)


def token_field(name: str) -> ColumnElement:
    """tokens_json[name] as a number (JSON_EXTRACT on SQLite, ->> on PostgreSQL)."""
    return RawCall.tokens_json[name].as_float()


# Time buckets as UTC wall-clock starts: strftime on SQLite (which stores naive UTC text),
# date_trunc on PostgreSQL after converting the timestamptz to UTC (date_trunc alone would
# truncate in the session's time zone). Formats are literals, not bind parameters, so the
# GROUP BY expression is textually the SELECT expression on PostgreSQL.
GRANULARITIES = ("day", "hour", "minute")
_SQLITE_BUCKET_FORMAT = {
    "day": "%Y-%m-%d 00:00:00",
    "hour": "%Y-%m-%d %H:00:00",
    "minute": "%Y-%m-%d %H:%M:00",
}


def time_bucket(column: ColumnElement, granularity: str, dialect: str) -> ColumnElement:
    """Start of the day/hour/minute containing `column`, in UTC."""
    if granularity not in GRANULARITIES:
        raise ValueError(
            f"granularity must be one of {', '.join(GRANULARITIES)} (got {granularity!r})"
        )
    if dialect == "postgresql":
        return func.date_trunc(
            literal_column(f"'{granularity}'"), func.timezone(literal_column("'UTC'"), column)
        )
    return func.strftime(literal_column(f"'{_SQLITE_BUCKET_FORMAT[granularity]}'"), column)


def time_series_query(granularity: str, dialect: str, where: CallFilter | None = None) -> Select:
    """Per time bucket and provider: calls, successes, failures (any status but success),
    total tokens and the mean latency of successful calls."""
    bucket = time_bucket(RawCall.created_at, granularity, dialect)
    ok = RawCall.status == "success"
    stmt = select(
        bucket.label("bucket"),
        RawCall.provider,
        func.count().label("calls"),
        func.sum(case((ok, 1), else_=0)).label("successes"),
        func.sum(case((ok, 0), else_=1)).label("failures"),
        func.sum(token_field("total_tokens")).label("total_tokens"),
        func.avg(case((ok, RawCall.latency_ms))).label("avg_latency_ms"),
    ).group_by(bucket, RawCall.provider)
    stmt = (where or CallFilter()).apply(stmt)
    return stmt.order_by(bucket, RawCall.provider)


# What call statistics can be grouped by. A target is the prompt set's target label (kept in
# each call's metadata by the run), so two temperatures of one model are two targets; `params`
# (the sampling parameters as sent, JSON text) tells apart a label whose settings changed
# between versions of a set. Left out of `params`: what a run varies per item — the seed (sample
# i is sent with seed + i) and the offline provider's scripted answers (one quota per prompt).
# Calls made outside a prompt set have no set or target (NULL).
GROUP_KEYS = ("provider", "model", "prompt_set", "target", "params")
MODEL_KEYS = ("provider", "model")
TARGET_KEYS = ("target", "provider", "model", "params")


PER_ITEM_PARAMS = ("seed", "offline_answers")


def params_without_seed(dialect: str) -> ColumnElement:
    """The params as sent, without `PER_ITEM_PARAMS`, as JSON text."""
    if dialect == "postgresql":
        params = RawCall.request_json["params"]
        for name in PER_ITEM_PARAMS:
            params = params.op("-")(literal_column(f"'{name}'"))
        return params.cast(Text)
    paths = [literal_column(f"'$.params.{name}'") for name in PER_ITEM_PARAMS]
    return func.json_extract(
        func.json_remove(RawCall.request_json, *paths), literal_column("'$.params'")
    )


def scripted() -> ColumnElement:
    """1 when the call was sent with scripted offline answers, else 0."""
    script = RawCall.request_json[("params", "offline_answers")].as_string()
    return case((script.is_not(None), 1), else_=0)


def sent_seed() -> ColumnElement:
    """The seed a call was sent with (None without one)."""
    return RawCall.request_json[("params", "seed")].as_integer()


def group_columns(keys: Sequence[str], dialect: str) -> list[ColumnElement]:
    unknown = [k for k in keys if k not in GROUP_KEYS]
    if unknown:
        raise ValueError(f"cannot group calls by {unknown}; known: {', '.join(GROUP_KEYS)}")
    columns = {
        "provider": RawCall.provider,
        "model": RawCall.model,
        "prompt_set": RawCall.metadata_json["prompt_set"].as_string(),
        "target": RawCall.metadata_json["target"].as_string(),
    }
    return [params_without_seed(dialect) if k == "params" else columns[k] for k in keys]


def provider_totals_query(
    where: CallFilter | None = None, keys: Sequence[str] = MODEL_KEYS, dialect: str = "sqlite"
) -> Select:
    """Per group of `keys` (default provider and model), in one pass over the rows (each token
    count is read from the JSON once): calls, calls per status, mean latency of successful
    calls, token sums, mean total tokens, and `split` / `unsplit`: calls with a
    prompt/completion token split (which can be priced) and calls that cannot be priced for
    lack of one — successful calls without `prompt_tokens`, or calls reporting only a total
    (migrated v1 rows). Failed calls without any token count are taken as unbilled. Grouped by
    `params`, it also gives the lowest and highest seed sent (`seed_min`, `seed_max`) and
    whether answers were scripted (`scripted`)."""
    inner = (
        (where or CallFilter())
        .apply(
            select(
                *[
                    column.label(key)
                    for key, column in zip(keys, group_columns(keys, dialect), strict=True)
                ],
                sent_seed().label("seed"),
                scripted().label("scripted"),
                RawCall.status,
                RawCall.latency_ms,
                token_field("prompt_tokens").label("pt"),
                token_field("completion_tokens").label("ct"),
                token_field("total_tokens").label("tt"),
            )
        )
        .subquery()
    )
    c = inner.c
    ok = c.status == "success"
    unsplit = c.pt.is_(None) & (ok | c.tt.is_not(None))
    group = [c[key] for key in keys]
    return select(
        *group,
        func.count().label("calls"),
        *[func.sum(case((c.status == s, 1), else_=0)).label(s) for s in CALL_STATUSES],
        func.avg(case((ok, c.latency_ms))).label("avg_ms"),
        func.sum(c.pt).label("prompt_tokens"),
        func.sum(c.ct).label("completion_tokens"),
        func.sum(c.tt).label("total_tokens"),
        func.avg(c.tt).label("avg_tokens"),
        func.sum(case((c.pt.is_not(None), 1), else_=0)).label("split"),
        func.sum(case((unsplit, 1), else_=0)).label("unsplit"),
        func.min(c.seed).label("seed_min"),
        func.max(c.seed).label("seed_max"),
        func.max(c.scripted).label("scripted"),
    ).group_by(*group)
