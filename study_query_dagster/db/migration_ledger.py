"""`MigrationLedgerRepository`: the v2 side of the v1 -> v2 migration.

Writes one chunk of migrated rows (raw_calls, their `migration_ledger` entries and their `batch`
group memberships) in one transaction, and reads back what the ledger says was migrated: the
ids a source already has, the rows that identify a source, and the per-batch and per-row data
the backfill checks compare with the v1 side.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, insert, select, tuple_, update
from sqlalchemy.orm import Session

from . import RawCallRepository
from .connection import DatabaseConnection
from .legacy_reader import ID_PAGE, bytewise
from .models_v2 import Group, GroupMember, MigrationLedger, RawCall
from .types import utcnow
from .upsert import insert_ignore

BATCH_GROUP_TYPE = "batch"

# One migrated row: (v1 id, batch_id or None, validated raw_calls row).
ChunkRow = tuple[int, str | None, dict[str, Any]]


def _tagged(source_id: str):
    return RawCall.metadata_json["v1_source"].as_string() == source_id


def _member_order(source_id: str):
    """Sort key of batch members: created_at, then v1 id (as v1 listed a batch), then call id."""
    ledger = and_(MigrationLedger.raw_call_id == RawCall.id, MigrationLedger.source == source_id)
    return ledger, (RawCall.created_at, func.coalesce(MigrationLedger.v1_id, -1), RawCall.id)


class MigrationLedgerRepository:
    """Ledger, batch groups and migrated rows of one target database. Each method runs in
    its own transaction."""

    def __init__(self, db: DatabaseConnection):
        self.db = db

    # --- ledger reads -----------------------------------------------------------------------

    def migrated_ids(self, source_id: str, low: int, high: int) -> set[int]:
        """v1 ids between `low` and `high` that the ledger has for this source."""
        stmt = select(MigrationLedger.v1_id).where(
            MigrationLedger.source == source_id, MigrationLedger.v1_id.between(low, high)
        )
        with self.db.session_scope() as session:
            return set(session.scalars(stmt))

    def identity_candidates(self, v1_ids: list[int]) -> Iterator[tuple[str, int, datetime, Any]]:
        """(source, v1 id, created_at, prompt) of migrated rows with these v1 ids, any source."""
        stmt = (
            select(
                MigrationLedger.source,
                MigrationLedger.v1_id,
                RawCall.created_at,
                RawCall.request_json,
            )
            .join(RawCall, RawCall.id == MigrationLedger.raw_call_id)
            .where(MigrationLedger.v1_id.in_(v1_ids))
        )
        with self.db.session_scope() as session:
            rows = session.execute(stmt).all()
        for source_id, v1_id, created_at, request in rows:
            prompt = request.get("prompt") if isinstance(request, dict) else None
            yield source_id, v1_id, created_at, prompt

    def ledger_entries(self, source_id: str) -> Iterator[tuple[int, int]]:
        """(v1_id, raw_call_id) from the ledger, ascending, in keyset pages."""
        after = None
        while True:
            stmt = (
                select(MigrationLedger.v1_id, MigrationLedger.raw_call_id)
                .where(MigrationLedger.source == source_id)
                .order_by(MigrationLedger.v1_id)
                .limit(ID_PAGE)
            )
            if after is not None:
                stmt = stmt.where(MigrationLedger.v1_id > after)
            with self.db.session_scope() as session:
                rows = session.execute(stmt).all()
            if not rows:
                return
            yield from (tuple(r) for r in rows)
            after = rows[-1][0]

    # --- writes -----------------------------------------------------------------------------

    def write_chunk(self, source_id: str, chunk: list[ChunkRow]) -> tuple[int, int]:
        """raw_calls + ledger + batch memberships of one chunk, in one transaction. Returns
        (memberships added, existing positions moved)."""
        with self.db.session_scope() as session:
            call_ids = RawCallRepository(session).insert_raw_calls([raw for _, _, raw in chunk])
            now = utcnow()
            # Core executemany (not the ORM's bulk path): these rows need no ORM bookkeeping.
            session.connection().execute(
                insert(MigrationLedger.__table__),
                [
                    {
                        "source": source_id,
                        "v1_id": v1_id,
                        "raw_call_id": call_id,
                        "migrated_at": now,
                    }
                    for (v1_id, _, _), call_id in zip(chunk, call_ids, strict=True)
                ],
            )
            batched = [
                (batch, call_id, raw["created_at"], v1_id)
                for (v1_id, batch, raw), call_id in zip(chunk, call_ids, strict=True)
                if batch is not None
            ]
            moved = 0
            if batched:
                group_ids = _batch_group_ids(session, {b for b, *_ in batched}, source_id)
                moved = _add_batch_members(
                    session, source_id, [(group_ids[b], *rest) for b, *rest in batched]
                )
        return len(batched), moved

    # --- what the backfill checks read --------------------------------------------------------

    def tagged_rows(self, source_id: str, limit: int) -> tuple[int, list[tuple[int, Any]], int]:
        """(raw_calls tagged with this source, the first `limit` of them missing from the
        ledger as (call id, v1 id), how many are missing in all)."""
        with self.db.session_scope() as session:
            tagged = session.scalar(
                select(func.count()).select_from(RawCall).where(_tagged(source_id))
            )
            not_in_ledger = ~exists().where(MigrationLedger.raw_call_id == RawCall.id)
            strays = session.execute(
                select(RawCall.id, RawCall.metadata_json["v1_id"].as_integer())
                .where(_tagged(source_id), not_in_ledger)
                .order_by(RawCall.id)
                .limit(limit)
            ).all()
            in_ledger = session.scalar(
                select(func.count())
                .select_from(MigrationLedger)
                .join(RawCall, RawCall.id == MigrationLedger.raw_call_id)
                .where(MigrationLedger.source == source_id, _tagged(source_id))
            )
        return tagged, [tuple(s) for s in strays], tagged - in_ledger

    def _batch_stream(self, source_id: str, *aggregates) -> Iterator[tuple]:
        stmt = (
            select(Group.name, *aggregates)
            .join(GroupMember, GroupMember.group_id == Group.id)
            .join(MigrationLedger, MigrationLedger.raw_call_id == GroupMember.call_id)
            .join(RawCall, RawCall.id == GroupMember.call_id)
            .where(Group.group_type == BATCH_GROUP_TYPE, MigrationLedger.source == source_id)
            .group_by(Group.name)
            .order_by(bytewise(Group.name, self.db.dialect))
        )
        with self.db.engine.connect() as conn:
            yield from (tuple(r) for r in conn.execution_options(stream_results=True).execute(stmt))

    def batch_sizes(self, source_id: str) -> Iterator[tuple[str, int]]:
        """(batch name, migrated members) per batch group, in bytewise name order."""
        return self._batch_stream(source_id, func.count(GroupMember.id))

    def batch_time_ranges(self, source_id: str) -> Iterator[tuple[str, datetime, datetime]]:
        """(batch name, min created_at, max created_at) of migrated members, bytewise order."""
        return self._batch_stream(
            source_id, func.min(RawCall.created_at), func.max(RawCall.created_at)
        )

    def batch_member_v1_ids(self, source_id: str, batch_id: str) -> set[int]:
        stmt = (
            select(MigrationLedger.v1_id)
            .join(GroupMember, GroupMember.call_id == MigrationLedger.raw_call_id)
            .join(Group, Group.id == GroupMember.group_id)
            .where(
                Group.group_type == BATCH_GROUP_TYPE,
                Group.name == batch_id,
                MigrationLedger.source == source_id,
            )
        )
        with self.db.session_scope() as session:
            return set(session.scalars(stmt))

    def time_range(self, source_id: str) -> tuple[datetime | None, datetime | None]:
        """(min, max) created_at of every row migrated from this source."""
        stmt = (
            select(func.min(RawCall.created_at), func.max(RawCall.created_at))
            .join(MigrationLedger, MigrationLedger.raw_call_id == RawCall.id)
            .where(MigrationLedger.source == source_id)
        )
        with self.db.session_scope() as session:
            return tuple(session.execute(stmt).one())

    def migrated_calls(self, source_id: str, v1_ids: list[int]) -> dict[int, dict[str, Any]]:
        """v1 id -> its raw_call as a dict, for the v1 ids of this source in the ledger."""
        stmt = (
            select(MigrationLedger.v1_id, RawCall)
            .join(RawCall, RawCall.id == MigrationLedger.raw_call_id)
            .where(MigrationLedger.source == source_id, MigrationLedger.v1_id.in_(v1_ids))
        )
        with self.db.session_scope() as session:
            return {v1_id: call.to_dict() for v1_id, call in session.execute(stmt)}


# --- batch groups ---------------------------------------------------------------------------


def _batch_group_ids(session: Session, names: set[str], source_id: str) -> dict[str, int]:
    """Group id per v1 batch_id, creating the missing groups in one statement."""
    wanted = sorted(names)
    stmt = select(Group.name, Group.id).where(
        Group.group_type == BATCH_GROUP_TYPE, Group.name.in_(wanted)
    )
    found = dict(session.execute(stmt).all())
    missing = [n for n in wanted if n not in found]
    if missing:
        session.execute(
            insert_ignore(session, Group, ["group_type", "name"]),
            [
                {
                    "group_type": BATCH_GROUP_TYPE,
                    "name": name,
                    "description": f"v1 batch {name} (migrated)",
                    "metadata_json": {"migrated_from": "v1", "v1_source": source_id},
                    "created_at": utcnow(),
                }
                for name in missing
            ],
        )
        found.update(session.execute(stmt).all())
    return found


def _add_batch_members(
    session: Session, source_id: str, items: list[tuple[int, int, datetime, int]]
) -> int:
    """Add (group_id, call_id, created_at, v1_id) members, keeping every batch group's
    positions in (created_at, v1 id) order. Returns how many existing positions moved.

    Invariant: a group's last position holds its latest member. New members that sort after
    it are appended (the usual case, one INSERT for the chunk); a group that receives an
    earlier member (rows created out of id order across chunks, or a later run adding older
    rows) is renumbered, that group only. (`add_group_members` works one group at a time; a
    chunk can touch a thousand batches.)"""
    by_group: dict[int, list[tuple[datetime, int, int]]] = {}
    for group_id, call_id, created_at, v1_id in items:
        by_group.setdefault(group_id, []).append((created_at, v1_id, call_id))
    groups = sorted(by_group)
    last_position = dict(
        session.execute(
            select(GroupMember.group_id, func.max(GroupMember.position))
            .where(GroupMember.group_id.in_(groups))
            .group_by(GroupMember.group_id)
        ).all()
    )
    ledger, _ = _member_order(source_id)
    last_key = (
        {
            g: (created_at, v1_id if v1_id is not None else -1, call_id)
            for g, created_at, v1_id, call_id in session.execute(
                select(GroupMember.group_id, RawCall.created_at, MigrationLedger.v1_id, RawCall.id)
                .join(RawCall, RawCall.id == GroupMember.call_id)
                .outerjoin(MigrationLedger, ledger)
                .where(
                    tuple_(GroupMember.group_id, GroupMember.position).in_(
                        [(g, p) for g, p in last_position.items() if p is not None]
                    )
                )
            )
        }
        if last_position
        else {}
    )
    now = utcnow()
    rows, disordered = [], []
    for group_id in groups:
        members = sorted(by_group[group_id])
        position = last_position.get(group_id) or 0
        last = last_key.get(group_id)
        if last is not None and members[0] < last:
            disordered.append(group_id)
        for _, _, call_id in members:
            position += 1
            rows.append(
                {"group_id": group_id, "call_id": call_id, "position": position, "added_at": now}
            )
    session.connection().execute(insert(GroupMember.__table__), rows)
    return sum(_renumber(session, source_id, g) for g in disordered)


def _renumber(session: Session, source_id: str, group_id: int) -> int:
    ledger, order = _member_order(source_id)
    members = session.execute(
        select(GroupMember.id, GroupMember.position)
        .join(RawCall, RawCall.id == GroupMember.call_id)
        .outerjoin(MigrationLedger, ledger)
        .where(GroupMember.group_id == group_id)
        .order_by(*order)
    ).all()
    moves = [{"member": m, "position": i} for i, (m, p) in enumerate(members, 1) if p != i]
    if moves:
        table_ = GroupMember.__table__
        session.execute(
            update(table_)
            .where(table_.c.id == bindparam("member"))
            .values(position=bindparam("position")),
            moves,
        )
    return len(moves)
