"""The v1 -> v2 migration and its backfill validation (no Dagster): the legacy `inference_runs`
table copied into `raw_calls` with a ledger that makes the copy idempotent and incremental, and
the checks that compare the result with its source. Its SQL is in `db/`."""

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
