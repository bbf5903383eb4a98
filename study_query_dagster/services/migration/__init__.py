"""The v1 -> v2 migration and its backfill validation (no Dagster).

The legacy table `inference_runs` (SQLite or PostgreSQL, opened read-only) is copied into
`raw_calls`, each v1 `batch_id` becoming a `batch` group ordered by created_at, with a ledger
that makes the copy idempotent and incremental; four checks compare the result with its source.

| Module | Job |
| --- | --- |
| `convert` | one v1 row -> its raw_calls row |
| `source` | the legacy database's schema, statistics and source identity |
| `migrate` | the streaming, chunked, resumable copy |
| `checks` | the four backfill checks |
| `report` | `ValidationReport` |

SQL lives in `db/legacy_reader.py` (the v1 side) and `db/migration_ledger.py` (the v2 side).
"""

from ...db.legacy_reader import Legacy, LegacySource, opened
from ...db.migration_ledger import BATCH_GROUP_TYPE
from .checks import (
    batch_sizes_match,
    row_counts_match,
    sample_parity,
    sample_v1_ids,
    timestamps_match,
    validate_migration,
)
from .convert import parse_v1_timestamp, v1_row_to_raw_call
from .migrate import CHUNK_BYTES, CHUNK_ROWS, MigrationResult, migrate_v1_to_v2, pending_v1_rows
from .report import CHECKS, ValidationReport
from .source import check_legacy_schema, legacy_stats, resolve_source_id, source_fingerprint

__all__ = [
    "BATCH_GROUP_TYPE",
    "CHECKS",
    "CHUNK_BYTES",
    "CHUNK_ROWS",
    "Legacy",
    "LegacySource",
    "MigrationResult",
    "ValidationReport",
    "batch_sizes_match",
    "check_legacy_schema",
    "legacy_stats",
    "migrate_v1_to_v2",
    "opened",
    "parse_v1_timestamp",
    "pending_v1_rows",
    "resolve_source_id",
    "row_counts_match",
    "sample_parity",
    "sample_v1_ids",
    "source_fingerprint",
    "timestamps_match",
    "v1_row_to_raw_call",
    "validate_migration",
]
