"""What a run of a prompt set looks like: counts by status and failure type, latency
percentiles, tokens, cost, per-target figures (per target label, never merged by model) and a
preview of the answers. Aggregated in SQL: a run of thousands of calls is summarised without
loading them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..db import CallFilter, DatabaseConnection, RunCallsRepository, StatisticsRepository
from .study import StudyService


@dataclass
class RunSummary:
    run_group_id: int
    calls: int  # rows in the run group, every attempt of every execution
    by_status: dict[str, int]
    failures_by_type: dict[str, int]
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    prompt_tokens: int  # of successful calls, like the cost
    completion_tokens: int
    total_tokens: int
    cost_usd: float | None  # None when any successful call has no known price
    unpriced_calls: int
    per_target: list[dict[str, Any]]  # StudyService.get_target_comparison rows
    preview: list[dict[str, Any]]

    @property
    def successes(self) -> int:
        return self.by_status.get("success", 0)


def summarize_run(db: DatabaseConnection, run_group_id: int, preview_limit: int = 10) -> RunSummary:
    where = CallFilter(group_id=run_group_id, modality="text")
    with db.read_session() as session:
        calls = RunCallsRepository(session)
        totals = calls.totals(run_group_id)
        preview = calls.preview(run_group_id, preview_limit)
        p50, p95 = StatisticsRepository(session).latency_percentiles(where)
    per_target = StudyService(db).get_target_comparison(group_id=run_group_id)
    return RunSummary(
        run_group_id=run_group_id,
        calls=totals.calls,
        by_status=totals.by_status,
        failures_by_type=totals.failures_by_type,
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        prompt_tokens=totals.prompt_tokens,
        completion_tokens=totals.completion_tokens,
        total_tokens=totals.total_tokens,
        cost_usd=None if totals.unpriced else round(totals.cost_usd, 6),
        unpriced_calls=totals.unpriced,
        per_target=per_target.to_dict("records"),
        preview=preview,
    )
