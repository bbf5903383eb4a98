"""`chunk_writer`: what the v1 -> v2 migration writes, one chunk per transaction.

A chunk's raw_calls, their `migration_ledger` entries, their `batch` group memberships and its
quarantine changes commit together, so the ledger always says exactly what was written. Rows go
in through `BulkInsert` (multi-row INSERTs on SQLite, COPY on PostgreSQL) over one connection
held for the whole migration (on SQLite with bulk-load settings while it lasts).

Batch order: a group's last position always holds its latest member. New members that sort
after it are appended (the usual case, one insert for the chunk); a group that receives an
earlier member (rows created out of id order across chunks, or a later run adding older rows)
is renumbered, that group only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, select, tuple_, update
from sqlalchemy.engine import Connection

from .bulk_insert import BulkInsert
from .connection import DatabaseConnection
from .dialect import insert_ignore, insert_or_update
from .models_v2 import Group, GroupMember, MigrationLedger, MigrationQuarantine, RawCall
from .types import utcnow

BATCH_GROUP_TYPE = "batch"
# SQLite settings of the migration's connection while it writes (put back afterwards): a page
# cache that holds raw_calls' indexes, and a checkpoint (which syncs to disk) every ~64 MB of
# WAL instead of every 4 MB.
SQLITE_BULK_PRAGMAS = {"cache_size": -64 * 1024, "wal_autocheckpoint": 16384}

RAW_CALL_COLUMNS = (
    "provider",
    "model",
    "modality",
    "status",
    "request_json",
    "response_json",
    "latency_ms",
    "tokens_json",
    "metadata_json",
    "created_at",
)
_raw_call_values = itemgetter(*RAW_CALL_COLUMNS)
LEDGER_COLUMNS = ("source", "v1_id", "raw_call_id", "migrated_at")
MEMBER_COLUMNS = ("group_id", "call_id", "position", "added_at")

# One migrated row: (v1 id, batch_id or None, validated raw_calls row).
ChunkRow = tuple[int, str | None, dict[str, Any]]
# One skipped row: (v1 id, field, reason).
Quarantined = tuple[int, str, str]


class ChunkWriter:
    """Writes the chunks of one source over one connection (see `chunk_writer`)."""

    def __init__(self, conn: Connection, source_id: str):
        self.conn, self.source_id = conn, source_id

    def write(
        self,
        chunk: list[ChunkRow],
        quarantine: list[Quarantined] = (),
        released: list[int] = (),
    ) -> tuple[int, int]:
        """raw_calls + ledger + batch memberships of one chunk, in one transaction, with the
        rows this chunk skipped put in quarantine and the `released` v1 ids (migrated now)
        taken out of it. The raw_calls rows must be valid (`validate_raw_call`): they are
        written in bulk, not through `RawCallRepository`. Returns (memberships added, existing
        positions moved)."""
        conn, source_id = self.conn, self.source_id
        with conn.begin():
            _update_quarantine(conn, source_id, quarantine, released)
            if not chunk:
                return 0, 0
            call_ids = BulkInsert(conn, RawCall.__table__, RAW_CALL_COLUMNS).insert_returning_ids(
                [_raw_call_values(raw) for _, _, raw in chunk]
            )
            now = utcnow()
            BulkInsert(conn, MigrationLedger.__table__, LEDGER_COLUMNS).insert(
                [
                    (source_id, v1_id, call_id, now)
                    for (v1_id, _, _), call_id in zip(chunk, call_ids, strict=True)
                ]
            )
            by_batch: dict[str, list[tuple[datetime, int, int]]] = {}
            for (v1_id, batch, raw), call_id in zip(chunk, call_ids, strict=True):
                if batch is not None:
                    by_batch.setdefault(batch, []).append((raw["created_at"], v1_id, call_id))
            if not by_batch:
                return 0, 0
            group_ids = _batch_group_ids(conn, set(by_batch), source_id)
            members = {group_ids[batch]: items for batch, items in by_batch.items()}
            moved = _add_batch_members(conn, source_id, members)
        return sum(len(items) for items in by_batch.values()), moved


@contextmanager
def chunk_writer(db: DatabaseConnection, source_id: str) -> Iterator[ChunkWriter]:
    """A `ChunkWriter` for one migration run; its connection goes back when the block ends."""
    with db.engine.connect() as conn:
        previous = {}
        if db.dialect == "sqlite":
            for name, value in SQLITE_BULK_PRAGMAS.items():
                previous[name] = conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                conn.exec_driver_sql(f"PRAGMA {name}={int(value)}")
            conn.commit()
        try:
            yield ChunkWriter(conn, source_id)
        finally:
            if previous:
                conn.rollback()  # whatever a failed chunk left open
                for name, value in previous.items():
                    conn.exec_driver_sql(f"PRAGMA {name}={int(value)}")
                conn.commit()


def _update_quarantine(conn: Connection, source_id, quarantine, released) -> None:
    if released:
        conn.execute(
            delete(MigrationQuarantine).where(
                MigrationQuarantine.source == source_id,
                MigrationQuarantine.v1_id.in_(list(released)),
            )
        )
    if quarantine:
        now = utcnow()
        conn.execute(
            insert_or_update(
                conn,
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


def _batch_group_ids(conn: Connection, names: set[str], source_id: str) -> dict[str, int]:
    """Group id per v1 batch_id, creating the missing groups in one statement."""
    wanted = sorted(names)
    stmt = select(Group.name, Group.id).where(
        Group.group_type == BATCH_GROUP_TYPE, Group.name.in_(wanted)
    )
    found = dict(conn.execute(stmt).all())
    missing = [n for n in wanted if n not in found]
    if missing:
        now = utcnow()
        conn.execute(
            insert_ignore(conn, Group, ["group_type", "name"]),
            [
                {
                    "group_type": BATCH_GROUP_TYPE,
                    "name": name,
                    "description": f"v1 batch {name} (migrated)",
                    "metadata_json": {"migrated_from": "v1", "v1_source": source_id},
                    "created_at": now,
                }
                for name in missing
            ],
        )
        found.update(conn.execute(stmt).all())
    return found


def _member_order(source_id: str):
    """Sort key of batch members: created_at, then v1 id (as v1 listed a batch), then call id."""
    ledger = and_(MigrationLedger.raw_call_id == RawCall.id, MigrationLedger.source == source_id)
    return ledger, (RawCall.created_at, func.coalesce(MigrationLedger.v1_id, -1), RawCall.id)


def _add_batch_members(
    conn: Connection, source_id: str, by_group: dict[int, list[tuple[datetime, int, int]]]
) -> int:
    """Add members, given as group id -> [(created_at, v1_id, call_id)], in order (see the
    module docstring). Returns how many existing positions moved. (`add_group_members` works
    one group at a time; a chunk can touch thousands of batches.)"""
    groups = sorted(by_group)
    last_position = dict(
        conn.execute(
            select(GroupMember.group_id, func.max(GroupMember.position))
            .where(GroupMember.group_id.in_(groups))
            .group_by(GroupMember.group_id)
        ).all()
    )
    last_key = _last_members(conn, source_id, last_position)
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
            rows.append((group_id, call_id, position, now))
    BulkInsert(conn, GroupMember.__table__, MEMBER_COLUMNS).insert(rows)
    return sum(_renumber(conn, source_id, g) for g in disordered)


def _last_members(conn: Connection, source_id: str, last_position: dict) -> dict:
    """Group id -> sort key of the member at its last position."""
    at = [(g, p) for g, p in last_position.items() if p is not None]
    if not at:
        return {}
    ledger, _ = _member_order(source_id)
    stmt = (
        select(GroupMember.group_id, RawCall.created_at, MigrationLedger.v1_id, RawCall.id)
        .join(RawCall, RawCall.id == GroupMember.call_id)
        .outerjoin(MigrationLedger, ledger)
        .where(tuple_(GroupMember.group_id, GroupMember.position).in_(at))
    )
    return {
        g: (created_at, v1_id if v1_id is not None else -1, call_id)
        for g, created_at, v1_id, call_id in conn.execute(stmt)
    }


def _renumber(conn: Connection, source_id: str, group_id: int) -> int:
    ledger, order = _member_order(source_id)
    members = conn.execute(
        select(GroupMember.id, GroupMember.position)
        .join(RawCall, RawCall.id == GroupMember.call_id)
        .outerjoin(MigrationLedger, ledger)
        .where(GroupMember.group_id == group_id)
        .order_by(*order)
    ).all()
    moves = [{"member": m, "position": i} for i, (m, p) in enumerate(members, 1) if p != i]
    if moves:
        table_ = GroupMember.__table__
        conn.execute(
            update(table_)
            .where(table_.c.id == bindparam("member"))
            .values(position=bindparam("position")),
            moves,
        )
    return len(moves)
