"""`MigrationLedgerRepository`: the ledger and the quarantine of the v1 -> v2 migration.

Reads what the migration needs to know before it writes (the v1 ids a source already has, the
rows that identify a source, the v1 rows it skipped) and hands out the `chunk_writer` that
writes. (What the backfill checks read is in `migrated_reader.py`.)
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from .connection import DatabaseConnection
from .legacy_reader import ID_PAGE
from .migration_writer import BATCH_GROUP_TYPE, ChunkRow, Quarantined, chunk_writer
from .models_v2 import MigrationLedger, MigrationQuarantine, RawCall


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

    def writer(self, source_id: str):
        """A context manager giving the `ChunkWriter` of one migration run."""
        return chunk_writer(self.db, source_id)


__all__ = ["BATCH_GROUP_TYPE", "ChunkRow", "MigrationLedgerRepository", "Quarantined"]
