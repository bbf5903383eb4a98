"""The legacy database as the migration sees it: its schema and statistics, and what
identifies it as a source.

**What identifies a source.** Not its URL: a SQLite file that is moved, copied or reached
through another path must not be imported twice. A source is identified by its content: the
first v1 rows are looked up in the ledger (same v1 id, same created_at, same prompt); if a
source already migrated them, that source id is reused. Otherwise the new source id is "v1-" +
a hash of the first row (id, created_at, provider, prompt), so the same v1 database gets the
same id in any target. A v1 database whose first rows were deleted still resolves (its new
first rows are in the ledger). Two databases that share their first rows (copies that diverged)
would be taken for one; pass `source_id=` explicitly to keep them apart.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from ...db import DatabaseConnection
from ...db.legacy_reader import Legacy, LegacySource, opened
from ...db.migration_ledger import MigrationLedgerRepository
from .convert import parse_v1_timestamp

IDENTITY_ROWS = 8  # first v1 rows consulted to recognise an already migrated source


def check_legacy_schema(source: LegacySource) -> None:
    """Raise a clear error unless the source has the v1 table with the v1 columns."""
    source.check_schema()


def legacy_stats(legacy: Legacy) -> dict[str, Any]:
    """What an observation of the v1 database reports: row count, max id, newest created_at."""
    with opened(legacy) as source:
        source.check_schema()
        count, max_id, newest = source.stats()
    newest = parse_v1_timestamp(newest, "max") if newest is not None else None
    return {"row_count": count, "max_id": max_id, "max_created_at": newest}


def source_fingerprint(legacy: Legacy) -> str | None:
    """ "v1-" + a hash of the v1 row with the smallest id; None for an empty table."""
    with opened(legacy) as source:
        rows = source.first_rows(1)
    return _fingerprint(rows[0]) if rows else None


def _fingerprint(row) -> str:
    created = parse_v1_timestamp(row.created_at, row.id).isoformat()
    text = "\x1f".join([str(row.id), created, row.provider or "", row.prompt or ""])
    return "v1-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def resolve_source_id(legacy: Legacy, target: DatabaseConnection) -> str | None:
    """The ledger's id for this v1 database if it was migrated before (from any path or copy),
    else its fingerprint; None for an empty v1 table.

    Each of the first `IDENTITY_ROWS` v1 rows votes for the sources that migrated a row with
    the same v1 id, created_at and prompt; the source with most votes wins, so neither a
    deleted nor an edited first row changes the identity."""
    with opened(legacy) as source:
        rows = source.first_rows(IDENTITY_ROWS)
    if not rows:
        return None
    expected: dict[int, tuple[datetime, Any]] = {}
    for row in rows:
        try:
            expected[row.id] = (parse_v1_timestamp(row.created_at, row.id), row.prompt)
        except ValueError:
            continue  # a bad timestamp is reported by the migration itself
    votes: dict[str, int] = {}
    ledger = MigrationLedgerRepository(target)
    for source_id, v1_id, created_at, prompt in ledger.identity_candidates(list(expected)):
        if (created_at, prompt) == expected[v1_id]:
            votes[source_id] = votes.get(source_id, 0) + 1
    if not votes:
        return _fingerprint(rows[0])
    best = max(votes.values())
    winners = sorted(s for s, n in votes.items() if n == best)
    if len(winners) > 1:
        raise ValueError(
            f"legacy database matches several migrated sources {winners}; pass source_id explicitly"
        )
    return winners[0]


def resolve(source: LegacySource, target: DatabaseConnection, source_id: str | None):
    """An explicit source id (checked), else the resolved one."""
    if source_id is not None:
        if not source_id or len(source_id) > 64:
            raise ValueError(f"source_id must be 1 to 64 characters (got {source_id!r})")
        return source_id
    return resolve_source_id(source, target)


def start(source: LegacySource, target: DatabaseConnection, source_id: str | None):
    """Schema check, then the source id (None for an empty v1 table)."""
    source.check_schema()
    return resolve(source, target, source_id)
