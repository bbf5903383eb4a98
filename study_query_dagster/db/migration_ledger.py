"""`MigrationLedgerRepository`: the v2 side of the v1 -> v2 migration as it writes.

Writes one chunk of migrated rows (raw_calls, their `migration_ledger` entries, their `batch`
group memberships, and quarantine changes) in one transaction, and reads the ledger and the
quarantine: the ids a source already has, the rows that identify a source, and the v1 rows it
skipped. (What the backfill checks read is in `migrated_reader.py`.)
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, select, tuple_, update
from sqlalchemy.orm import Session

from . import RawCallRepository
from .connection import DatabaseConnection
from .legacy_reader import ID_PAGE
from .models_v2 import Group, GroupMember, MigrationLedger, MigrationQuarantine, RawCall
from .types import utcnow
from .upsert import insert_ignore, insert_or_update

BATCH_GROUP_TYPE = "batch"

# One migrated row: (v1 id, batch_id or None, validated raw_calls row).
ChunkRow = tuple[int, str | None, dict[str, Any]]
# One skipped row: (v1 id, field, reason).
Quarantined = tuple[int, str, str]


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

    def max_v1_id(self, source_id: str) -> int | None:
        stmt = select(func.max(MigrationLedger.v1_id)).where(MigrationLedger.source == source_id)
        with self.db.session_scope() as session:
            return session.scalar(stmt)

    def migrated_identity(self, source_id: str, v1_ids: list[int]) -> dict[int, tuple]:
        """v1 id -> (created_at, prompt) of the rows this source migrated with these ids."""
        stmt = (
            select(MigrationLedger.v1_id, RawCall.created_at, RawCall.request_json)
            .join(RawCall, RawCall.id == MigrationLedger.raw_call_id)
            .where(MigrationLedger.source == source_id, MigrationLedger.v1_id.in_(v1_ids))
        )
        with self.db.session_scope() as session:
            return {
                v1_id: (created_at, request.get("prompt") if isinstance(request, dict) else None)
                for v1_id, created_at, request in session.execute(stmt)
            }

    # --- quarantine -------------------------------------------------------------------------

    def quarantined(self, source_id: str) -> dict[int, tuple[str, str]]:
        """v1 id -> (field, reason) of every row of this source in quarantine."""
        stmt = (
            select(MigrationQuarantine.v1_id, MigrationQuarantine.field, MigrationQuarantine.reason)
            .where(MigrationQuarantine.source == source_id)
            .order_by(MigrationQuarantine.v1_id)
        )
        with self.db.session_scope() as session:
            return {v1_id: (field, reason) for v1_id, field, reason in session.execute(stmt)}

    # --- writes -----------------------------------------------------------------------------

    def write_chunk(
        self,
        source_id: str,
        chunk: list[ChunkRow],
        quarantine: list[Quarantined] = (),
        released: list[int] = (),
    ) -> tuple[int, int]:
        """raw_calls + ledger + batch memberships of one chunk, in one transaction, with the
        rows this chunk skipped put in quarantine and the `released` v1 ids (migrated now)
        taken out of it. Returns (memberships added, existing positions moved)."""
        with self.db.session_scope() as session:
            _update_quarantine(session, source_id, quarantine, released)
            if not chunk:
                return 0, 0
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


def _update_quarantine(session, source_id, quarantine, released) -> None:
    if released:
        session.execute(
            delete(MigrationQuarantine).where(
                MigrationQuarantine.source == source_id,
                MigrationQuarantine.v1_id.in_(list(released)),
            )
        )
    if quarantine:
        now = utcnow()
        session.execute(
            insert_or_update(
                session,
                MigrationQuarantine,
                ["source", "v1_id"],
                ["field", "reason", "quarantined_at"],
            ),
            [
                {
                    "source": source_id,
                    "v1_id": v1_id,
                    "field": field,
                    "reason": reason[:2000],
                    "quarantined_at": now,
                }
                for v1_id, field, reason in quarantine
            ],
        )


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
