"""The tables of one run that the per-set results show and export: per target, answers per
prompt and target, and every call. Rows are plain dicts, ready for CSV or Dagster metadata."""

from __future__ import annotations

from typing import Any

from ..formatting import round_sig
from .run_data import RunData

TARGET_TABLE = [
    "target",
    "provider",
    "model",
    "params",
    "calls",
    "success_rate",
    "p50_latency_ms",
    "p95_latency_ms",
    "total_tokens",
    "estimated_cost_usd",
    "cost_status",
]
ANSWER_TABLE = [
    "prompt",
    "target",
    "samples",
    "answered",
    "distinct_answers",
    "top_answer",
    "top_answer_share",
]
CALL_TABLE = [
    "call_id",
    "item_key",
    "prompt",
    "target",
    "sample",
    "status",
    "answer",
    "error_type",
    "error",
    "latency_ms",
    "total_tokens",
    "cost_usd",
    "created_at",
]


def target_rows(run: RunData, *, rounded: bool = True) -> list[dict[str, Any]]:
    """One row per target of the run: its label with provider, model and parameters, calls,
    success rate, latency p50/p95 of successful calls, tokens and estimated cost."""
    fix = round_sig if rounded else (lambda v, *_: v)
    return [
        {
            "target": row["target"] or f"{row['provider']}/{row['model']}",
            "provider": row["provider"],
            "model": row["model"],
            "params": row["params"],
            "calls": int(row["calls"]),
            "success_rate": fix(row["success_rate"]),
            "p50_latency_ms": fix(row["p50_latency_ms"]),
            "p95_latency_ms": fix(row["p95_latency_ms"]),
            "total_tokens": int(row["total_tokens"]),
            "estimated_cost_usd": fix(row["estimated_cost_usd"]),
            "cost_status": row["cost_status"],
        }
        for row in run.per_target
    ]


def answer_rows(run: RunData) -> list[dict[str, Any]]:
    """Per prompt and target: samples, how many were answered, how many distinct answers, and
    the most frequent answer with its share of the answered samples."""
    rows = []
    for prompt in run.prompts:
        for target in run.targets:
            samples = run.cell(prompt.id, target.label)
            answers = [g for g in run.groups(prompt.id, target.label) if g["kind"] == "answer"]
            answered = sum(g["count"] for g in answers)
            top = answers[0] if answers else None
            rows.append(
                {
                    "prompt": prompt.id,
                    "target": target.label,
                    "samples": len(samples),
                    "answered": answered,
                    "distinct_answers": len(answers),
                    "top_answer": top["text"] if top else None,
                    "top_answer_share": round_sig(top["count"] / answered) if top else None,
                }
            )
    return rows


def call_rows(run: RunData) -> list[dict[str, Any]]:
    """Every call the run captured for its items (every attempt of every execution)."""
    rows = []
    for result in run.items:
        item = result.item
        for call in result.calls:
            rows.append(
                {
                    "call_id": call.id,
                    "item_key": item.key,
                    "prompt": item.prompt_id,
                    "target": item.target_label,
                    "sample": item.sample_index,
                    "status": call.status,
                    "answer": call.answer,
                    "error_type": call.error_type,
                    "error": call.error_message,
                    "latency_ms": call.latency_ms,
                    "total_tokens": call.total_tokens,
                    "cost_usd": call.cost_usd,
                    "created_at": call.created_at.isoformat(),
                }
            )
    return rows
