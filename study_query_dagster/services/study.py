"""`StudyService`: what a researcher asks of the v2 store, as pandas DataFrames.

Every method aggregates in SQL (on SQLite and PostgreSQL alike) and only brings the result
rows into pandas, so the figures stay fast on millions of calls. Every method takes the same
filters:

- `group_id`: calls that are members of this group (or any of these groups) — a prompt set, a
  run, a migrated v1 batch. A run's calls are members of both its `run` and `prompt_set`
  groups, so a prompt-set filter covers all of its runs.
- `provider`, `model`: one name or a list.
- `date_range`: `(start, end)`, either side may be None; naive datetimes are taken as UTC.
- `modality`: "text" by default (analytics of answers); "embedding", a list, or None for all.

Costs come from the price table (`services/pricing.py`): a model with no price has cost None,
never 0; calls without a prompt/completion token split (e.g. migrated v1 rows, which only know
a total) cannot be priced, so a model's cost is then a lower bound and says so in
`cost_status` ("complete" | "partial" | "unknown").
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pandas as pd

from ..db import (
    CALL_STATUSES,
    CallFilter,
    DatabaseConnection,
    RawCallRepository,
    StatisticsRepository,
)
from ..db.types import to_utc
from ..log import get_logger
from .formatting import ELLIPSIS, truncate
from .pricing import PriceTable, get_price_table

logger = get_logger(__name__)

# The figures of a group of calls (one model, one target), after the columns that name it.
CALL_FIGURES = [
    "calls",
    *CALL_STATUSES,
    "success_rate",
    "avg_latency_ms",
    "p50_latency_ms",
    "p95_latency_ms",
    "avg_tokens",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "calls_without_token_split",
    "estimated_cost_usd",
    "cost_status",
]
COMPARISON_COLUMNS = ["provider", "model", *CALL_FIGURES]
# Targets are the prompt set's labels (provider, model and parameters beside them): two
# temperatures of one model are two rows here, one row in the per-model comparison.
TARGET_COLUMNS = ["target", "provider", "model", "params", *CALL_FIGURES]
TIME_SERIES_METRICS = (
    "calls",
    "successes",
    "failures",
    "success_rate",
    "total_tokens",
    "avg_latency_ms",
    "p95_latency_ms",
)
# p95 per bucket needs a sort of every row by (bucket, provider, latency): asked for, not default
DEFAULT_TIME_SERIES_METRICS = TIME_SERIES_METRICS[:-1]
CALL_COLUMNS = ["id", "created_at", "provider", "model", "status"]
RECENT_COLUMNS = [*CALL_COLUMNS, "prompt", "answer", "latency_ms", "total_tokens", "error"]
SEARCH_COLUMNS = [*CALL_COLUMNS, "matched_in", "snippet", "prompt", "answer"]

# Where a search term was found, by (in the prompt, in the answer); "request" is elsewhere in
# the request, e.g. a system message or an earlier turn.
MATCHED_IN = {
    (True, True): "prompt+answer",
    (True, False): "prompt",
    (False, True): "answer",
    (False, False): "request",
}


# --- reading captured calls ---------------------------------------------------------------


def prompt_text(request_json: Mapping[str, Any] | None) -> str | None:
    """The prompt of a captured call: `request_json["prompt"]` when the caller gave plain text
    (and for migrated v1 rows), else the last user message of a chat request."""
    if not isinstance(request_json, Mapping):
        return None
    if isinstance(request_json.get("prompt"), str):
        return request_json["prompt"]
    messages = request_json.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, Mapping) and message.get("role") == "user":
                return _content_text(message.get("content"))
    return None


def _content_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multi-part content: keep the text parts
        parts = [p.get("text") for p in content if isinstance(p, Mapping)]
        return "\n".join(p for p in parts if isinstance(p, str)) or None
    return None


def answer_text(response_json: Mapping[str, Any] | None) -> str | None:
    if isinstance(response_json, Mapping) and isinstance(response_json.get("text"), str):
        return response_json["text"]
    return None


def error_text(error_json: Mapping[str, Any] | None) -> str | None:
    if not isinstance(error_json, Mapping):
        return None
    message = error_json.get("message") or error_json.get("error_type")
    return str(message) if message is not None else None


def params_text(params: Mapping[str, Any] | None) -> str:
    """Sampling parameters for a table cell: `temperature=0, max_tokens=32` (sorted by name)."""
    if not params:
        return ""
    return ", ".join(f"{k}={_param_value(v)}" for k, v in sorted(params.items()))


def _param_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return "[" + ", ".join(map(repr, value)) + "]"
    return str(value)


def snippet(text: str, term: str, width: int = 60) -> str:
    """`width` characters either side of the first case-insensitive match of `term`."""
    at = text.casefold().find(term.casefold())
    if at < 0:
        return truncate(text, 2 * width) or ""
    start, end = max(at - width, 0), min(at + len(term) + width, len(text))
    return (ELLIPSIS if start else "") + text[start:end] + (ELLIPSIS if end < len(text) else "")


# --- the service --------------------------------------------------------------------------


class StudyService:
    """Analytics over the v2 store (`raw_calls` and groups). Read-only."""

    def __init__(self, db: DatabaseConnection, price_table: PriceTable | None = None):
        self.db = db
        self.prices = price_table if price_table is not None else get_price_table()

    @staticmethod
    def call_filter(
        *,
        group_id: int | Sequence[int] | None = None,
        provider: str | Sequence[str] | None = None,
        model: str | Sequence[str] | None = None,
        date_range: tuple[datetime | None, datetime | None] | None = None,
        modality: str | Sequence[str] | None = "text",
    ) -> CallFilter:
        """The filters every method accepts, checked and turned into a `CallFilter`."""
        if date_range is not None:
            if not isinstance(date_range, tuple | list) or len(date_range) != 2:
                raise ValueError(f"date_range must be (start, end) (got {date_range!r})")
            for side in date_range:
                if side is not None and not isinstance(side, datetime):
                    raise ValueError(f"date_range bounds must be datetimes or None (got {side!r})")
            start, end = date_range
            if start is not None and end is not None and to_utc(start) > to_utc(end):
                raise ValueError(f"date_range starts after it ends ({start} > {end})")
            date_range = (start, end)
        if isinstance(group_id, numbers.Integral):
            group_id = int(group_id)
        elif group_id is not None:
            group_id = [int(g) for g in group_id]
        return CallFilter(
            provider=provider,
            model=model,
            modality=modality,
            group_id=group_id,
            date_range=date_range,
        )

    # --- provider comparison --------------------------------------------------------------

    def get_provider_comparison(self, **filters: Any) -> pd.DataFrame:
        """One row per (provider, model): calls and counts per status, success rate, latency of
        successful calls (avg/p50/p95, ms), tokens (avg per call, sums) and the estimated cost
        in USD with its `cost_status`."""
        where = self.call_filter(**filters)
        started = time.perf_counter()
        with self.db.session_scope() as session:
            stats = StatisticsRepository(session).get_provider_stats(where)
        rows = []
        for row in stats:
            cost, status = self._cost(row)
            rows.append({**row, "estimated_cost_usd": cost, "cost_status": status})
        frame = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
        frame["estimated_cost_usd"] = frame["estimated_cost_usd"].astype("float64")
        logger.info(
            "provider comparison: %d provider/model rows in %.0f ms",
            len(frame),
            (time.perf_counter() - started) * 1000,
        )
        return frame

    def get_target_comparison(
        self, *, per_prompt_set: bool = False, **filters: Any
    ) -> pd.DataFrame:
        """One row per target — the prompt set's target label, with its provider, model and
        `params` (as text, e.g. `max_tokens=32, temperature=0`) — with the figures of
        `get_provider_comparison`. Filter by a prompt set's group to compare its targets;
        `per_prompt_set=True` adds a `prompt_set` column and keeps equal labels of different
        sets apart. Calls made outside a prompt set (ad-hoc, migrated) have no target and
        are grouped by provider and model."""
        where = self.call_filter(**filters)
        with self.db.session_scope() as session:
            stats = StatisticsRepository(session).get_target_stats(
                where, per_prompt_set=per_prompt_set
            )
        rows = []
        for row in stats:
            cost, status = self._cost(row)
            rows.append(
                {
                    **row,
                    "params": params_text(row["params"]),
                    "estimated_cost_usd": cost,
                    "cost_status": status,
                }
            )
        columns = (["prompt_set"] if per_prompt_set else []) + TARGET_COLUMNS
        frame = pd.DataFrame(rows, columns=columns)
        frame["estimated_cost_usd"] = frame["estimated_cost_usd"].astype("float64")
        return frame

    def _cost(self, row: Mapping[str, Any]) -> tuple[float | None, str]:
        price = self.prices.lookup(row["provider"], row["model"])
        split, unsplit = row["calls_with_token_split"], row["calls_without_token_split"]
        if price is None or (unsplit and not split):
            return None, "unknown"
        cost = price.cost(row["prompt_tokens"], row["completion_tokens"])
        return cost, "partial" if unsplit else "complete"

    # --- recent calls and search ----------------------------------------------------------

    def get_recent_inferences(
        self, limit: int = 50, *, truncate_at: int | None = 100, **filters: Any
    ) -> pd.DataFrame:
        """The newest calls, with prompt and answer cut to `truncate_at` characters."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0 (got {limit})")
        where = self.call_filter(**filters)
        with self.db.session_scope() as session:
            calls = RawCallRepository(session).query_raw_calls(
                provider=where.provider,
                model=where.model,
                modality=where.modality,
                group_id=where.group_id,
                date_range=where.date_range,
                limit=limit,
            )
            rows = [
                {
                    "id": c.id,
                    "created_at": c.created_at,
                    "provider": c.provider,
                    "model": c.model,
                    "status": c.status,
                    "prompt": truncate(prompt_text(c.request_json), truncate_at),
                    "answer": truncate(answer_text(c.response_json), truncate_at),
                    "latency_ms": c.latency_ms,
                    "total_tokens": _total_tokens(c.tokens_json),
                    "error": error_text(c.error_json),
                }
                for c in calls
            ]
        return _frame(rows, RECENT_COLUMNS)

    def search_prompts(
        self, term: str, limit: int = 100, *, truncate_at: int | None = 200, **filters: Any
    ) -> pd.DataFrame:
        """Calls whose prompt or answer contains `term` (case-insensitive), newest first, with
        where it matched and a snippet around the match."""
        if not isinstance(term, str) or not term.strip():
            raise ValueError(f"search term must be a non-empty string (got {term!r})")
        if limit < 0:
            raise ValueError(f"limit must be >= 0 (got {limit})")
        where = self.call_filter(**filters)
        with self.db.session_scope() as session:
            calls = RawCallRepository(session).search_raw_calls(term, limit, where=where)
            rows = []
            for c in calls:
                prompt, answer = prompt_text(c.request_json), answer_text(c.response_json)
                needle = term.casefold()
                in_prompt = prompt is not None and needle in prompt.casefold()
                in_answer = answer is not None and needle in answer.casefold()
                matched = MATCHED_IN[in_prompt, in_answer]
                source = prompt if in_prompt else answer if in_answer else ""
                rows.append(
                    {
                        "id": c.id,
                        "created_at": c.created_at,
                        "provider": c.provider,
                        "model": c.model,
                        "status": c.status,
                        "matched_in": matched,
                        "snippet": snippet(source, term) if source else None,
                        "prompt": truncate(prompt, truncate_at),
                        "answer": truncate(answer, truncate_at),
                    }
                )
        logger.info("search %r: %d calls", term, len(rows))
        return _frame(rows, SEARCH_COLUMNS)

    def count_prompt_matches(self, term: str, **filters: Any) -> int:
        """How many calls `search_prompts` would find without a limit."""
        if not isinstance(term, str) or not term.strip():
            raise ValueError(f"search term must be a non-empty string (got {term!r})")
        where = self.call_filter(**filters)
        with self.db.session_scope() as session:
            return RawCallRepository(session).count_search_matches(term, where=where)

    # --- time series ----------------------------------------------------------------------

    def get_time_series_data(
        self,
        granularity: str = "day",
        metric: str | Sequence[str] | None = None,
        **filters: Any,
    ) -> pd.DataFrame:
        """Long format, one row per (bucket, provider): `bucket` (UTC start of the day, hour
        or minute) and `provider`, then the metric(s) asked for, from `TIME_SERIES_METRICS`
        (default: all but p95_latency_ms, the costly one). Latency covers successful calls."""
        metrics = _metrics(metric)
        where = self.call_filter(**filters)
        with self.db.session_scope() as session:
            rows = StatisticsRepository(session).time_series(
                granularity, where, with_p95="p95_latency_ms" in metrics
            )
        records = [
            {**r, "success_rate": r["successes"] / r["calls"] if r["calls"] else None} for r in rows
        ]
        frame = pd.DataFrame(records, columns=["bucket", "provider", *TIME_SERIES_METRICS])
        frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True)
        for column in ("success_rate", "avg_latency_ms", "p95_latency_ms"):
            frame[column] = frame[column].astype("float64")
        return frame[["bucket", "provider", *metrics]]

    # --- summary --------------------------------------------------------------------------

    def get_summary_stats(self, **filters: Any) -> dict[str, Any]:
        """Totals over the filtered calls: counts (per status, failures = anything but
        success), success rate, first/last call time, providers and models, tokens, latency
        of successful calls (avg/p50/p95) and the estimated cost (with `cost_partial` and the
        models that could not be priced)."""
        where = self.call_filter(**filters)
        with self.db.session_scope() as session:
            stats = StatisticsRepository(session)
            span = stats.call_span(where)
            p50, p95 = stats.latency_percentiles(where)
        # counts, tokens, providers and costs come from the per-model comparison
        comparison = self.get_provider_comparison(**filters)
        known = comparison["estimated_cost_usd"].dropna()
        unpriced = comparison[comparison["cost_status"] == "unknown"]
        partial = comparison[comparison["cost_status"] == "partial"]
        by_status = {s: int(comparison[s].sum()) for s in CALL_STATUSES}
        calls = int(comparison["calls"].sum())
        models = comparison["model"]
        return {
            "total_calls": calls,
            "by_status": by_status,
            "failures": calls - by_status["success"],
            "success_rate": by_status["success"] / calls if calls else None,
            "first_call_at": span["first"],
            "last_call_at": span["last"],
            "providers": sorted(set(comparison["provider"])),
            "models": sorted({m for m in models if isinstance(m, str)}),
            "total_tokens": int(comparison["total_tokens"].sum()),
            "avg_latency_ms": span["avg_latency_ms"],
            "p50_latency_ms": p50,
            "p95_latency_ms": p95,
            "estimated_cost_usd": float(known.sum()) if len(known) else None,
            "cost_partial": bool(len(unpriced) or len(partial)),
            "unpriced_models": _model_names(unpriced),
            "partially_priced_models": _model_names(partial),
        }


def _metrics(metric: str | Sequence[str] | None) -> list[str]:
    if metric is None:
        return list(DEFAULT_TIME_SERIES_METRICS)
    wanted = [metric] if isinstance(metric, str) else list(metric)
    unknown = [m for m in wanted if m not in TIME_SERIES_METRICS]
    if unknown or not wanted:
        raise ValueError(f"metric must be one of {', '.join(TIME_SERIES_METRICS)} (got {metric!r})")
    return wanted


def _total_tokens(tokens_json: Mapping[str, Any] | None) -> int | None:
    if isinstance(tokens_json, Mapping) and isinstance(tokens_json.get("total_tokens"), int):
        return tokens_json["total_tokens"]
    return None


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    if "created_at" in frame:
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    return frame


def _model_names(frame: pd.DataFrame) -> list[str]:
    # pandas turns a missing model into NaN in a string column
    return [
        f"{p}/{m}" if isinstance(m, str) and m else p
        for p, m in zip(frame["provider"], frame["model"], strict=True)
    ]
