"""The legacy database as the migration sees it: its schema and statistics, and what
identifies it as a source.

**What identifies a source.** Not its URL: a SQLite file that is moved, copied or reached
through another path must not be imported twice. A source is identified by its content: the
first v1 rows are looked up in the ledger (same v1 id, same created_at, same prompt); if a
source already migrated them, that source id is reused. Otherwise the new source id is "v1-" +
a hash of the first row (id, created_at, provider, prompt), so the same v1 database gets the
same id in any target. A v1 database whose first rows were deleted still resolves (its new
first rows are in the ledger).

**Copies that diverged** (a file copied, after which both copies gained different rows under
the same ids) share their first rows but not their last ones: a database whose rows at the end
of a source's ledger mostly differ from what that source migrated is a new source (and all its
rows are migrated under the new id, the shared ones included, so each source is complete). The
first of two diverged copies migrated after the split keeps the original's id. A copy that
differs in only a few rows is not told apart this way (the backfill checks report those rows);
`source_id=` (also in the run config) names a source explicitly.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from ...db import DatabaseConnection
from ...db.legacy_reader import Legacy, LegacySource, opened
from ...db.migration_ledger import MigrationLedgerRepository
from .convert import NUL, REPLACEMENT, parse_v1_timestamp

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


def _fingerprint(row, diverged_at=None) -> str:
    parts = []
    for r in (row, diverged_at) if diverged_at is not None else (row,):
        created = parse_v1_timestamp(r.created_at, r.id).isoformat()
        parts += [str(r.id), created, r.provider or "", r.prompt or ""]
    return "v1-" + hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]


def resolve_source_id(legacy: Legacy, target: DatabaseConnection) -> str | None:
    """The ledger's id for this v1 database if it was migrated before (from any path or copy),
    else its fingerprint; None for an empty v1 table.

    Each of the first `IDENTITY_ROWS` v1 rows votes for the sources that migrated a row with
    the same v1 id, created_at and prompt, so neither a deleted nor an edited first row changes
    the identity. A candidate must also agree with this database at its end: if most of the
    last rows they share (same v1 id, up to `IDENTITY_ROWS`) differ, this database is a copy
    that diverged from that source and is not it. Of the candidates that agree, the one with
    most votes wins; a database that diverged from every candidate is a new source, its id a
    hash of its first row and of a row past the divergence."""
    with opened(legacy) as source:
        rows = source.first_rows(IDENTITY_ROWS)
        if not rows:
            return None
        ledger = MigrationLedgerRepository(target)
        votes = _votes(rows, ledger)
        if not votes:
            return _fingerprint(rows[0])
        diverged = {}
        for candidate in list(votes):
            past = _divergence(source, ledger, candidate)
            if past is not None:
                diverged[candidate] = past
                del votes[candidate]
        if not votes:
            return _fingerprint(rows[0], diverged[min(diverged)])
    best = max(votes.values())
    winners = sorted(s for s, n in votes.items() if n == best)
    if len(winners) > 1:
        raise ValueError(
            f"legacy database matches several migrated sources {winners}; pass source_id explicitly"
        )
    return winners[0]


def _identity(row) -> tuple[datetime, Any] | None:
    """(created_at, prompt as stored) of a v1 row, to compare with its migrated copy."""
    prompt = row.prompt.replace(NUL, REPLACEMENT) if isinstance(row.prompt, str) else row.prompt
    try:
        return parse_v1_timestamp(row.created_at, row.id), prompt
    except ValueError:
        return None  # a bad timestamp is reported by the migration itself


def _votes(rows, ledger: MigrationLedgerRepository) -> dict[str, int]:
    expected = {row.id: identity for row in rows if (identity := _identity(row)) is not None}
    votes: dict[str, int] = {}
    for source_id, v1_id, created_at, prompt in ledger.identity_candidates(list(expected)):
        if (created_at, prompt) == expected[v1_id]:
            votes[source_id] = votes.get(source_id, 0) + 1
    return votes


def _divergence(source: LegacySource, ledger: MigrationLedgerRepository, candidate: str):
    """The highest shared row that differs, if most of the last shared rows differ (the copy
    diverged from `candidate`); None when they agree (an older copy or the same database)."""
    high = ledger.max_v1_id(candidate)
    if high is None:
        return None
    ids = source.ids_at_or_below(high, IDENTITY_ROWS)
    migrated = ledger.migrated_identity(candidate, ids)
    shared = [row for row in source.rows(list(migrated)) if row.id in migrated]
    differ = [row for row in shared if _identity(row) != migrated[row.id]]
    if shared and len(differ) * 2 > len(shared):
        return max(differ, key=lambda row: row.id)
    return None


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
