"""`StatisticsRepository`: aggregates over `raw_calls` computed in SQL on both backends (per
provider/model totals, latency percentiles, time series), so only result rows leave the
database."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, func, select

from .dialect import Repository
from .models_v2 import CALL_STATUSES, RawCall
from .queries import (
    MODEL_KEYS,
    TARGET_KEYS,
    CallFilter,
    group_columns,
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
        return self.get_call_stats(where, MODEL_KEYS)

    def get_target_stats(
        self, where: CallFilter | None = None, *, per_prompt_set: bool = False
    ) -> list[dict[str, Any]]:
        """The same figures per target: the prompt set's target label with its provider, model
        and sampling parameters (`params`, a dict), per prompt set too when asked. Calls made
        outside a prompt set (ad-hoc, migrated) have target None and group by model."""
        keys = (("prompt_set",) if per_prompt_set else ()) + TARGET_KEYS
        rows = self.get_call_stats(where, keys)
        for row in rows:
            params = _json_object(row["params"])
            low, high = row.pop("seed_min"), row.pop("seed_max")
            if params is not None and low is not None:
                # one seed per sample (seed + i) reads as a range
                params["seed"] = int(low) if low == high else f"{int(low)}..{int(high)}"
            if row.pop("scripted") and params is not None:
                params["offline_answers"] = "scripted"
            row["params"] = params
        return rows

    def get_call_stats(
        self, where: CallFilter | None = None, keys: Sequence[str] = MODEL_KEYS
    ) -> list[dict[str, Any]]:
        """The figures of `get_provider_stats` per group of `keys` (see `queries.GROUP_KEYS`),
        ordered by those keys (missing values first, on both backends)."""
        where = where or CallFilter()
        columns = group_columns(keys, self.dialect)
        pct = percentiles(self.session, RawCall.latency_ms, columns, [0.5, 0.95], _successes(where))
        out = []
        for r in self.session.execute(provider_totals_query(where, keys, self.dialect)):
            group = tuple(getattr(r, k) for k in keys)
            p50, p95 = pct.get(group, (None, None))
            out.append(
                {
                    **dict(zip(keys, group, strict=True)),
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
                    **(
                        {"seed_min": r.seed_min, "seed_max": r.seed_max, "scripted": r.scripted}
                        if "params" in keys
                        else {}
                    ),
                }
            )
        # NULLs sort first on SQLite and last on PostgreSQL: order here, the same on both.
        out.sort(key=lambda row: [(row[k] is not None, row[k] or "") for k in keys])
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


def _json_object(text: str | None) -> dict[str, Any] | None:
    """A JSON object read back as text (key order as stored; dicts compare equal anyway)."""
    if text is None:
        return None
    value = json.loads(text) if isinstance(text, str) else text
    return value if isinstance(value, dict) else None


def _num(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value
