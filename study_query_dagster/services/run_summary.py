"""What a run of a prompt set looks like: counts by status and failure type, latency
percentiles, tokens, cost, per-target figures and a preview of the answers."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..db import CallFilter, DatabaseConnection, RawCallRepository, StatisticsRepository


@dataclass
class RunSummary:
    run_group_id: int
    calls: int  # rows in the run group, every attempt of every execution
    by_status: dict[str, int]
    failures_by_type: dict[str, int]
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float | None  # None when any successful call has no known price
    unpriced_calls: int
    per_target: list[dict[str, Any]]
    preview: list[dict[str, Any]]

    @property
    def successes(self) -> int:
        return self.by_status.get("success", 0)


def summarize_run(db: DatabaseConnection, run_group_id: int, preview_limit: int = 10) -> RunSummary:
    where = CallFilter(group_id=run_group_id, modality="text")
    with db.session_scope() as session:
        calls = RawCallRepository(session).calls_in_group(run_group_id, modality="text")
        stats = StatisticsRepository(session)
        p50, p95 = stats.latency_percentiles(where)
        per_target = stats.get_provider_stats(where)
    by_status = Counter(c.status for c in calls)
    failures = Counter(
        (c.error_json or {}).get("type") or c.status for c in calls if c.status != "success"
    )
    successes = [c for c in calls if c.status == "success"]
    tokens: Counter = Counter()
    cost, unpriced = 0.0, 0
    for call in successes:
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            tokens[key] += int((call.tokens_json or {}).get(key) or 0)
        price = (call.metadata_json or {}).get("cost_usd")
        if price is None:
            unpriced += 1
        else:
            cost += float(price)
    preview = [
        {
            "prompt": (c.metadata_json or {}).get("prompt_id"),
            "target": (c.metadata_json or {}).get("target"),
            "sample": (c.metadata_json or {}).get("sample_index"),
            "answer": (c.response_json or {}).get("text", ""),
        }
        for c in successes[:preview_limit]
    ]
    return RunSummary(
        run_group_id=run_group_id,
        calls=len(calls),
        by_status=dict(by_status),
        failures_by_type=dict(failures),
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        prompt_tokens=tokens["prompt_tokens"],
        completion_tokens=tokens["completion_tokens"],
        total_tokens=tokens["total_tokens"],
        cost_usd=None if unpriced else round(cost, 6),
        unpriced_calls=unpriced,
        per_target=per_target,
        preview=preview,
    )
