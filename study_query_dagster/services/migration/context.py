"""What every backfill check starts from: the opened v1 source, its source id, the target's
ledger and migrated rows, and the v1 rows in quarantine (which the checks leave out)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ...db import DatabaseConnection
from ...db.legacy_reader import Legacy, LegacySource, opened
from ...db.migrated_reader import MigratedReader
from ...db.migration_ledger import MigrationLedgerRepository
from .source import start


@dataclass
class CheckContext:
    source: LegacySource
    source_id: str
    ledger: MigrationLedgerRepository
    reader: MigratedReader
    quarantined: dict[int, tuple[str, str]] = field(default_factory=dict)  # v1 id -> field, reason


@contextmanager
def checking(
    legacy: Legacy, target: DatabaseConnection, source_id: str | None
) -> Iterator[CheckContext | None]:
    """The context of a check, or None when the v1 table is empty (nothing to compare)."""
    with opened(legacy) as source:
        source_id = start(source, target, source_id)
        if source_id is None:
            yield None
            return
        ledger = MigrationLedgerRepository(target)
        yield CheckContext(
            source, source_id, ledger, MigratedReader(target), ledger.quarantined(source_id)
        )
