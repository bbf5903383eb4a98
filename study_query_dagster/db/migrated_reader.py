"""`MigratedReader`: what the backfill checks read from the v2 side, through the ledger.

Per-source streams in the same key order as their v1 counterparts in `legacy_reader` (v1 id, or
batch name collated bytewise), so a check can merge the two without holding either in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import groupby
from typing import Any

from sqlalchemy import exists, func, select

from .connection import DatabaseConnection
from .legacy_reader import bytewise
from .migration_writer import BATCH_GROUP_TYPE, RAW_CALL_COLUMNS
from .models_v2 import Group, GroupMember, MigrationLedger, RawCall

# The raw_calls columns a migrated row is compared on: what the migration writes, and that it
# wrote no error.
COMPARED = (*RAW_CALL_COLUMNS, "error_json")


def _tagged(source_id: str):
    return RawCall.metadata_json["v1_source"].as_string() == source_id


class MigratedReader:
    """Read-only views of one source's migrated rows in a target database."""

    def __init__(self, db: DatabaseConnection):
        self.db = db

    def _stream(self, stmt) -> Iterator[tuple]:
        with self.db.engine.connect() as conn:
            yield from (tuple(r) for r in conn.execution_options(stream_results=True).execute(stmt))

    # --- rows -------------------------------------------------------------------------------

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

    def rows(
        self, source_id: str, *, ids: Iterable[int] | None = None, low=None, high=None
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """(v1 id, {column: value} of its raw_call) for the given v1 ids, or for every v1 id
        between `low` and `high`, ascending."""
        table = RawCall.__table__
        stmt = (
            select(MigrationLedger.v1_id, *(table.c[c] for c in COMPARED))
            .join(RawCall, RawCall.id == MigrationLedger.raw_call_id)
            .where(MigrationLedger.source == source_id)
            .order_by(MigrationLedger.v1_id)
        )
        if ids is not None:
            stmt = stmt.where(MigrationLedger.v1_id.in_(list(ids)))
        else:
            stmt = stmt.where(MigrationLedger.v1_id.between(low, high))
        for row in self._stream(stmt):
            yield row[0], dict(zip(COMPARED, row[1:], strict=True))

    def time_range(self, source_id: str) -> tuple[datetime | None, datetime | None]:
        """(min, max) created_at of every row migrated from this source."""
        stmt = (
            select(func.min(RawCall.created_at), func.max(RawCall.created_at))
            .join(MigrationLedger, MigrationLedger.raw_call_id == RawCall.id)
            .where(MigrationLedger.source == source_id)
        )
        with self.db.session_scope() as session:
            return tuple(session.execute(stmt).one())

    # --- batches ----------------------------------------------------------------------------

    def _members(self, source_id: str):
        return (
            select(Group.name)
            .join(GroupMember, GroupMember.group_id == Group.id)
            .join(MigrationLedger, MigrationLedger.raw_call_id == GroupMember.call_id)
            .where(Group.group_type == BATCH_GROUP_TYPE, MigrationLedger.source == source_id)
        )

    def _batch_stream(self, source_id: str, *aggregates) -> Iterator[tuple]:
        stmt = (
            self._members(source_id)
            .add_columns(*aggregates)
            .join(RawCall, RawCall.id == GroupMember.call_id)
            .group_by(Group.name)
            .order_by(bytewise(Group.name, self.db.dialect))
        )
        return self._stream(stmt)

    def batch_sizes(self, source_id: str) -> Iterator[tuple[str, int]]:
        """(batch name, migrated members) per batch group, in bytewise name order."""
        return self._batch_stream(source_id, func.count(GroupMember.id))

    def batch_time_ranges(self, source_id: str) -> Iterator[tuple[str, datetime, datetime]]:
        """(batch name, min created_at, max created_at) of migrated members, bytewise order."""
        return self._batch_stream(
            source_id, func.min(RawCall.created_at), func.max(RawCall.created_at)
        )

    def batch_orders(self, source_id: str) -> Iterator[tuple[str, list[int]]]:
        """(batch name, v1 ids of its members in position order), in bytewise name order."""
        stmt = (
            self._members(source_id)
            .add_columns(MigrationLedger.v1_id)
            .order_by(bytewise(Group.name, self.db.dialect), GroupMember.position, GroupMember.id)
        )
        for name, members in groupby(self._stream(stmt), key=lambda r: r[0]):
            yield name, [v1_id for _, v1_id in members]

    def batch_member_v1_ids(self, source_id: str, batch_id: str) -> set[int]:
        stmt = self._members(source_id).with_only_columns(MigrationLedger.v1_id)
        stmt = stmt.where(Group.name == batch_id)
        with self.db.session_scope() as session:
            return set(session.scalars(stmt))
