"""`StatisticsRepository`: aggregates over `raw_calls` computed in SQL on both backends (per
provider/model totals, latency percentiles, time series), so only result rows leave the
database."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import case, func, select

from .dialect import Repository
from .models_v2 import CALL_STATUSES, RawCall
from .queries import (
    CallFilter,
    percentiles,
    percentiles_query,
    provider_totals_query,
    time_bucket,
    time_series_query,
)


def _successes(where: CallFilter) -> CallFilter:
    return CallFilter(**{**where.__dict__, "status": "success"})


class StatisticsRepository(Repository):
    """Read-only aggregates within one session."""

    def get_provider_stats(self, where: CallFilter | None = None) -> list[dict[str, Any]]:
        """Per provider and model: counts by status, success rate, latency (avg/p50/p95 of
        successful calls), token sums, and how many calls carry a prompt/completion token
        split (`calls_with_token_split`) or lack one (`calls_without_token_split`, e.g.
        migrated v1 rows, which only know a total). Aggregated in SQL on both backends."""
        where = where or CallFilter()
        pct = percentiles(
            self.session,
            RawCall.latency_ms,
            [RawCall.provider, RawCall.model],
            [0.5, 0.95],
            _successes(where),
        )
        totals = provider_totals_query(where).order_by("provider", "model")
        out = []
        for r in self.session.execute(totals):
            p50, p95 = pct.get((r.provider, r.model), (None, None))
            out.append(
                {
                    "provider": r.provider,
                    "model": r.model,
                    "calls": r.calls,
                    **{s: int(getattr(r, s) or 0) for s in CALL_STATUSES},
                    "success_rate": (r.success or 0) / r.calls if r.calls else None,
                    "avg_latency_ms": _num(r.avg_ms),
                    "p50_latency_ms": _num(p50),
                    "p95_latency_ms": _num(p95),
                    "avg_tokens": _num(r.avg_tokens),
                    "prompt_tokens": int(r.prompt_tokens or 0),
                    "completion_tokens": int(r.completion_tokens or 0),
                    "total_tokens": int(r.total_tokens or 0),
                    "calls_with_token_split": int(r.split or 0),
                    "calls_without_token_split": int(r.unsplit or 0),
                }
            )
        return out

    def latency_percentiles(
        self, where: CallFilter | None = None, quantiles: tuple[float, ...] = (0.5, 0.95)
    ) -> tuple[float | None, ...]:
        """Latency percentiles (linear interpolation) of the successful calls matching `where`."""
        found = percentiles(
            self.session, RawCall.latency_ms, [], list(quantiles), _successes(where or CallFilter())
        ).get(())
        return tuple(_num(v) for v in found) if found else tuple(None for _ in quantiles)

    def call_span(self, where: CallFilter | None = None) -> dict[str, Any]:
        """First and last call time, and the mean latency of successful calls."""
        stmt = (where or CallFilter()).apply(
            select(
                func.min(RawCall.created_at).label("first"),
                func.max(RawCall.created_at).label("last"),
                func.avg(case((RawCall.status == "success", RawCall.latency_ms))).label("avg"),
            )
        )
        row = self.session.execute(stmt).one()
        return {"first": row.first, "last": row.last, "avg_latency_ms": _num(row.avg)}

    def time_series(
        self, granularity: str, where: CallFilter | None = None, *, with_p95: bool = False
    ) -> list[dict[str, Any]]:
        """One row per (UTC time bucket, provider): calls, successes, failures, token sum, mean
        latency of successful calls and, when asked (it sorts every row), their p95."""
        where = where or CallFilter()
        rows = self.session.execute(time_series_query(granularity, self.dialect, where)).all()
        p95: dict = {}
        if with_p95:
            bucket = time_bucket(RawCall.created_at, granularity, self.dialect)
            # One statement: with computed bucket keys, counting groups first costs more than it
            # saves (see queries.percentiles).
            query = percentiles_query(
                RawCall.latency_ms, [bucket, RawCall.provider], [0.95], _successes(where)
            )
            p95 = {(str(r[0]), r[1]): r.p95 for r in self.session.execute(query)}
        return [
            {
                "bucket": r.bucket,
                "provider": r.provider,
                "calls": int(r.calls),
                "successes": int(r.successes or 0),
                "failures": int(r.failures or 0),
                "total_tokens": int(r.total_tokens or 0),
                "avg_latency_ms": _num(r.avg_latency_ms),
                "p95_latency_ms": _num(p95.get((str(r.bucket), r.provider))),
            }
            for r in rows
        ]


def _num(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value
