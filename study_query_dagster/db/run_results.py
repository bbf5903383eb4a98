"""`RunResultsRepository`: what the results of a run read from its calls — each call's outcome
in a few columns (the JSON fields it needs extracted in SQL, so the request's messages are never
loaded) — on SQLite and PostgreSQL alike. The run's totals are `RunCallsRepository.totals`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from .dialect import Repository
from .models_v2 import GroupMember, RawCall, VariationResult
from .queries import token_field


@dataclass(frozen=True)
class CallRow:
    id: int
    request_hash: str | None
    status: str
    answer: str | None
    error_type: str | None
    error_message: str | None
    latency_ms: float | None
    total_tokens: int | None
    cost_usd: float | None
    attempts: int | None
    created_at: datetime
    target: str | None = None  # the target label the run recorded with the call


def _in_group(group_id: int, modality: str):
    members = select(GroupMember.call_id).where(GroupMember.group_id == group_id)
    return (RawCall.id.in_(members), RawCall.modality == modality)


class RunResultsRepository(Repository):
    def call_rows(self, group_id: int, modality: str = "text") -> list[CallRow]:
        """Every call of the group, oldest first, as `CallRow`s."""
        stmt = (
            select(
                RawCall.id,
                RawCall.request_hash,
                RawCall.status,
                RawCall.response_json["text"].as_string(),
                RawCall.error_json["type"].as_string(),
                RawCall.error_json["message"].as_string(),
                RawCall.latency_ms,
                token_field("total_tokens"),
                RawCall.metadata_json["cost_usd"].as_float(),
                RawCall.metadata_json["attempts"].as_float(),
                RawCall.created_at,
                RawCall.metadata_json["target"].as_string(),
            )
            .where(*_in_group(group_id, modality))
            .order_by(RawCall.id)
        )
        return [
            CallRow(
                *row[:7],
                total_tokens=None if row[7] is None else int(row[7]),
                cost_usd=row[8],
                attempts=None if row[9] is None else int(row[9]),
                created_at=row[10],
                target=row[11],
            )
            for row in self.session.execute(stmt)
        ]

    def variation_strategy(self, group_id: int) -> str | None:
        """The strategy key of the run's most recent answer-variation results (None without)."""
        stmt = (
            select(VariationResult.strategy_key)
            .where(VariationResult.run_group_id == group_id)
            .order_by(VariationResult.id.desc())
            .limit(1)
        )
        return self.session.scalar(stmt)
