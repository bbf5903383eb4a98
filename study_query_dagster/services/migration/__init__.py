"""The v1 -> v2 migration and its backfill validation (no Dagster).

The legacy table `inference_runs` (SQLite or PostgreSQL, opened read-only) is copied into
`raw_calls`, each v1 `batch_id` becoming a `batch` group ordered by created_at, with a ledger
that makes the copy idempotent and incremental; four checks compare the result with its source.

| Module | Job |
| --- | --- |
| `convert` | one v1 row -> its raw_calls row (and `UnmigratableRow`) |
| `source` | the legacy database's schema, statistics and source identity |
| `migrate` | the streaming, chunked, resumable copy, with its quarantine |
| `context` | what every check starts from |
| `checks` | row counts, batch sizes, batch order, quarantine |
| `compare` | row-by-row comparison by streamed chunk digests |
| `row_checks` | the row comparison pass and the timestamps and parity reports |
| `validate` | every check with one comparison pass; the two row checks alone |
| `report` | `ValidationReport` |

SQL lives in `db/legacy_reader.py` (the v1 side), `db/migration_ledger.py` (the v2 side as the
migration writes it) and `db/migrated_reader.py` (the v2 side as the checks read it).
"""

from ...db.legacy_reader import Legacy, LegacySource, legacy_label, opened
from ...db.migration_ledger import BATCH_GROUP_TYPE
from .checks import batch_order_matches, batch_sizes_match, no_rows_quarantined, row_counts_match
from .compare import sample_v1_ids as _sample_v1_ids
from .convert import UnmigratableRow, parse_v1_timestamp, restore_nonfinite, v1_row_to_raw_call
from .migrate import CHUNK_BYTES, CHUNK_ROWS, MigrationResult, migrate_v1_to_v2, pending_v1_rows
from .report import CHECKS, ValidationReport
from .source import check_legacy_schema, legacy_stats, resolve_source_id, source_fingerprint
from .validate import sample_parity, timestamps_match, validate_migration


def sample_v1_ids(legacy: Legacy, size: int | None, seed: int | None = None) -> list[int]:
    """A uniform random sample of v1 ids (reservoir sampling over the id scan: one pass,
    memory of `size` ids), ascending. `size=None` returns every id."""
    with opened(legacy) as source:
        return _sample_v1_ids(source, size, seed)


__all__ = [
    "BATCH_GROUP_TYPE",
    "CHECKS",
    "CHUNK_BYTES",
    "CHUNK_ROWS",
    "Legacy",
    "LegacySource",
    "MigrationResult",
    "ValidationReport",
    "UnmigratableRow",
    "batch_order_matches",
    "batch_sizes_match",
    "check_legacy_schema",
    "legacy_label",
    "legacy_stats",
    "migrate_v1_to_v2",
    "no_rows_quarantined",
    "opened",
    "parse_v1_timestamp",
    "pending_v1_rows",
    "resolve_source_id",
    "restore_nonfinite",
    "row_counts_match",
    "sample_parity",
    "sample_v1_ids",
    "source_fingerprint",
    "timestamps_match",
    "v1_row_to_raw_call",
    "validate_migration",
]
