"""`RunCallsRepository`: what a prompt-set run reads about its own calls, a chunk or an aggregate
at a time, so that a run of any size is resumed, summarised, checked and embedded in flat
memory: which of a chunk of request hashes already succeeded, each one's outcome, counts by
status and failure type, token and cost sums, a preview, the successful answers page by page,
and blocks of group positions reserved for an execution (or a shard of one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update

from .dialect import Repository
from .models_v2 import Group, GroupMember, RawCall
from .queries import token_field

POSITIONS_KEY = "positions_reserved"  # run group metadata: the last position handed out


@dataclass(frozen=True)
class HashOutcome:
    """What a request hash has in a run: whether any call succeeded, and the newest call."""

    succeeded: bool
    status: str
    error_type: str | None


@dataclass(frozen=True)
class CallTotals:
    calls: int
    by_status: dict[str, int]
    failures_by_type: dict[str, int]
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float
    unpriced: int  # successful calls without a known price
    first_call_id: int | None


def _in_group(group_id: int, modality: str | None = "text"):
    stmt = select().select_from(RawCall).join(GroupMember, GroupMember.call_id == RawCall.id)
    stmt = stmt.where(GroupMember.group_id == group_id)
    return stmt.where(RawCall.modality == modality) if modality else stmt


class RunCallsRepository(Repository):
    def has_calls(self, group_id: int) -> bool:
        stmt = _in_group(group_id).add_columns(RawCall.id).limit(1)
        return self.session.scalar(stmt) is not None

    def succeeded_hashes(self, group_id: int, hashes: Sequence[str]) -> set[str]:
        """Which of `hashes` (one chunk) have a successful call in the group."""
        stmt = (
            _in_group(group_id)
            .add_columns(RawCall.request_hash)
            .where(RawCall.status == "success", RawCall.request_hash.in_(list(hashes)))
            .distinct()
        )
        return set(self.session.scalars(stmt))

    def outcomes(self, group_id: int, hashes: Sequence[str]) -> dict[str, HashOutcome]:
        """Per hash of `hashes` (one chunk) that has calls in the group: did one succeed, and
        the newest call's status and error type."""
        stmt = (
            _in_group(group_id)
            .add_columns(
                RawCall.request_hash, RawCall.status, RawCall.error_json["type"].as_string()
            )
            .where(RawCall.request_hash.in_(list(hashes)))
            .order_by(RawCall.id)
        )
        succeeded: set[str] = set()
        latest: dict[str, tuple[str, str | None]] = {}
        for request_hash, status, error_type in self.session.execute(stmt):
            latest[request_hash] = (status, error_type)
            if status == "success":
                succeeded.add(request_hash)
        return {h: HashOutcome(h in succeeded, s, e) for h, (s, e) in latest.items()}

    def totals(self, group_id: int) -> CallTotals:
        """Counts by status and failure type, tokens and cost of the successes: in SQL."""
        by_status = dict(
            self.session.execute(
                _in_group(group_id)
                .add_columns(RawCall.status, func.count())
                .group_by(RawCall.status)
            ).all()
        )
        error_type = RawCall.error_json["type"].as_string()
        failures: dict[str, int] = {}
        rows = self.session.execute(
            _in_group(group_id)
            .add_columns(error_type, RawCall.status, func.count())
            .where(RawCall.status != "success")
            .group_by(error_type, RawCall.status)
        )
        for kind, status, count in rows:
            failures[kind or status] = failures.get(kind or status, 0) + count
        cost = RawCall.metadata_json["cost_usd"].as_float()
        sums = self.session.execute(
            _in_group(group_id)
            .add_columns(
                func.sum(token_field("prompt_tokens")),
                func.sum(token_field("completion_tokens")),
                func.sum(token_field("total_tokens")),
                func.sum(cost),
                func.count().filter(cost.is_(None)),
            )
            .where(RawCall.status == "success")
        ).one()
        first = self.session.scalar(_in_group(group_id).add_columns(func.min(RawCall.id)))
        return CallTotals(
            calls=sum(by_status.values()),
            by_status=by_status,
            failures_by_type=failures,
            prompt_tokens=int(sums[0] or 0),
            completion_tokens=int(sums[1] or 0),
            total_tokens=int(sums[2] or 0),
            cost_usd=float(sums[3] or 0.0),
            unpriced=int(sums[4] or 0),
            first_call_id=first,
        )

    def preview(self, group_id: int, limit: int) -> list[dict[str, Any]]:
        """The first `limit` successful answers (oldest first): prompt id, target, sample and
        answer, extracted in SQL (the request's messages are never loaded)."""
        meta = RawCall.metadata_json
        stmt = (
            _in_group(group_id)
            .add_columns(
                meta["prompt_id"].as_string(),
                meta["target"].as_string(),
                meta["sample_index"].as_float(),
                RawCall.response_json["text"].as_string(),
            )
            .where(RawCall.status == "success")
            .order_by(RawCall.id)
            .limit(limit)
        )
        return [
            {
                "prompt": prompt,
                "target": target,
                "sample": None if sample is None else int(sample),
                "answer": answer or "",
            }
            for prompt, target, sample, answer in self.session.execute(stmt)
        ]

    def answers_page(self, group_id: int, after_id: int, size: int) -> list[tuple[int, Any]]:
        """(call id, response text) of up to `size` successful calls with ids above
        `after_id`, in id order (keyset pages: no OFFSET scan)."""
        text = RawCall.response_json["text"].as_string()
        stmt = (
            _in_group(group_id)
            .add_columns(RawCall.id, text)
            .where(RawCall.status == "success", RawCall.id > after_id, text.is_not(None))
            .order_by(RawCall.id)
            .limit(size)
        )
        return [tuple(row) for row in self.session.execute(stmt)]

    def member_page(self, group_id: int, after: tuple[int, int], size: int) -> list[tuple]:
        """(position, member id, call id) of the group's members after `after` (position,
        member id), in position order."""
        position = func.coalesce(GroupMember.position, 0)
        stmt = (
            select(position, GroupMember.id, GroupMember.call_id)
            .where(GroupMember.group_id == group_id)
            .where((position > after[0]) | ((position == after[0]) & (GroupMember.id > after[1])))
            .order_by(position, GroupMember.id)
            .limit(size)
        )
        return [tuple(row) for row in self.session.execute(stmt)]

    def positions_used(self, group_id: int, first: int, last: int) -> bool:
        """Whether any member holds a position in [first, last]."""
        stmt = (
            select(GroupMember.id)
            .where(GroupMember.group_id == group_id, GroupMember.position.between(first, last))
            .limit(1)
        )
        return self.session.scalar(stmt) is not None

    def reserve_positions(self, group_id: int, count: int) -> int:
        """Hand out `count` group positions no one else has or will get; returns the first.
        Call in a transaction of its own: it locks the group's row (PostgreSQL) or takes the
        write lock (SQLite) first, so concurrent shards get disjoint blocks."""
        self.session.execute(update(Group).where(Group.id == group_id).values(id=Group.id))
        group = self.session.get(Group, group_id, populate_existing=True)
        if group is None:
            raise LookupError(f"group {group_id} does not exist")
        meta = dict(group.metadata_json or {})
        members = self.session.scalar(
            select(func.max(GroupMember.position)).where(GroupMember.group_id == group_id)
        )
        first = max(int(meta.get(POSITIONS_KEY) or 0), int(members or 0)) + 1
        group.metadata_json = {**meta, POSITIONS_KEY: first + count - 1}
        self.session.flush()
        return first
